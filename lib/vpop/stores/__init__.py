"""The stores, one module each; a store's driver is imported only when it is opened."""

from vpop.errors import ConfigError


def open_store(settings, log=None, *, primary: bool = False, via_daemon: bool = False):
    """The store the settings name (``store = cdb | mysql | qmail-mysql | vmail-sql``).

    ``primary``: every read on the update server (see :meth:`Store.read_from_primary`).
    ``via_daemon``: when ``lookup_socket`` is set, the same store asked through vlookupd
    (:class:`vpop.stores.daemon.DaemonStore`), which falls back to this one by itself.
    """
    if via_daemon and settings.lookup_socket != "none":
        from vpop.stores.daemon import DaemonStore

        return DaemonStore(settings, log)
    store = _open(settings, log)
    if primary:
        store.read_from_primary()
    return store


def _open(settings, log):
    if settings.store == "cdb":
        from vpop.stores.cdb import CdbStore

        return CdbStore(settings)
    if settings.store == "mysql":
        from vpop.stores.mysql import MysqlStore

        return MysqlStore(settings)
    if settings.store == "qmail-mysql":
        from vpop.stores.qmail_mysql import QmailMysqlStore

        return QmailMysqlStore(settings, log)
    if settings.store == "vmail-sql":
        from vpop.stores.vmail_sql import VmailSqlStore

        return VmailSqlStore(settings)
    raise ConfigError(settings.path, None, f"unknown store {settings.store!r}")
