"""The metadata HTTP app (nova-api-metadata): identity, tokens, cache, routing, password.

One catch-all route; each request does a header check (an HMAC only the first time a pair is
seen), one dict lookup for the instance and one for the rendered bytes. The inventory is read
only on a cache miss. Before answering, a request makes sure the cache reflects every change
committed on this host (:class:`~.cache.SyncedInstanceCache`: one token compare when nothing
changed), so a write acknowledged by the admin API is seen by the next request of every
metadata worker. Writes from other hosts (a shared PostgreSQL) arrive through the change feed
within its poll interval (0.5 s).

Every document answer carries an ``ETag`` (a BLAKE2b of its bytes, computed once per cached
response); ``If-None-Match`` answers 304. ``meta_data.json`` differs per answer only by its
``random_seed`` (fresh per request, as Nova's): its ETag is over the document without the seed
and is therefore weak (``W/"..."``, RFC 9110 8.8.1: the answers are equivalent, not
byte-identical). GCE's change long-poll, ``?wait_for_change=true&last_etag=E&timeout_sec=S``
(:mod:`cloudmeta.http.longpoll`), holds the request until the document's ETag differs from E
(without E: from the one at arrival), woken by the cache invalidation that drops the
instance's entry, or until S seconds pass (then the unchanged document, same ETag). At most
:data:`MAX_WAITS_PER_INSTANCE` wait per instance (more: 429); they hold their connections,
which count against the proxies' connection caps like any other. At shutdown every waiter
answers at once with the current document.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from cloudmeta.config import Config, IdentityMode, TokenPolicy
from cloudmeta.documents import TEXT, Body, Seeded, Settings, Special, path_tokens, resolve
from cloudmeta.documents import root_listing as _root_listing
from cloudmeta.documents.openstack import dump, vendor_data2
from cloudmeta.documents.paths import JSON
from cloudmeta.http import QuietServer, WireHead  # short 400s, bounded keep-alive; cached heads
from cloudmeta.http.longpoll import LongPollError, requested_wait
from cloudmeta.logs import get_logger, throttled_logger
from cloudmeta.metrics import instrument
from cloudmeta.statefiles import shared_secret

from .cache import Entry, SyncedInstanceCache
from .errors import MetadataError
from .identity import Caller, SignatureCheck, signed_caller
from .seed import SeedPool
from .signing import IdentitySigner
from .source import MetadataSource
from .tokens import TOKEN_HEADER, TTL_HEADER, TokenAuthority, parse_ttl
from .vendordata import DynamicVendordata, load_static

__all__ = ["MetadataService", "serving"]

_log = get_logger("api")
MAX_PATH = 1024
MAX_PASSWORD = 1020  # Nova: 4 chunks of 255 characters
MAX_HEADERS = 64
_ROOT = "root"
_TOKEN = "token"
_DATA = "data"
_READ = ("GET", "HEAD")
_MISSING = object()
# Concurrent change long-polls per instance (GCE documents no number; 429 beyond it).
MAX_WAITS_PER_INSTANCE = 8
_UNKNOWN = "An unknown error has occurred. Please try your request again."
_HANDLER_ARGS: dict[str, Any] = {
    "max_field_size": 8190,
    "max_line_size": 8190,
    "max_headers": MAX_HEADERS,
}


@functools.lru_cache(maxsize=4096)
def _kind(path: str) -> str:
    """Which handler a path needs (memoised: normalising is the costliest step of a hit)."""
    tokens = path_tokens(path)
    if tokens == ["ec2"]:
        return _ROOT
    return _TOKEN if tokens == ["ec2", "latest", "api", "token"] else _DATA


@functools.cache
def _content_headers(content_type: str) -> CIMultiDict[str]:
    return CIMultiDict({"Content-Type": content_type})


@functools.cache
def _root_headers() -> CIMultiDict[str]:
    body = _root_listing()
    return CIMultiDict({"Content-Type": body.content_type, "ETag": etag_of(body)})


def _response(
    body: bytes, content_type: str, headers: dict[str, str] | None = None
) -> web.Response:
    if not headers:  # the hot path: the Response copies a prebuilt header map (C code)
        return web.Response(body=body, headers=_content_headers(content_type))
    return web.Response(body=body, headers={"Content-Type": content_type, **headers})


def etag_of(doc: Body | Seeded) -> str:
    """A strong ETag of a body's bytes; a weak one for a seeded body (over it without seed)."""
    if isinstance(doc, Seeded):
        digest = hashlib.blake2b(doc.head, digest_size=16)
        digest.update(b"\0random_seed\0")
        digest.update(doc.tail)
        return f'W/"{digest.hexdigest()}"'
    return f'"{hashlib.blake2b(doc.data, digest_size=16).hexdigest()}"'


