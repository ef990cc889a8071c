"""Connections to MySQL/MariaDB for the SQL stores: a read server and an update server.

Reads go to the read server; if it cannot be reached they go to the update server; if
neither answers, :class:`TemporaryFailure` (the C vchkpw reported that as "user not
found", and vdelivermail could then delete mail).  Writes go to the update server.
PyMySQL is imported here, on first use, never by a program that does not need it.

Only parameterised queries pass through :meth:`Database.query` / :meth:`Database.execute`.

Time bounds: a server that accepts the connection and then says nothing (SIGSTOP, a full
accept queue, a hung host) is given up on after ``connect_timeout`` seconds for each step of
the handshake (PyMySQL's own ``connect_timeout`` covers only the TCP connect); queries then wait
at most ``query_timeout`` seconds for an answer.  The driver's error texts are passed on with
the configured passwords taken out: a credentials file with user and password swapped makes
the server answer "Access denied for user '<the password>'".
"""

import sys
from collections.abc import Iterable

from vpop.credentials import Server
from vpop.errors import DatabaseFailure, TemporaryFailure


def _import_pymysql():
    # The credentials formats have no TLS options, so ssl (6 ms of start-up) is never
    # used; keep PyMySQL from importing it.  A program that already imported ssl keeps it.
    blocked = "ssl" not in sys.modules
    if blocked:
        sys.modules["ssl"] = None
    try:
        import pymysql
    finally:
        if blocked and sys.modules.get("ssl") is None:
            del sys.modules["ssl"]
    return pymysql


class Database:
    """Lazy read and update connections described by two :class:`Server` entries."""

    def __init__(self, read: Server, update: Server, connect_timeout: int = 2,
                 default_socket: str = "/run/mysqld/mysqld.sock", query_timeout: int = 30) -> None:
        self.read_server = read
        self.update_server = update
        self.connect_timeout = max(connect_timeout, 1)
        self.query_timeout = max(query_timeout, 1)
        self.default_socket = default_socket
        self._read = None
        self._update = None

    def _connect(self, server: Server):
        pymysql = _import_pymysql()
        socket = server.socket
        if socket is None and server.host == "localhost":
            # libmysqlclient takes "localhost" to mean the unix socket; PyMySQL would use TCP.
            socket = self.default_socket
        # A server that accepts and then hangs must not hold qmail's delivery slots for ever:
        # the handshake runs under the connect timeout, the queries under the query timeout.
        kwargs = dict(user=server.user, password=server.password, database=server.database,
                      connect_timeout=self.connect_timeout, read_timeout=self.connect_timeout,
                      write_timeout=self.connect_timeout, autocommit=True, charset="utf8mb4")
        if socket:
            kwargs["unix_socket"] = socket
        else:
            kwargs["host"] = server.host
            kwargs["port"] = server.port
        conn = pymysql.connect(**kwargs)
        # PyMySQL applies these before each read and write (Connection._read_timeout/_write_timeout).
        conn._read_timeout = conn._write_timeout = self.query_timeout
        return conn

    def _errors(self):
        pymysql = _import_pymysql()
        return (pymysql.err.MySQLError, OSError)

    def reader(self):
        if self._read is None:
            errors = self._errors()
            try:
                self._read = self._connect(self.read_server)
            except errors as first:
                if self.update_server is self.read_server:
                    raise DatabaseFailure(f"database down: {self._describe(first)}") from None
                try:
                    self._read = self.writer()
                except TemporaryFailure:
                    raise DatabaseFailure(f"database down: {self._describe(first)}") from None
        return self._read

    def writer(self):
        if self._update is None and self._read is not None and self.update_server is self.read_server:
            self._update = self._read  # one server in the credentials file: one connection
        if self._update is None:
            try:
                self._update = self._connect(self.update_server)
            except self._errors() as exc:
                raise DatabaseFailure(f"database down: {self._describe(exc)}") from None
        return self._update

    def query(self, sql: str, args: tuple = (), missing_table_ok: bool = True,
              primary: bool = False) -> list[tuple]:
        """Run a SELECT on the read connection (``primary``: the update connection, which sees
        its own writes at once); a missing table reads as no rows."""
        try:
            with (self.writer() if primary else self.reader()).cursor() as cursor:
                cursor.execute(sql, args)
                return list(cursor.fetchall())
        except self._errors() as exc:
            if missing_table_ok and _code(exc) == 1146:
                return []
            raise DatabaseFailure(f"database query failed: {self._describe(exc)}") from None

    def query_row_dict(self, sql: str, args: tuple = ()) -> dict | None:
        """The first row of a SELECT as {column: value}; None when there is none (or no table)."""
        try:
            with self.reader().cursor() as cursor:
                cursor.execute(sql, args)
                row = cursor.fetchone()
                if row is None:
                    return None
                return {d[0]: value for d, value in zip(cursor.description, row, strict=False)}
        except self._errors() as exc:
            if _code(exc) == 1146:
                return None
            raise DatabaseFailure(f"database query failed: {self._describe(exc)}") from None

    def execute(self, sql: str, args: tuple = (), create: str | None = None) -> int:
        """Run a write on the update connection; ``create`` is run first if the table is missing."""
        try:
            with self.writer().cursor() as cursor:
                try:
                    return cursor.execute(sql, args)
                except self._errors() as exc:
                    if create is None or _code(exc) != 1146:
                        raise
                    cursor.execute(create)
                    return cursor.execute(sql, args)
        except self._errors() as exc:
            raise DatabaseFailure(f"database update failed: {self._describe(exc)}") from None

    def _describe(self, exc: BaseException) -> str:
        """The driver's error text, never with a configured password in it.

        An access-denied answer quotes the user name the server was given, which is the
        password itself when the two fields were swapped: its text is not passed on at all.
        """
        servers = (self.read_server, self.update_server)
        code = _code(exc)
        if code in _ACCESS_DENIED:
            origins = ", ".join(dict.fromkeys(s.origin for s in servers if s.origin))
            return f"({code}) access denied: check the user, password and database in {origins}"
        return without_secrets(_describe(exc), (s.password for s in servers))

    def close(self) -> None:
        for conn in {id(c): c for c in (self._read, self._update)}.values():
            if conn is not None:
                try:
                    conn.close()
                except Exception:
                    pass
        self._read = self._update = None


# ER_DBACCESS_DENIED_ERROR, ER_ACCESS_DENIED_ERROR, ER_ACCESS_DENIED_NO_PASSWORD_ERROR,
# ER_ACCESS_DENIED_CHANGE_USER_ERROR (MariaDB's unix_socket refusal)
_ACCESS_DENIED = {1044, 1045, 1698, 1873}


def _code(exc: BaseException) -> int:
    args = getattr(exc, "args", ())
    return args[0] if args and isinstance(args[0], int) else 0


def _describe(exc: BaseException) -> str:
    args = getattr(exc, "args", ())
    if len(args) >= 2:
        return f"({args[0]}) {args[1]}"
    return str(exc) or exc.__class__.__name__


def without_secrets(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every configured password in it replaced by ``<password>``."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, "<password>")
    return text
