"""The one exception of the Linux plumbing package."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["LinuxError"]


class LinuxError(Exception):
    """A namespace, link, command or process operation failed; the message says which and why.

    ``cmd`` and ``stderr`` are set when an external command failed.
    """

    def __init__(
        self,
        message: str,
        *,
        cmd: Sequence[str] | None = None,
        stderr: str = "",
        returncode: int | None = None,
    ) -> None:
        super().__init__(message)
        self.cmd = list(cmd) if cmd is not None else None
        self.stderr = stderr
        self.returncode = returncode
