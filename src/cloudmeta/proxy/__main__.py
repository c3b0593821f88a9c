"""``python -m cloudmeta.proxy``: what the manager starts in process mode.

Same options as ``cloudmeta ns-metadata-proxy``, but it imports only the proxy, not every
component's CLI: each process costs a few MB less, and there is one per namespace.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import uvloop

from cloudmeta.logs import setup_logging
from cloudmeta.proxy.binds import parse_bind
from cloudmeta.proxy.headers import ProxyTarget
from cloudmeta.proxy.process import LIMIT_OPTIONS, limits_from, run_ns_metadata_proxy
from cloudmeta.proxy.title import proxy_args, set_process_title


def main() -> None:
    parser = argparse.ArgumentParser(prog="ns-metadata-proxy")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--network_id")
    group.add_argument("--router_id")
    parser.add_argument("--bind", action="append", required=True, type=parse_bind)
    parser.add_argument("--metadata_proxy_socket", required=True)
    parser.add_argument("--debug", action="store_true")
    for option, name, kind in LIMIT_OPTIONS:
        parser.add_argument(option, dest=name, type=kind, default=None)
    args = parser.parse_args()
    limits = limits_from({name: getattr(args, name) for _, name, _ in LIMIT_OPTIONS})
    setup_logging(args.debug, "json")
    target = ProxyTarget(network_id=args.network_id, router_id=args.router_id)
    socket_path = Path(args.metadata_proxy_socket)
    set_process_title(proxy_args(target, args.bind, socket_path, debug=args.debug))
    uvloop.run(run_ns_metadata_proxy(target, args.bind, socket_path, limits))


if __name__ == "__main__":
    main()
