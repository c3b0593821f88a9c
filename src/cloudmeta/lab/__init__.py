"""The lab: a whole cloud on one host; instances are namespaces booting real cloud-init."""
