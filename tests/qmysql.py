"""A qmail-mysql site for tests: the ``mailbox``/``alias``/``virtual``/``rcpthosts`` tables in the
session's MariaDB, ``control/sqlserver`` pointing at them, homes owned by real uids, and runners for
the installed ``qmail-getpw`` and ``qmail-mysql-sync``.

``QmailMysqlTree`` is a :class:`tree.Tree` with ``store = qmail-mysql``: its settings file, syslog
socket and recorder (for vchkpw) are the Tree's.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from helpers import REPO_ROOT, program
from tree import Tree, mysql_connect

SCHEMA = REPO_ROOT / "conf" / "schema" / "qmail-mysql.sql"

#: The FAQ's popuser:users.
POPUSER_UID = 800
USERS_GID = 100


def schema_statements() -> list[str]:
    """The statements of conf/schema/qmail-mysql.sql ("--" comments removed, split at ';')."""
    code = "\n".join(line.split("--", 1)[0].rstrip() for line in SCHEMA.read_text().split("\n"))
    return [text.strip() for text in code.split(";") if text.strip()]


def load_qmail_schema(db: Mapping[str, Any]) -> None:
    """Create the qmail-mysql tables (conf/schema/qmail-mysql.sql) in a ``mysql_db`` database."""
    conn = mysql_connect(db)
    with conn, conn.cursor() as cur:
        for statement in schema_statements():
            cur.execute(statement)


@contextlib.contextmanager
def qmail_database(mariadb: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """A database with the qmail-mysql tables and its own user, for a whole module (a ``mysql_db``
    per test costs ~0.4 s; :func:`empty_tables` resets this one in a few ms).  Same keys as ``mysql_db``.
    """
    import pymysql

    suffix = secrets.token_hex(4)
    db = {"database": f"q_{suffix}", "user": f"qm_{suffix}", "password": secrets.token_hex(12),
          "host": mariadb["host"], "port": mariadb["port"], "unix_socket": mariadb["unix_socket"],
          "root": {"unix_socket": mariadb["unix_socket"], "user": "root", "password": ""}}
    conn = pymysql.connect(autocommit=True, **db["root"])
    with conn, conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{db['database']}`")
        for host in ("%", "localhost"):
            cur.execute("CREATE USER %s@%s IDENTIFIED BY %s", (db["user"], host, db["password"]))
            cur.execute(f"GRANT ALL PRIVILEGES ON `{db['database']}`.* TO %s@%s", (db["user"], host))
    try:
        load_qmail_schema(db)
        yield db
    finally:
        conn = pymysql.connect(autocommit=True, **db["root"])
        with conn, conn.cursor() as cur:
            cur.execute("SELECT ID FROM information_schema.PROCESSLIST WHERE USER = %s", (db["user"],))
            for (thread_id,) in cur.fetchall():
                with contextlib.suppress(pymysql.err.OperationalError):
                    cur.execute("KILL %s", (thread_id,))
            cur.execute(f"DROP DATABASE IF EXISTS `{db['database']}`")
            for host in ("%", "localhost"):
                cur.execute("DROP USER IF EXISTS %s@%s", (db["user"], host))


def empty_tables(db: Mapping[str, Any]) -> None:
    """Re-create missing tables (a test may drop one) and delete every row."""
    conn = mysql_connect(db)
    with conn, conn.cursor() as cur:
        for statement in schema_statements():
            cur.execute(statement)
        for table in ("mailbox", "alias", "virtual", "rcpthosts"):
            cur.execute(f"DELETE FROM `{table}`")


def sqlserver_text(db: Mapping[str, Any], *, tcp: bool = False) -> str:
    """control/sqlserver for a ``mysql_db`` / ``dead_mysql`` dict, in the patch's documented form."""
    lines = [f"server {db['host'] if tcp else 'localhost'}", f"login {db['user']}",
             f"password {db['password']}", f"db {db['database']}"]
    lines.append(f"port {db['port']}" if tcp else f"socket {db['unix_socket']}")
    return "\n".join(lines) + "\n"


