"""A small client of ``qemu-guest-agent`` (QGA) on its virtio-serial unix socket: run a command.

QGA speaks QMP-style JSON lines but without a greeting; a stale answer of an earlier client may
still sit in the channel, so every session starts with ``guest-sync`` and a fresh id and drops
everything before its echo (QEMU's documented way).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloudmeta.lab.errors import LabError

__all__ = ["ExecResult", "guest_exec", "guest_ping"]

_SUN_PATH_MAX = 107


@dataclass(frozen=True, slots=True)
class ExecResult:
    exitcode: int
    stdout: bytes
    stderr: bytes


class _Session:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def call(self, command: str, **arguments: Any) -> Any:
        message: dict[str, Any] = {"execute": command}
        if arguments:
            message["arguments"] = arguments
        self.writer.write(json.dumps(message).encode() + b"\n")
        await self.writer.drain()
        while True:
            line = await self.reader.readline()
            if not line:
                raise LabError("the guest agent closed the connection")
            try:
                answer = json.loads(line)
            except ValueError:
                continue
            if "error" in answer:
                raise LabError(f"guest agent: {command}: {answer['error'].get('desc', answer)}")
            if "return" in answer:
                return answer["return"]

    async def sync(self) -> None:
        ident = secrets.randbelow(2**31)
        # A 0xFF byte resets the agent's parser after a half-written request of someone else.
        self.writer.write(b"\xff")
        message = {"execute": "guest-sync", "arguments": {"id": ident}}
        self.writer.write(json.dumps(message).encode() + b"\n")
        await self.writer.drain()
        while True:
            line = await self.reader.readline()
            if not line:
                raise LabError("the guest agent closed the connection")
            try:
                if json.loads(line.lstrip(b"\xff")).get("return") == ident:
                    return
            except (ValueError, AttributeError):
                continue


async def _open(socket_path: Path) -> _Session:
    path = str(socket_path)
    dir_fd: int | None = None
    if len(path) > _SUN_PATH_MAX:  # a deep state dir: reach the socket through an open dir
        dir_fd = os.open(socket_path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        path = f"/proc/self/fd/{dir_fd}/{socket_path.name}"
    try:
        reader, writer = await asyncio.open_unix_connection(path, limit=2**24)
    except OSError as exc:
        raise LabError(f"no guest agent at {socket_path}: {exc}") from exc
    finally:
        if dir_fd is not None:
            os.close(dir_fd)
    return _Session(reader, writer)


async def guest_ping(socket_path: Path, timeout: float = 5.0) -> bool:  # noqa: ASYNC109
    """Whether the guest agent answers (it starts late in the guest's boot)."""
    try:
        async with asyncio.timeout(timeout):
            session = await _open(socket_path)
            try:
                await session.sync()
                await session.call("guest-ping")
            finally:
                session.writer.close()
    except (LabError, TimeoutError, OSError):
        return False
    return True


async def guest_exec(
    socket_path: Path,
    argv: Sequence[str],
    *,
    timeout: float = 60.0,  # noqa: ASYNC109
    stdin: bytes | None = None,
) -> ExecResult:
    """Run ``argv`` in the guest (PATH searched) and return its exit code and output."""
    if not argv:
        raise LabError("no command to run in the guest")
    async with asyncio.timeout(timeout):
        session = await _open(socket_path)
        try:
            await session.sync()
            args: dict[str, Any] = {
                "path": argv[0],
                "arg": list(argv[1:]),
                "capture-output": True,
            }
            if stdin is not None:
                args["input-data"] = base64.b64encode(stdin).decode()
            started = await session.call("guest-exec", **args)
            pid = int(started["pid"])
            delay = 0.05
            while True:
                status = await session.call("guest-exec-status", pid=pid)
                if status.get("exited"):
                    break
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)
        finally:
            session.writer.close()
    code = status.get("exitcode")
    if code is None:  # killed by a signal
        code = 128 + int(status.get("signal", 0))
    return ExecResult(
        exitcode=int(code),
        stdout=base64.b64decode(status.get("out-data", "")),
        stderr=base64.b64decode(status.get("err-data", "")),
    )
