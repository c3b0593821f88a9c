"""The L3 agent (neutron-l3-agent): router namespaces, routing between their subnets, and the
metadata path through them (iptables REDIRECT of 169.254.169.254:80 to the router's proxy).

``L3Agent(config, client, proxy_manager, monitor).run()`` follows the admin API;
``RouterManager`` builds one router; ``model`` and ``rules`` are pure.
"""

from cloudmeta.l3.agent import L3Agent
from cloudmeta.l3.manager import RouterManager
from cloudmeta.l3.model import L3Error, Router, RouterInterface

__all__ = ["L3Agent", "L3Error", "Router", "RouterInterface", "RouterManager"]
