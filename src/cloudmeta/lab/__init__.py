"""The lab: a whole cloud on one host, instances as namespaces that boot with real DHCP and cloud-init."""
