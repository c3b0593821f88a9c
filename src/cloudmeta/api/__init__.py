"""The HTTP services over the inventory: the admin API and (its own package) the metadata API."""
