"""The MySQL store when the database misbehaves: a hung server, a slow query, swapped credentials.

Real MariaDB (the session's, stopped with SIGSTOP where a test needs it to hang, and always
continued afterwards), the installed vchkpw and vdelivermail, real syslog.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import VPOPMAIL_GID, VPOPMAIL_UID, fd3_payload
from tree import REMOTE_IP, Tree, load_schema, mysql_connect, mysql_line

PASSWORD = "secret"
OK_LINE = f"vchkpw-pop3: (PLAIN) login success bob@example.com:{REMOTE_IP}"


@pytest.fixture
def db(mysql_db: dict[str, Any]) -> dict[str, Any]:
    load_schema(mysql_db)
    return mysql_db


@pytest.fixture
def tree(db: dict[str, Any]) -> Iterator[Tree]:
    with Tree(store="mysql", mysql=db, mysql_connect_timeout=1, mysql_query_timeout=1) as t:
        t.add_domain("example.com")
        t.bob = t.add_user("example.com", "bob", PASSWORD)
        yield t


def login(tree: Tree, password: str = PASSWORD):
    return tree.login(fd3_payload("bob@example.com", password, b"<1.2@pop.example.com>"))


@pytest.fixture
def stopped(mariadb: dict[str, Any]) -> Iterator[None]:
    """The session's MariaDB stopped (SIGSTOP) for the test's body, continued whatever happens."""
    pid = mariadb["proc"].pid
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


@pytest.fixture
def mute_server() -> Iterator[int]:
    """A TCP port that accepts connections (the kernel's backlog) and never says a word."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


def test_a_hung_server_costs_the_connect_timeout_not_thirty_seconds(tree: Tree, stopped: None) -> None:
    start = time.monotonic()
    done, record = login(tree)
    elapsed = time.monotonic() - start
    assert done.returncode == 111 and record is None
    assert elapsed < 4, f"{elapsed:.1f} s with mysql_connect_timeout = 1"
    os.chown(tree.etc / "vpopmail.mysql", VPOPMAIL_UID, VPOPMAIL_GID)  # vdelivermail runs as 89
    start = time.monotonic()
    done = tree.deliver("bob@example.com", b"Subject: t\n\nx\n")
    assert done.returncode == 111, done.stdout
    assert b"database down" in done.stdout, done.stdout
    assert time.monotonic() - start < 4


def test_a_mute_read_server_hands_over_to_the_update_server(tree: Tree, db: dict[str, Any],
                                                            mute_server: int) -> None:
    mute = f"127.0.0.1|{mute_server}|{db['user']}|{db['password']}|{db['database']}"
    tree.write_etc("vpopmail.mysql", f"{mute}\n{mysql_line(db)}\n", mode=0o600)  # read line, update line
    start = time.monotonic()
    done, record = login(tree)
    assert done.returncode == 0 and record is not None, done.stderr
    assert time.monotonic() - start < 4
    assert tree.syslog_lines() == [OK_LINE]


def test_a_query_that_waits_is_given_up_after_the_query_timeout(tree: Tree, db: dict[str, Any]) -> None:
    holder = mysql_connect(db)
    try:
        with holder.cursor() as cur:
            cur.execute("LOCK TABLES vpopmail WRITE")
            start = time.monotonic()
            done, record = login(tree)
            elapsed = time.monotonic() - start
            assert done.returncode == 111 and record is None
            assert 0.9 <= elapsed < 4, f"{elapsed:.1f} s with mysql_query_timeout = 1"
            cur.execute("UNLOCK TABLES")
    finally:
        holder.close()
    assert login(tree)[0].returncode == 0


def test_swapped_user_and_password_never_show_the_password(tree: Tree, db: dict[str, Any]) -> None:
    swapped = dict(db, user=db["password"], password=db["user"])
    os.chown(tree.write_mysql_credentials(swapped), VPOPMAIL_UID, VPOPMAIL_GID)  # vdelivermail runs as 89
    done, record = login(tree)
    assert done.returncode == 111 and record is None
    logged = b"".join(tree.syslog_records())
    shown = done.stdout + done.stderr + logged
    assert db["password"].encode() not in shown
    assert b"access denied" in shown and b"vpopmail.mysql:2" in shown, shown
    done = tree.deliver("bob@example.com", b"Subject: t\n\nx\n")
    assert done.returncode == 111
    assert db["password"].encode() not in done.stdout + done.stderr + b"".join(tree.syslog_records())
    assert done.stdout == b"vdelivermail: deferred, database down\n"


def test_a_driver_text_that_quotes_the_password_is_cleaned() -> None:
    from vpop.credentials import Server
    from vpop.sqldb import Database

    class Refusal(Exception):
        pass

    server = Server("db.example", 3306, None, "mail", "Sw0rdfish!", "vpopmail", "/etc/vpopmail.mysql:1")
    database = Database(server, server)
    text = database._describe(Refusal(2003, "Can't connect to 'Sw0rdfish!' (111)"))
    assert text == "(2003) Can't connect to '<password>' (111)"
    assert "Sw0rdfish" not in database._describe(Refusal(1045, "Access denied for user 'Sw0rdfish!'"))


# ------------------------------------------------------------------ a ping sent ahead (vlookupd)


def _database(db: dict[str, Any], query_timeout: int = 30):
    from vpop.credentials import Server
    from vpop.sqldb import Database

    server = Server("127.0.0.1", db["port"], None, db["user"], db["password"], db["database"], "test:1")
    return Database(server, server, connect_timeout=1, query_timeout=query_timeout)


def test_a_ping_sent_ahead_is_answered_before_anything_else_uses_the_connection(db: dict[str, Any]) -> None:
    database = _database(db)
    try:
        database.start_ping()
        database.start_ping()  # one ping in flight at most
        assert database.query("SELECT 41 + 1") == [(42,)]  # the ping's answer was read first
        database.start_ping()
        database.execute("REPLACE INTO lastauth (user, domain, remote_ip, timestamp) VALUES (%s, %s, %s, %s)",
                         ("bob", "example.com", REMOTE_IP, 1))
        assert database.query("SELECT user, timestamp FROM lastauth") == [("bob", 1)]
        database.start_ping()
        database.confirm_alive()
        database.confirm_alive()  # nothing in flight: a ping of its own
        assert database.query("SELECT 2") == [(2,)]
        database.start_ping()
    finally:
        database.close()  # with a ping in flight: closed all the same
    assert database.query("SELECT 3") == [(3,)]  # a new connection
    database.close()


def test_a_ping_sent_ahead_to_a_hung_server_fails_after_the_query_timeout(db: dict[str, Any],
                                                                       mariadb: dict[str, Any]) -> None:
    from vpop.errors import DatabaseFailure

    database = _database(db, query_timeout=1)
    assert database.query("SELECT 1") == [(1,)]
    os.kill(mariadb["proc"].pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        database.start_ping()
        with pytest.raises(DatabaseFailure, match="database down"):
            database.confirm_alive()
        assert time.monotonic() - started < 10
    finally:
        os.kill(mariadb["proc"].pid, signal.SIGCONT)
    assert database.query("SELECT 1") == [(1,)]  # the failed connection was dropped: a new one
    database.close()


def test_a_ping_to_a_server_that_is_gone(db: dict[str, Any], mute_server: int) -> None:
    from vpop.credentials import Server
    from vpop.errors import DatabaseFailure
    from vpop.sqldb import Database

    server = Server("127.0.0.1", mute_server, None, db["user"], db["password"], db["database"], "test:1")
    database = Database(server, server, connect_timeout=1, query_timeout=1)
    database.start_ping()  # cannot connect: remembered, not raised
    with pytest.raises(DatabaseFailure, match="database down"):
        database.confirm_alive()
