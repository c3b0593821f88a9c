"""The admin API: the stand-in for Nova's and Neutron's APIs that operators and agents use."""

from cloudmeta.api.admin.app import build_admin_app, ensure_admin_token
from cloudmeta.api.admin.handlers import STORE_KEY

__all__ = ["STORE_KEY", "build_admin_app", "ensure_admin_token"]
