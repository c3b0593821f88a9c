"""The multi-node lab (``lab up --network-nodes N --compute-nodes M``): a controller, network
and compute nodes on one machine, tenant networks as VXLAN over an underlay of ours.

:mod:`.topology` is the shape (pure), :mod:`.fabric` the wires, :mod:`.hosts` the processes.
"""

from cloudmeta.lab.nodes.fabric import build_underlay, ensure_overlay
from cloudmeta.lab.nodes.hosts import (
    CONTROLLER,
    DEFAULT_POSTGRESQL,
    down_nodes,
    kill_node,
    start_nodes,
)
from cloudmeta.lab.nodes.topology import node_dir, node_fabric, node_prefix

__all__ = [
    "CONTROLLER",
    "DEFAULT_POSTGRESQL",
    "build_underlay",
    "down_nodes",
    "ensure_overlay",
    "kill_node",
    "node_dir",
    "node_fabric",
    "node_prefix",
    "start_nodes",
]
