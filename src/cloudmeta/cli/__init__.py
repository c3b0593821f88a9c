"""The ``cloudmeta`` command: services, inventory management and the lab."""
