"""The one serving stack: every port cloudmeta listens on is served through :func:`serve`
(head gate, keep-alive bound, quiet errors), and both relays (process proxy -> agent,
agent -> metadata API) are :class:`Relay`. Core layer: imports config, logs, metrics and the
pure path rules of :mod:`cloudmeta.documents`, nothing of the services."""

from .gate import HEADER_TIMEOUT, Budget, HeadGate, Limits
from .quiet import KEEPALIVE_TIMEOUT, QuietHandler, QuietServer
from .relay import Relay, UpstreamError, is_forbidden_token_put, refuse_forwarded_token_put
from .replies import RETRY_AFTER, WireHead, WireResponse, http_date, plain, unavailable
from .serve import Handler, Listener, serve, tcp_sockets, unix_socket

__all__ = [
    "HEADER_TIMEOUT",
    "KEEPALIVE_TIMEOUT",
    "RETRY_AFTER",
    "Budget",
    "Handler",
    "HeadGate",
    "Limits",
    "Listener",
    "QuietHandler",
    "QuietServer",
    "Relay",
    "UpstreamError",
    "WireHead",
    "WireResponse",
    "http_date",
    "is_forbidden_token_put",
    "plain",
    "refuse_forwarded_token_put",
    "serve",
    "tcp_sockets",
    "unavailable",
    "unix_socket",
]
