"""Connections to MySQL/MariaDB for the SQL stores: a read server and an update server.

Reads go to the read server (a site's local replica); if it cannot be reached, or stops
answering, they go to the update server (the primary); if neither answers,
:class:`TemporaryFailure` (the C vchkpw reported that as "user not found", and vdelivermail
could then delete mail).  Writes go to the update server only, never to the read server.
PyMySQL is imported here, on first use, never by a program that does not need it.

Replication lag: a replica may not have a row the primary has just been given.  An answer
that would bounce mail or refuse a login ("no such user") is therefore asked again on the
primary (:meth:`Database.confirm_on_primary`, called by the programs just before they would
act on it), and the admin tools read from the primary throughout (``primary_reads``).

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


#: seconds a long-lived process reads from the primary after its read server failed
REPLICA_RETRY = 30


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
        #: reads on the update connection: the admin tools (they read what they are about to
        #: change), and a lookup being confirmed after the replica said "no such row"
        self.primary_reads = False
        self._replica_down_until = 0.0
        #: :meth:`start_ping`'s connection, whose answer is still to be read, or the failure
        #: :meth:`confirm_alive` is to report
        self._pinged = None

    @property
    def has_replica(self) -> bool:
        """Whether reads and updates name two different servers."""
        read, update = self.read_server, self.update_server
        if read is update:
            return False
        return (read.host, read.port, read.socket, read.database) != \
            (update.host, update.port, update.socket, update.database)

    def confirm_on_primary(self) -> bool:
        """Send the reads that follow to the primary; False when they went there already (one
        server, or confirmed once), so that the caller's "not found" stands."""
        if self.primary_reads or not self.has_replica:
            return False
        self.primary_reads = True
        return True

    def follow_replica(self) -> None:
        """Reads back on the read server (a long-lived process, after each request), unless the
        read server failed in the last :data:`REPLICA_RETRY` seconds: a hung replica would
        otherwise cost every request a connect timeout."""
        import time

        if time.monotonic() >= self._replica_down_until:
            self.primary_reads = False

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

    def start_ping(self) -> None:
        """Send a ping to the update server and read its answer only in :meth:`confirm_alive`
        (vlookupd: the round trip overlaps the work of a login decided on cached answers).

        PyMySQL's own ``ping`` is ``_execute_command(COM_PING)`` then ``_read_ok_packet``; this
        is the same two steps apart.  Any other use of the connection reads the answer first.
        """
        if self._pinged is not None:
            return
        try:
            conn = self.writer()
        except DatabaseFailure as exc:
            self._pinged = exc
            return
        if not (hasattr(conn, "_execute_command") and hasattr(conn, "_read_ok_packet")):
            return  # another PyMySQL: confirm_alive pings in one step
        from pymysql.constants import COMMAND

        try:
            conn._execute_command(COMMAND.COM_PING, "")
        except self._errors() as exc:
            self._drop(conn)
            self._pinged = DatabaseFailure(f"database down: {self._describe(exc)}")
            return
        self._pinged = conn

    def _settle_ping(self) -> DatabaseFailure | None:
        """Read the answer of :meth:`start_ping`'s ping; the failure, if any (the connection is
        dropped then)."""
        pinged, self._pinged = self._pinged, None
        if pinged is None or isinstance(pinged, DatabaseFailure):
            return pinged
        try:
            pinged._read_ok_packet()
        except self._errors() as exc:
            self._drop(pinged)
            return DatabaseFailure(f"database down: {self._describe(exc)}")
        return None

    def confirm_alive(self) -> None:
        """Raise :class:`DatabaseFailure` unless the update server answers a ping (the one
        :meth:`start_ping` sent, else one now)."""
        self.start_ping()
        if self._pinged is None:  # a PyMySQL without the two steps
            conn = self.writer()
            try:
                conn.ping(False)
            except self._errors() as exc:
                self._drop(conn)
                raise DatabaseFailure(f"database down: {self._describe(exc)}") from None
            return
        failure = self._settle_ping()
        if failure is not None:
            raise failure

    def reader(self):
        if self._pinged is not None:
            self._settle_ping()  # its failure dropped the connection: this read connects again
        if self.primary_reads:
            return self.writer()
        if self._read is None:
            errors = self._errors()
            try:
                self._read = self._connect(self.read_server)
            except errors as first:
                if self.update_server is self.read_server:
                    raise DatabaseFailure(f"database down: {self._describe(first)}") from None
                try:
                    conn = self.writer()
                except TemporaryFailure:
                    raise DatabaseFailure(f"database down: {self._describe(first)}") from None
                self._replica_failed()  # reads on the primary (a while, in a daemon)
                return conn
        return self._read

    def writer(self):
        if self._pinged is not None:
            self._settle_ping()
        # One line in the credentials file: one connection.  Two lines naming one server may still
        # name two users (a read-only one for reads): each gets its own connection.
        if self._update is None and self._read is not None and self.update_server is self.read_server:
            self._update = self._read
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
        def run(cursor):
            cursor.execute(sql, args)
            return list(cursor.fetchall())

        try:
            return self._read_with(run, primary)
        except self._errors() as exc:
            if missing_table_ok and _code(exc) == 1146:
                return []
            raise DatabaseFailure(f"database query failed: {self._describe(exc)}") from None

    def query_row_dict(self, sql: str, args: tuple = ()) -> dict | None:
        """The first row of a SELECT as {column: value}; None when there is none (or no table)."""
        def run(cursor):
            cursor.execute(sql, args)
            row = cursor.fetchone()
            if row is None:
                return None
            return {d[0]: value for d, value in zip(cursor.description, row, strict=False)}

        try:
            return self._read_with(run, False)
        except self._errors() as exc:
            if _code(exc) == 1146:
                return None
            raise DatabaseFailure(f"database query failed: {self._describe(exc)}") from None

    def _read_with(self, run, primary: bool):
        """``run(cursor)`` on the read connection (``primary``: the update one).  A read server
        that fails at the connection level (gone, hung past the query timeout) is dropped and
        the primary asked instead; a failed connection is never used again."""
        conn = self.writer() if primary else self.reader()
        try:
            with conn.cursor() as cursor:
                return run(cursor)
        except self._errors() as exc:
            if not _connection_lost(exc):
                raise
            on_primary = primary or conn is self._update or not self.has_replica
            self._drop(conn)
            if on_primary:
                raise
            self._replica_failed()  # the primary answers from now on (a while, in a daemon)
            with self.writer().cursor() as cursor:
                return run(cursor)

    def failed_transaction(self, conn, exc: BaseException) -> DatabaseFailure:
        """After a statement of a transaction failed: roll it back (a lost connection is dropped
        instead); returns the error for the caller to raise."""
        if _connection_lost(exc):
            self._drop(conn)
        else:
            try:
                conn.rollback()
            except self._errors():
                pass
        return DatabaseFailure(f"database update failed: {self._describe(exc)}")

    def _replica_failed(self) -> None:
        import time

        self.primary_reads = True
        self._replica_down_until = time.monotonic() + REPLICA_RETRY

    def _drop(self, conn) -> None:
        """Forget a connection that failed, so that the next use connects again."""
        try:
            conn.close()
        except Exception:
            pass
        if conn is self._read:
            self._read = None
        if conn is self._update:
            self._update = None

    def execute(self, sql: str, args: tuple = (), create: str | None = None) -> int:
        """Run a write on the update connection; ``create`` is run first if the table is missing."""
        conn = self.writer()
        try:
            with conn.cursor() as cursor:
                try:
                    return cursor.execute(sql, args)
                except self._errors() as exc:
                    if create is None or _code(exc) != 1146:
                        raise
                    cursor.execute(create)
                    return cursor.execute(sql, args)
        except self._errors() as exc:
            if _connection_lost(exc):
                self._drop(conn)
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
        self._pinged = None  # a ping's answer unread: the connection goes anyway
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


# CR_CONN_HOST_ERROR, CR_SERVER_GONE_ERROR, CR_SERVER_LOST, CR_SERVER_LOST_EXTENDED,
# ER_CONNECTION_KILLED, ER_SERVER_SHUTDOWN
_CONNECTION_LOST = {2003, 2006, 2013, 2055, 1927, 1053}


def _connection_lost(exc: BaseException) -> bool:
    """A failure of the connection (the server is gone or hung), not of the statement."""
    if isinstance(exc, OSError):
        return True
    return _code(exc) in _CONNECTION_LOST or exc.__class__.__name__ == "InterfaceError"


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
