"""Pieces shared by the security and fault suites (report, counts)."""