def _opaque(tag: str) -> str:
    """An entity tag for weak comparison: no ``W/``, no quotes (GCE's last_etag is bare)."""
    tag = tag.strip()
    return tag.removeprefix("W/").strip('"')


def none_match(header: str | None, etag: str) -> bool:
    """Does ``If-None-Match`` name ``etag`` (weak comparison, RFC 9110 13.1.2)?"""
    if header is None:
        return False
    if header.strip() == "*":
        return True
    wanted = _opaque(etag)
    return any(_opaque(tag) == wanted for tag in header.split(","))


def _error(exc: MetadataError) -> web.Response:
    phrase = HTTPStatus(exc.status).phrase
    body = (
        f"{exc.status} {phrase}\n\n{exc.message}\n" if exc.message else f"{exc.status} {phrase}\n"
    )
    headers = {"Content-Type": TEXT, **exc.headers}
    return web.Response(status=exc.status, body=body.encode(), headers=headers)


def _not_allowed(allow: str) -> MetadataError:
    return MetadataError(405, f"Use {allow}.", {"Allow": allow})


class MetadataService:
    """The request handler and its state (cache, keys, change-feed follower)."""

    def __init__(self, config: Config, source: MetadataSource) -> None:
        api = config.api
        self._source = source
        self._check = SignatureCheck(shared_secret(config).encode())
        self._signed = api.identity is IdentityMode.SIGNED
        self._tokens_required = api.http_tokens is TokenPolicy.REQUIRED
        self.cache = SyncedInstanceCache(source, api.metadata_cache_expiration)
        self._settings = Settings(
            dhcp_domain=api.dhcp_domain,
            vendordata_providers=tuple(api.vendordata_providers),
            static_vendordata=load_static(api.vendordata_jsonfile_path),
        )
        self._dynamic = DynamicVendordata(
            api.vendordata_dynamic_targets,
            api.vendordata_dynamic_connect_timeout,
            api.vendordata_dynamic_read_timeout,
        )
        self._tokens = TokenAuthority.from_state(config.state_path)
        self._signer = IdentitySigner.from_state(config.state_path)
        self._waits: dict[str, int] = {}  # long-polls in progress by instance id
        self._seeds = SeedPool()
        self._log = throttled_logger("api")  # the request paths' lines: a caller drives them

    # -- life cycle ----------------------------------------------------------------------

    async def start(self, _: web.Application | None = None) -> None:
        await self.cache.start()

    def release_waiters(self) -> None:
        """Shutdown begins: long-polls answer now (before the server's grace runs out)."""
        self.cache.release_waiters()

    async def stop(self, _: web.Application | None = None) -> None:
        await self.cache.stop()
        await self._dynamic.close()

    # -- requests ------------------------------------------------------------------------

    async def handle(
        self, request: web.BaseRequest, handed: Caller | None = None
    ) -> web.StreamResponse:
        """Answer ``request``; ``handed`` is the identity the metadata agent of this process
        found (all-in-one, :data:`~cloudmeta.signing.LocalMetadataApi`), which then stands in
        for the signed headers (the request's own identity headers are not read)."""
        try:
            return await self._handle(request, handed)
        except MetadataError as exc:
            return _error(exc)
        except Exception:
            self._log.exception("metadata request failed", path=request.path[:MAX_PATH])
            return _error(MetadataError(500, _UNKNOWN))

    async def _handle(self, request: web.BaseRequest, handed: Caller | None) -> web.StreamResponse:
        if len(request.raw_path) > MAX_PATH:
            raise MetadataError(400, f"The request path is longer than {MAX_PATH} bytes.")
        method = request.method
        path = request.path
        kind = _kind(path)
        if kind is _ROOT:
            if method not in _READ:
                raise _not_allowed("GET, HEAD")
            body = _root_listing()
            return web.Response(body=body.data, headers=_root_headers())
        if not self.cache.current():
            await self.cache.sync()
        caller, entry = await self._identify(request, handed)
        instance_id = entry.instance.id
        if kind is _TOKEN:
            if method != "PUT":
                raise _not_allowed("PUT")
            ttl = parse_ttl(request.headers.get(TTL_HEADER))
            issued = self._tokens.issue(instance_id, ttl)
            return _response(issued.encode(), TEXT, {TTL_HEADER: str(ttl)})
        token = request.headers.get(TOKEN_HEADER)
        if token is not None:
            self._tokens.check(token, instance_id)
        elif self._tokens_required or entry.tokens_required:
            raise MetadataError(
                401,
                f"A session token is required: PUT /latest/api/token, then send {TOKEN_HEADER}.",
            )
        address = caller.address
        resolved, key = self._resolve(entry, path, address)
        if resolved is Special.PASSWORD and method not in _READ:
            return await self._password(request, entry)
        if method not in _READ:
            raise _not_allowed("GET, HEAD")
        wait = None
        if "wait_for_change" in request.query_string:  # parse the query only then
            try:
                wait = requested_wait(request.query)
            except LongPollError as exc:
                raise MetadataError(400, str(exc)) from None
        head = entry.etags.get(key)
        if head is not None and isinstance(resolved, Body | Seeded):
            doc: Body | Seeded = resolved  # the hot path: rendered, head serialised
        else:
            doc, head = await self._document(entry, resolved, key, path, address)
        if wait is not None:
            # Without last_etag, the baseline is the document as the request found it.
            last = wait.last_etag or head.headers["ETag"]
            doc, head = await self._long_poll(instance_id, path, address, last, wait.timeout)
        if "If-None-Match" in request.headers:
            etag = head.headers["ETag"]
            if none_match(request.headers["If-None-Match"], etag):
                return web.Response(status=304, headers={"ETag": etag})
        if isinstance(doc, Seeded):
            return head.reply(request, doc.render(self._seeds.next()))
        return head.reply(request, doc.data)

    def _resolve(self, entry: Entry, path: str, address: str | None) -> tuple[object, object]:
        """The remembered (or newly resolved) answer for ``path``, and its key in the entry."""
        key = path if entry.has_v4 else (path, address)
        resolved = entry.responses.get(key, _MISSING)
        if resolved is _MISSING:
            today = datetime.now(UTC).strftime("%Y-%m-%d")
            resolved = resolve(entry.instance, path, self._settings, address, today)
            entry.remember(key, resolved)
        if resolved is None:
            raise MetadataError(404, "The resource could not be found.")
        return resolved, key

    async def _document(
        self, entry: Entry, resolved: object, key: object, path: str, address: str | None
    ) -> tuple[Body | Seeded, WireHead]:
        """The document to answer and its head (with its ETag, cached beside it)."""
        if isinstance(resolved, Body | Seeded):
            doc: Body | Seeded = resolved
        elif resolved is Special.PASSWORD:
            doc = Body((entry.instance.password or "").encode(), TEXT)
        else:
            doc = await self._special(entry, resolved, path, address)
            if key in entry.responses:
                entry.responses[key] = doc
        head = entry.etags.get(key)
        if head is None:
            head = WireHead({"Content-Type": doc.content_type, "ETag": etag_of(doc)})
            if key in entry.responses:
                entry.etags[key] = head
        return doc, head

    async def _long_poll(
        self,
        instance_id: str,
        path: str,
        address: str | None,
        last_etag: str,
        timeout: float,  # noqa: ASYNC109 - the wait the request asked for
    ) -> tuple[Body | Seeded, WireHead]:
        """GCE's wait_for_change: the document once its ETag differs from the last one."""
        count = self._waits.get(instance_id, 0)
        if count >= MAX_WAITS_PER_INSTANCE:
            raise MetadataError(
                429,
                f"At most {MAX_WAITS_PER_INSTANCE} wait_for_change requests may wait per "
                "instance; retry when one has answered.",
                {"Retry-After": "1"},
            )
        self._waits[instance_id] = count + 1
        try:
            deadline = time.monotonic() + timeout
            last = _opaque(last_etag)
            while True:
                if not self.cache.current():
                    await self.cache.sync()
                # Read before the entry: a change applied while it loads shows as a new one.
                generation = self.cache.generation
                entry = await self.cache.entry(instance_id)
                if entry is None:  # the server is gone
                    raise MetadataError(404, "The resource could not be found.")
                resolved, key = self._resolve(entry, path, address)
                doc, head = await self._document(entry, resolved, key, path, address)
                if _opaque(head.headers["ETag"]) != last:
                    return doc, head
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.cache.stopping:
                    return doc, head
                await self.cache.wait_change(instance_id, entry, generation, remaining)
        finally:
            left = self._waits[instance_id] - 1
            if left:
                self._waits[instance_id] = left
            else:
                del self._waits[instance_id]

    async def _identify(
        self, request: web.BaseRequest, handed: Caller | None
    ) -> tuple[Caller, Entry]:
        if self._signed:
            caller = handed or signed_caller(request.headers, self._check)
            entry = self.cache.cached(caller.instance_id) or await self.cache.entry(
                caller.instance_id
            )
            if entry is None:
                raise MetadataError(404, "The resource could not be found.")
            if entry.instance.project_id != caller.tenant_id:
                self._log.warning(
                    "tenant id does not match the instance's project",
                    instance_id=caller.instance_id,
                    tenant_id=caller.tenant_id,
                    address=caller.address,
                )
                raise MetadataError(404, "The resource could not be found.")
            return caller, entry
        address = (handed.address if handed is not None else request.remote) or ""
        ids = await self.cache.addresses(address)
        if len(ids) != 1:
            self._log.warning(
                "no single instance holds the caller's address", address=address, found=ids
            )
            raise MetadataError(404, "The resource could not be found.")
        entry = await self.cache.entry(ids[0])
        if entry is None:
            raise MetadataError(404, "The resource could not be found.")
        return Caller(ids[0], entry.instance.project_id, address), entry

    async def _special(self, entry: Entry, special: object, path: str, address: str | None) -> Body:
        if special is Special.VENDOR_DATA2:
            dynamic = await self._dynamic.fetch(entry.instance)
            data, dropped = vendor_data2(self._settings, dynamic)
            if dropped:
                _log.warning("duplicate vendordata keys removed", keys=dropped)
            return Body(dump(data), JSON)
        # The document beside the signature, from normalised tokens: ".../signature/" and
        # "...//pkcs7" name the same document as ".../signature".
        doc_path = "/".join([*path_tokens(path)[:-1], "document"])
        today = datetime.now(UTC).strftime("%Y-%m-%d")
        found = resolve(entry.instance, doc_path, self._settings, address, today)
        if not isinstance(found, Body):
            raise MetadataError(404, "The resource could not be found.")
        document = found.data
        if special is Special.IDENTITY_SIGNATURE:
            return Body(self._signer.signature(document))
        return Body(self._signer.pkcs7(document))

    async def _password(self, request: web.BaseRequest, entry: Entry) -> web.StreamResponse:
        if request.method != "POST":  # reads are documents (ETag, long-poll) in _handle
            raise _not_allowed("GET, HEAD, POST")
        if entry.instance.password:
            raise MetadataError(409, "A password is already set for this instance.")
        length = request.content_length
        if length is not None and length > MAX_PASSWORD:
            raise MetadataError(400, "Request is too large.")
        body = await request.content.read(MAX_PASSWORD + 1)
        if len(body) > MAX_PASSWORD:
            raise MetadataError(400, "Request is too large.")
        try:
            password = body.decode()
        except UnicodeDecodeError:
            raise MetadataError(400, "The password must be UTF-8 text.") from None
        if password:
            if not await self._source.set_password_once(entry.instance.id, password):
                raise MetadataError(409, "A password is already set for this instance.")
            self.cache.discard(entry.instance.id)
        return web.Response(body=b"", headers={"Content-Type": TEXT})


@contextlib.asynccontextmanager
async def serving(config: Config, source: MetadataSource) -> AsyncIterator[QuietServer]:
    """The service as aiohttp's low-level server, started and stopped around the block.

    What ``cloudmeta api`` serves (and every test): with one route there is nothing for a
    router, middlewares or application signals to do, and skipping them is a fifth of a request.
    """
    service = MetadataService(config, source)
    await service.start()
    try:
        yield QuietServer(
            instrument(service.handle, "api", "", config.metrics_enabled),
            keepalive_timeout=config.metadata_proxy_keepalive_timeout,
            on_shutdown=service.release_waiters,
            **_HANDLER_ARGS,
        )
    finally:
        await service.stop()
