"""Hypothesis over what a client controls: raw request lines, paths, query strings, headers and
bodies against the metadata API (a real server on loopback), and header sets against the
proxies' pure header rules. No 5xx a client caused, no stack trace, no other instance's data.

atheris is not used: it has no wheel for this Python and needs a clang toolchain to build; the
pure parsers (document paths, tokens, TTLs) are fuzzed with hypothesis instead.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from metadata_cloud import SECRET, build_cloud, signed

from cloudmeta.api.metadata.errors import MetadataError
from cloudmeta.api.metadata.tokens import TokenAuthority, parse_ttl
from cloudmeta.config import Config
from cloudmeta.documents import path_tokens
from cloudmeta.inventory import Store
from cloudmeta.proxy.headers import (
    SPOOFABLE_PREFIXES,
    ProxyTarget,
    clean_headers,
    is_forbidden_token_put,
)
from support.report import record, scaled
from support.serving import shipped

pytestmark = pytest.mark.soak

CASES = scaled(300, 40_000)
PURE_CASES = scaled(500, 30_000)
FUZZ = settings(
    max_examples=CASES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)

_SEGMENTS = st.sampled_from(
    [
        "openstack",
        "latest",
        "2013-04-04",
        "meta_data.json",
        "user_data",
        "password",
        "..",
        ".",
        "",
        "meta-data",
        "instance-id",
        "public-keys",
        "0",
        "openssh-key",
        "api",
        "token",
        "ec2",
        "network_data.json",
        "vendor_data2.json",
        "identity",
        "document",
        "%2e%2e",
        "%00",
        "~",
    ]
)
_PATHS = st.one_of(
    st.lists(_SEGMENTS, max_size=8).map(lambda parts: "/" + "/".join(parts)),
    st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=200).map(
        lambda s: "/" + s.replace(" ", "")
    ),
)
_QUERY = st.one_of(
    st.just(""),
    st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=60).map(lambda q: "?" + q),
)
_TOKEN = st.text(
    st.characters(min_codepoint=33, max_codepoint=126, exclude_characters=":"),
    min_size=1,
    max_size=30,
)
_VALUE = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=100)
_METHODS = st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "G\tET"])


class Server:
    """The metadata API over metadata_cloud's small cloud, in a thread with its own loop."""

    def __init__(self, state: Path) -> None:
        self.config = Config(
            state_path=state, metadata_proxy_shared_secret=SECRET, log_format="json"
        )
        self.port = 0
        self.servers: dict[str, str] = {}
        self.project = ""
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._run(),))

    async def _run(self) -> None:
        store = await Store.open(self.config)
        try:
            cloud = await build_cloud(store)
            self.servers, self.project = cloud.servers, cloud.project
            async with shipped(self.config, store, "metadata") as self.port:
                self._stop = asyncio.Event()
                self._ready.set()
                await self._stop.wait()
        finally:
            await store.close()

    def __enter__(self) -> Server:
        self._thread.start()
        assert self._ready.wait(30), "metadata API did not start"
        return self

    def __exit__(self, *_: object) -> None:
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def send(self, raw: bytes, half_close: bool = False) -> tuple[int, bytes]:
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            sock.sendall(raw)
            if half_close:  # a head cut short is all there is
                sock.shutdown(socket.SHUT_WR)
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        return int(head.split(b" ", 2)[1]), body


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with Server(tmp_path_factory.mktemp("cmt-fuzz")) as running:
        yield running


def _check(server: Server, raw: bytes, stats: dict[str, int], half_close: bool = False) -> None:
    status, body = server.send(raw, half_close)
    stats["cases"] += 1
    assert status < 500, (raw, status, body)
    assert b"Traceback" not in body, body
    for name, instance in server.servers.items():
        if name != "a0":
            assert instance.encode() not in body, (raw, body)


def _request(method: str, target: str, headers: list[tuple[str, str]], body: bytes) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: 169.254.169.254", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace") + body


def test_fuzz_metadata_api(server: Server) -> None:
    stats = {"cases": 0}
    identity = signed(server.servers["a0"], server.project)

    @FUZZ
    @given(
        method=_METHODS,
        path=_PATHS,
        query=_QUERY,
        extra=st.lists(st.tuples(_TOKEN, _VALUE), max_size=6),
        body=st.binary(max_size=1500),
        keep_identity=st.booleans(),
    )
    def case(
        method: str,
        path: str,
        query: str,
        extra: list[tuple[str, str]],
        body: bytes,
        keep_identity: bool,
    ) -> None:
        headers = list(identity.items()) if keep_identity else []
        _check(server, _request(method, path + query, headers + extra, body), stats)

    case()
    record("fuzz", "metadata-api-http", cases=stats["cases"], crashes=0, server_errors=0)


def test_fuzz_metadata_api_raw_bytes(server: Server) -> None:
    """Garbage request heads: the parser answers 4xx (or closes), never 5xx."""
    stats = {"cases": 0}

    @FUZZ
    @given(head=st.binary(max_size=300))
    def case(head: bytes) -> None:
        raw = head.replace(b"\r\n\r\n", b"") + b"\r\n\r\n"
        try:
            _check(server, raw, stats, half_close=True)
        except (IndexError, ValueError):  # closed without an answer: fine
            stats["cases"] += 1

    case()
    record("fuzz", "metadata-api-raw", cases=stats["cases"], crashes=0, server_errors=0)


def test_fuzz_proxy_header_rules() -> None:
    """Whatever the caller sends, what leaves a proxy names exactly its own network and peer."""
    target = ProxyTarget(network_id="cmt-net")
    stats = {"cases": 0}

    @settings(max_examples=PURE_CASES, deadline=None, database=None)
    @given(
        headers=st.lists(
            st.tuples(
                st.one_of(
                    _TOKEN,
                    st.sampled_from(
                        [
                            "X-Forwarded-For",
                            "x-neutron-router-id",
                            "X-INSTANCE-ID-Signature",
                            "X-Tenant-Id",
                        ]
                    ),
                ),
                _VALUE,
            ),
            max_size=10,
        ),
        method=_METHODS,
        path=_PATHS,
    )
    def case(headers: list[tuple[str, str]], method: str, path: str) -> None:
        stats["cases"] += 1
        out = clean_headers(headers, "192.0.2.10", target)
        spoofable = [k for k in out if k.lower().startswith(SPOOFABLE_PREFIXES)]
        assert sorted(k.lower() for k in spoofable) == ["x-forwarded-for", "x-neutron-network-id"]
        assert out.getall("X-Forwarded-For") == ["192.0.2.10"]
        assert out.getall("X-Neutron-Network-ID") == ["cmt-net"]
        is_forbidden_token_put(method, path, headers)

    case()
    record("fuzz", "proxy-header-rules", cases=stats["cases"], crashes=0)


def test_fuzz_pure_parsers() -> None:
    """Path tokens, TTLs and tokens: only the component's own error, never another one."""
    tokens = TokenAuthority(b"cmt-key")
    stats = {"cases": 0}

    @settings(max_examples=PURE_CASES, deadline=None, database=None)
    @given(path=st.one_of(_PATHS, st.text(max_size=300)), value=st.text(max_size=80))
    def case(path: str, value: str) -> None:
        stats["cases"] += 1
        assert all("/" not in t for t in path_tokens(path))
        for call in (lambda: parse_ttl(value), lambda: tokens.check(value, "cmt-i")):
            try:
                call()
            except MetadataError as exc:
                assert 400 <= exc.status < 500

    case()
    record("fuzz", "pure-parsers", cases=stats["cases"], crashes=0)
