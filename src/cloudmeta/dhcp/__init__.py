"""The DHCP agent: qdhcp namespaces, dnsmasq, and metadata through DHCP (option 121).

``DhcpAgent(config, client, proxy_manager, monitor).run()`` is the service; the pure parts
(``model``, ``decisions``, ``render``) render Neutron's dnsmasq arguments and files from data.
"""

from cloudmeta.dhcp.agent import DhcpAgent
from cloudmeta.dhcp.driver import DhcpError, Dnsmasq, dhcp_namespace
from cloudmeta.dhcp.model import BundleError, NetworkBundle

__all__ = ["BundleError", "DhcpAgent", "DhcpError", "Dnsmasq", "NetworkBundle", "dhcp_namespace"]
