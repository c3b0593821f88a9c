"""The live lab page: ``lab up`` serves it on 127.0.0.1 (nodes, networks, routers, instances,
their documents as they see them, the metadata path's requests/s and p99)."""

from cloudmeta.lab.web.server import DEFAULT_PORT, LabPage, start_page

__all__ = ["DEFAULT_PORT", "LabPage", "start_page"]
