from inventory.dbfixtures import db_config, store

__all__ = ["db_config", "store"]
