"""cloudmeta: the cloud instance metadata service, piece for piece as OpenStack builds it."""

__version__ = "0.1.0"
