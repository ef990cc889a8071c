"""The stores, one module each; a store's driver is imported only when it is opened."""

from vpop.errors import ConfigError


def open_store(settings):
    """The store the settings name (``store = cdb | mysql``)."""
    if settings.store == "cdb":
        from vpop.stores.cdb import CdbStore

        return CdbStore(settings)
    if settings.store == "mysql":
        from vpop.stores.mysql import MysqlStore

        return MysqlStore(settings)
    raise ConfigError(settings.path, None, f"unknown store {settings.store!r}")