class QmailMysqlTree(Tree):
    """A Tree with store = qmail-mysql and the tables of ``db`` (schema loaded by the caller)."""

    def __init__(self, db: Mapping[str, Any] | None, **settings: Any) -> None:
        super().__init__(store="qmail-mysql", **settings)
        self.db = db
        self._conn: Any = None
        self.sqlserver = self.qmail_home / "control" / "sqlserver"
        self.write_settings(sqlserver=self.sqlserver)
        if db is not None:
            self.write_sqlserver(sqlserver_text(db))

    # ------------------------------------------------------------------ files

    def write_sqlserver(self, text: str, mode: int = 0o640, gid: int | None = None) -> Path:
        self.sqlserver.write_text(text)
        os.chmod(self.sqlserver, mode)
        if gid is not None:
            os.chown(self.sqlserver, 0, gid)
        return self.sqlserver

    def home(self, relative: str, uid: int = POPUSER_UID, gid: int = USERS_GID, mode: int = 0o700) -> str:
        """Create ``<root>/<relative>`` owned by uid:gid (parents 0755 root) and return its path."""
        path = self.root / relative
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        path.mkdir(mode=mode)
        os.chmod(path, mode)
        os.chown(path, uid, gid)
        return str(path)

    # ------------------------------------------------------------------ rows

    def sql(self, statement: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        assert self.db is not None
        if self._conn is None:
            self._conn = mysql_connect(self.db)  # one connection per tree: a connect costs ~20 ms
        with self._conn.cursor() as cur:
            cur.execute(statement, tuple(args))
            return list(cur.fetchall())

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        super().close()

    def mailbox(self, username: str, uid: int, gid: int, home: str, password: str = "****",
                password_type: str = "Password", suspended: str = "N") -> None:
        self.sql("INSERT INTO mailbox (username, uid, gid, home, password, password_type, suspended) "
                 "VALUES (%s, %s, %s, %s, %s, %s, %s)", (username, uid, gid, home, password, password_type,
                                                         suspended))

    def alias(self, username: str, alias: str, alias_username: str, alias_host: str) -> None:
        self.sql("INSERT INTO alias (username, alias, alias_username, alias_host) VALUES (%s, %s, %s, %s)",
                 (username, alias, alias_username, alias_host))

    def virtual(self, username: str, ext: str, virtual_username: str, virtual_host: str) -> None:
        self.sql("INSERT INTO virtual (username, ext, virtual_username, virtual_host) "
                 "VALUES (%s, %s, %s, %s)", (username, ext, virtual_username, virtual_host))

    def rcpthost(self, host: str) -> None:
        self.sql("INSERT INTO rcpthosts (host) VALUES (%s)", (host,))

    # ------------------------------------------------------------------ programs

    def program_env(self, **extra: str) -> dict[str, str]:
        return {"PATH": "/usr/bin:/bin", "VPOP_CONFIG": str(self.config), **extra}

    def getpw(self, *args: str | bytes, stdin: Any = subprocess.DEVNULL, user: int | None = None,
              group: int | None = None, timeout: float = 20) -> subprocess.CompletedProcess[bytes]:
        """Run the installed qmail-getpw as qmail-lspawn does: cwd = qmail home, argv[1] = local part
        (bytes reach the program as they are: a remote ``RCPT TO`` can make any local part but NUL)."""
        try:
            return subprocess.run([program("qmail-getpw"), *args], stdin=stdin, capture_output=True,
                                  env=self.program_env(), cwd=self.qmail_home, timeout=timeout,
                                  user=user, group=group, extra_groups=None if group is None else [group])
        finally:
            self._drain()

    def sync(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run the installed qmail-mysql-sync."""
        try:
            return subprocess.run([program("qmail-mysql-sync"), *args], stdin=subprocess.DEVNULL,
                                  capture_output=True, text=True, env=self.program_env(),
                                  cwd=self.qmail_home, timeout=timeout)
        finally:
            self._drain()


def getpw_fields(*fields: object) -> bytes:
    """qmail-getpw's expected stdout: every field followed by NUL (bytes as they are, the rest as UTF-8)."""
    return b"".join((f if isinstance(f, bytes) else str(f).encode()) + b"\0" for f in fields)
