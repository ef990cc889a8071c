"""The qmail-mysql store: Iain Patterson's ``mailbox``, ``alias``, ``virtual``, ``rcpthosts`` tables.

Credentials come from qmail's ``control/sqlserver`` (see :func:`vpop.credentials.read_sqlserver`).
``mailbox`` rows give logins (vchkpw) and local users (qmail-getpw); ``password_type`` is
``Password`` (clear), ``Crypt-Password`` (crypt(3)) or ``MySQL-Password`` (either
``PASSWORD()`` format).  The other tables are rendered into stock qmail's files by
``qmail-mysql-sync``.

Names are compared exactly but for ASCII case (:func:`vpop.stores.base.same_name`), not
through the table's collation (``utf8mb4_general_ci`` takes ``jöe``, ``JÖE`` and ``joe `` for
the row ``joe``).  The query keeps the plain ``=``, so the primary key on ``username`` is
used, and the row's name is checked in Python: ``BINARY username = %s`` casts the column and
makes MariaDB read the whole table for every delivery and login.
"""

from vpop.credentials import read_sqlserver
from vpop.sqldb import Database
from vpop.stores.base import Account, Store, column_text, exact_first, is_sql_text, to_int

PASSWORD_TYPES = ("Password", "Crypt-Password", "MySQL-Password")


class QmailMysqlStore(Store):
    """Reads the qmail-mysql tables; ``server`` serves reads, ``update_server`` (if any) updates."""

    def __init__(self, settings, log=None) -> None:
        self.settings = settings
        read, update = read_sqlserver(settings.sqlserver, log, settings.sqlserver_world_readable == "refuse")
        self.db = Database(read, update, settings.mysql_connect_timeout, settings.mysql_default_socket,
                           settings.mysql_query_timeout)

    def mailbox(self, username: str) -> Account | None:
        """The ``mailbox`` row of ``username`` (exact but for ASCII case; see the module's note)."""
        if not is_sql_text(username):
            return None
        rows = self.db.query("SELECT username, uid, gid, home, password, password_type, suspended "
                             "FROM mailbox WHERE username = %s", (username,), missing_table_ok=False)
        rows = exact_first(rows, 0, username)
        if not rows:
            return None
        name, uid, gid, home, password, kind, suspended = rows[0]
        kind = column_text(kind)
        problem = "" if kind in PASSWORD_TYPES else f"unknown password_type {kind!r}"
        return Account(column_text(name), to_int(uid), to_int(gid), column_text(home),
                       None if password is None else column_text(password), kind,
                       column_text(suspended).strip().upper() == "Y", problem=problem)

    def find_account(self, login: str) -> Account | None:
        return self.mailbox(login)

    def verify(self, account: Account, password: bytes, challenge: bytes, service: str) -> str | None:
        """The auth type ("PLAIN", "APOP", "CRAM-MD5") when the password is right, else None."""
        from vpop import passwords

        stored = account.password or ""
        if not stored:
            return None
        if account.scheme == "Password":
            if service == "smtp" and passwords.cram_md5_verify(password, challenge, stored):
                return "CRAM-MD5"
            if service == "pop" and passwords.apop_verify(password, challenge, stored):
                return "APOP"
            return "PLAIN" if passwords.equal(password, stored) else None
        if account.scheme == "Crypt-Password":
            return "PLAIN" if passwords.crypt_verify(password, stored) else None
        if account.scheme == "MySQL-Password":
            return "PLAIN" if passwords.mysql_password_verify(password, stored) else None
        return None

    def rows(self, table: str, columns: str) -> list[tuple]:
        """All rows of one of the qmail-mysql tables (for qmail-mysql-sync)."""
        if table not in ("virtual", "alias", "rcpthosts", "mailbox"):
            raise ValueError(table)
        return self.db.query(f"SELECT {columns} FROM `{table}`", missing_table_ok=False)

    def close(self) -> None:
        self.db.close()
