"""Typed async client of the admin API, and the change feed the agents follow."""

from cloudmeta.adminclient.client import AdminClient, AdminError, ChangesPage
from cloudmeta.adminclient.feed import ChangeBatch, follow_changes
from cloudmeta.adminclient.report import AgentReporter

__all__ = [
    "AdminClient",
    "AdminError",
    "AgentReporter",
    "ChangeBatch",
    "ChangesPage",
    "follow_changes",
]
