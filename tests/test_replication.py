"""The SQL stores on a real primary and a real replica (two mariadbd of the test session, GTID).

The read line of the credentials points at the replica (``read_only``), the update line at the
primary.  The application user has no SUPER or READ ONLY ADMIN privilege, so a write that went
to the replica would fail with error 1290 instead of passing unseen.

Replication lag is made real by stopping the replica's SQL thread: what is then written on the
primary (by ``vadduser``, or a billing system's INSERT) is not on the replica until it restarts.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest
from helpers import VPOPMAIL_GID, VPOPMAIL_UID, fd3_payload, program
from qmysql import POPUSER_UID, USERS_GID, QmailMysqlTree, getpw_fields, load_qmail_schema
from servers import create_database, drop_database, replicated_mariadb, root_connection, wait_for_replica
from tree import REMOTE_IP, Tree, load_schema, mysql_line, mysql_rows

PASSWORD = "secret"
MESSAGE = b"From: alice@example.org\nTo: carol@example.com\nSubject: lag\n\nafter the lag\n"


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    with replicated_mariadb() as servers:
        yield servers


def server_db(server: dict[str, Any], database: str, user: str, password: str) -> dict[str, Any]:
    """A ``mysql_db``-style dict for one of the two servers."""
    return {"database": database, "user": user, "password": password, "host": server["host"],
            "port": server["port"], "unix_socket": server["unix_socket"],
            "root": {"unix_socket": server["unix_socket"], "user": "root", "password": ""}}


@pytest.fixture
def dbs(pair: tuple[dict[str, Any], dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """A database and its user made on the primary and replicated: (primary's, replica's)."""
    primary, replica = pair
    suffix = secrets.token_hex(4)
    database, user, password = f"r_{suffix}", f"rv_{suffix}", secrets.token_hex(12)
    create_database(primary, database, user, password)
    wait_for_replica(primary, replica)
    try:
        yield server_db(primary, database, user, password), server_db(replica, database, user, password)
    finally:
        start_sql_thread(replica)
        drop_database(primary, database, user)
        wait_for_replica(primary, replica)


def rows(db: dict[str, Any], sql: str, args: tuple = ()) -> list[tuple]:
    """A query as root on that server (root may read whatever the replica holds)."""
    conn = pymysql.connect(database=db["database"], autocommit=True, **db["root"])
    with conn, conn.cursor() as cur:
        cur.execute(sql, args)
        return list(cur.fetchall())


def com_select(server: dict[str, Any]) -> int:
    """The server's count of SELECT statements (SHOW STATUS is not one)."""
    conn = root_connection(server)
    with conn, conn.cursor() as cur:
        cur.execute("SHOW GLOBAL STATUS LIKE 'Com_select'")
        return int(cur.fetchone()[1])


def stop_sql_thread(replica: dict[str, Any]) -> None:
    conn = root_connection(replica)
    with conn, conn.cursor() as cur:
        cur.execute("STOP SLAVE SQL_THREAD")


def start_sql_thread(replica: dict[str, Any]) -> None:
    conn = root_connection(replica)
    with conn, conn.cursor() as cur:
        cur.execute("START SLAVE SQL_THREAD")


@contextlib.contextmanager
def stopped(server: dict[str, Any]) -> Iterator[None]:
    """The server's process stopped (SIGSTOP): it accepts connections and then says nothing."""
    os.kill(server["proc"].pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server["proc"].pid, signal.SIGCONT)


@pytest.fixture
def site(dbs: tuple[dict[str, Any], dict[str, Any]],
         pair: tuple[dict[str, Any], dict[str, Any]]) -> Iterator[Tree]:
    """store = mysql; read line: the replica; update line: the primary; example.com with bob."""
    primary_db, replica_db = dbs
    load_schema(primary_db)
    with Tree(store="mysql", mysql=replica_db, mysql_update=primary_db, mysql_connect_timeout=1,
              mysql_query_timeout=3) as tree:
        tree.write_mysql_credentials(replica_db, primary_db, tcp=True)  # uid 89 cannot reach the sockets
        own_credentials(tree)
        tree.add_domain("example.com")
        tree.bob = tree.add_user("example.com", "bob", PASSWORD)
        wait_for_replica(*pair)
        tree.primary, tree.replica = primary_db, replica_db
        tree.servers = pair
        tree.syslog_lines()
        yield tree


def billing_row(site: Tree, name: str) -> None:
    """A user row with a blank pw_dir, as a billing system inserts it, on the primary."""
    mysql_rows(site.primary, "INSERT INTO vpopmail (pw_name, pw_domain, pw_passwd, pw_uid, pw_gid, "
                             "pw_gecos, pw_dir, pw_shell, pw_clear_passwd) VALUES (%s, 'example.com', %s, 0, "
                             "0, %s, '', 'NOQUOTA', '')", (name, site.bob.passwd, name))


def own_credentials(tree: Tree) -> None:
    """etc/vpopmail.mysql is the vpopmail user's (mode 0600), so that deliveries (uid 89) read it."""
    os.chown(tree.etc / "vpopmail.mysql", VPOPMAIL_UID, VPOPMAIL_GID)


def login(tree: Tree, name: str, password: str = PASSWORD) -> subprocess.CompletedProcess[bytes]:
    done, _record = tree.login(fd3_payload(name, password, b"<1.2@mail>"))
    return done


def vadduser(tree: Tree, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "VPOP_CONFIG": str(tree.config)}
    return subprocess.run([program("vadduser"), *args], capture_output=True, text=True, env=env,
                          stdin=subprocess.DEVNULL, timeout=60)


def new_mail(user_dir: str) -> list[bytes]:
    new = Path(user_dir) / "Maildir" / "new"
    return [path.read_bytes() for path in sorted(new.iterdir())] if new.is_dir() else []


def user_dir(tree: Tree, db: dict[str, Any], name: str) -> str:
    found = rows(db, "SELECT pw_dir FROM vpopmail WHERE pw_name = %s", (name,))
    assert found, f"{name} is not on {db['unix_socket']}"
    return found[0][0]


# ------------------------------------------------------------------ reads and writes


def test_the_replica_is_read_only_for_the_application_user(site: Tree) -> None:
    conn = pymysql.connect(unix_socket=site.replica["unix_socket"], user=site.replica["user"],
                           password=site.replica["password"], database=site.replica["database"])
    with conn, conn.cursor() as cur, pytest.raises(pymysql.err.OperationalError) as refused:
        cur.execute("INSERT INTO lastauth (user, domain, remote_ip, timestamp) VALUES ('x', 'y', 'z', 1)")
    assert refused.value.args[0] == 1290  # ER_OPTION_PREVENTS_STATEMENT: --read-only


def test_reads_go_to_the_replica_and_writes_to_the_primary(site: Tree) -> None:
    primary, replica = site.servers
    before = com_select(primary), com_select(replica)
    done = login(site, "bob@example.com")
    assert done.returncode == 0, done.stderr
    after = com_select(primary), com_select(replica)
    assert after[0] == before[0], "a login of a known user asked the primary"
    assert after[1] > before[1]
    # lastauth went to the primary (a write to the replica would have failed: read_only)
    lastauth = rows(site.primary, "SELECT user, domain, remote_ip FROM lastauth")
    assert lastauth == [("bob", "example.com", REMOTE_IP)]
    assert not [line for line in site.syslog_lines() if "not recorded" in line]


def test_a_row_only_the_replica_has_is_what_a_login_reads(site: Tree) -> None:
    """Reads really come from the replica: change bob's hash there alone (root, no binlog)."""
    conn = root_connection(site.servers[1])
    with conn, conn.cursor() as cur:
        cur.execute("SET SESSION sql_log_bin = 0")
        cur.execute(f"UPDATE `{site.replica['database']}`.vpopmail SET pw_passwd = %s WHERE pw_name = 'bob'",
                    ("$1$salt$ZotB0P4vdy1Zq3wo7P0Fw/",))  # not "secret"
    assert login(site, "bob@example.com").returncode == 1
    conn = root_connection(site.servers[1])
    with conn, conn.cursor() as cur:  # put it back as the primary has it
        cur.execute(f"UPDATE `{site.replica['database']}`.vpopmail SET pw_passwd = %s WHERE pw_name = 'bob'",
                    (site.bob.passwd,))
    assert login(site, "bob@example.com").returncode == 0


# ------------------------------------------------------------------ replication lag


def test_a_user_added_on_the_primary_is_not_bounced_while_the_replica_lags(site: Tree) -> None:
    primary, replica = site.servers
    stop_sql_thread(replica)
    done = vadduser(site, "carol@example.com", "carolpw")
    assert done.returncode == 0, done.stderr
    assert rows(site.replica, "SELECT pw_name FROM vpopmail WHERE pw_name = 'carol'") == []
    carol_dir = user_dir(site, site.primary, "carol")

    delivered = site.deliver("carol@example.com", MESSAGE)
    assert delivered.returncode == 0, delivered.stderr + delivered.stdout
    assert [mail.endswith(b"after the lag\n") for mail in new_mail(carol_dir)] == [True]
    assert login(site, "carol@example.com", "carolpw").returncode == 0

    # a user that is on neither: bounced, refused, after one more query on the primary
    before = com_select(primary)
    assert login(site, "dave@example.com").returncode == 1
    assert com_select(primary) == before + 1
    bounced = site.deliver("dave@example.com", MESSAGE)
    assert bounced.returncode == 100, bounced.stdout
    assert site.syslog_lines()[-1].endswith(f"vpopmail user not found dave@example.com:{REMOTE_IP}")

    start_sql_thread(replica)
    wait_for_replica(primary, replica)
    assert rows(site.replica, "SELECT pw_name FROM vpopmail WHERE pw_name = 'carol'") == [("carol",)]


def test_a_billing_row_with_a_blank_dir_during_the_lag(site: Tree) -> None:
    """The row is on the primary only; its pw_dir is filled there, once."""
    stop_sql_thread(site.servers[1])
    billing_row(site, "erin")
    delivered = site.deliver("erin@example.com", MESSAGE)
    assert delivered.returncode == 0, delivered.stdout
    erin_dir = user_dir(site, site.primary, "erin")
    assert erin_dir and len(new_mail(erin_dir)) == 1


def test_a_user_deleted_on_the_primary_but_still_on_the_replica(site: Tree) -> None:
    """Not worth more than the lag: the replica's answer is used (the mail goes to the old dir)."""
    stop_sql_thread(site.servers[1])
    mysql_rows(site.primary, "DELETE FROM vpopmail WHERE pw_name = 'bob'")
    assert site.deliver("bob@example.com", MESSAGE).returncode == 0
    assert len(new_mail(site.bob.dir)) == 1


def test_qmail_getpw_asks_the_primary_before_alias(pair: tuple[dict[str, Any], dict[str, Any]],
                                                   dbs: tuple[dict[str, Any], dict[str, Any]]) -> None:
    primary_db, replica_db = dbs
    load_qmail_schema(primary_db)
    wait_for_replica(*pair)
    with QmailMysqlTree(None, mysql_connect_timeout=1, mysql_query_timeout=3) as site:
        site.db = primary_db
        site.write_sqlserver(
            f"server localhost\nlogin {replica_db['user']}\npassword {replica_db['password']}\n"
            f"db {replica_db['database']}\nsocket {replica_db['unix_socket']}\n"
            f"update_socket {primary_db['unix_socket']}\n")
        alias_home = site.home("home/alias")
        site.mailbox("alias", POPUSER_UID, USERS_GID, alias_home)
        wait_for_replica(*pair)
        stop_sql_thread(pair[1])
        frank_home = site.home("home/frank")
        site.mailbox("frank", POPUSER_UID, USERS_GID, frank_home)  # on the primary only
        done = site.getpw("frank")
        assert done.returncode == 0, done.stderr
        assert done.stdout == getpw_fields("frank", POPUSER_UID, USERS_GID, frank_home, "", "")
        unknown = site.getpw("nobody")
        assert unknown.stdout == getpw_fields("alias", POPUSER_UID, USERS_GID, alias_home, "-", "nobody")


# ------------------------------------------------------------------ faults


def write_lines(tree: Tree, read: dict[str, Any], update: dict[str, Any]) -> None:
    tree.write_etc("vpopmail.mysql", f"{mysql_line(read, tcp=True)}\n{mysql_line(update, tcp=True)}\n",
                   mode=0o600)
    own_credentials(tree)


def test_replica_down_the_primary_answers(site: Tree, dead_mysql: dict[str, Any]) -> None:
    write_lines(site, dead_mysql, site.primary)
    assert login(site, "bob@example.com").returncode == 0
    assert site.deliver("bob@example.com", MESSAGE).returncode == 0
    assert site.deliver("nobody@example.com", MESSAGE).returncode == 100


def test_primary_down_reads_go_on_and_wished_for_writes_are_skipped(site: Tree,
                                                                     dead_mysql: dict[str, Any]) -> None:
    billing_row(site, "erin")
    wait_for_replica(*site.servers)
    write_lines(site, site.replica, dead_mysql)
    assert login(site, "bob@example.com").returncode == 0  # lastauth is only wished for
    assert [line for line in site.syslog_lines() if "lastauth not recorded bob@example.com" in line]
    assert site.deliver("bob@example.com", MESSAGE).returncode == 0
    # a blank pw_dir needs the primary: deferred, not lost
    assert site.deliver("erin@example.com", MESSAGE).returncode == 111
    # "no such user" cannot be confirmed: deferred, not bounced
    assert site.deliver("nobody@example.com", MESSAGE).returncode == 111
    assert login(site, "nobody@example.com").returncode == 111


def test_both_down_everything_is_temporary(site: Tree, dead_mysql: dict[str, Any]) -> None:
    other = dict(dead_mysql, unix_socket=dead_mysql["unix_socket"] + ".2")
    write_lines(site, dead_mysql, other)
    assert login(site, "bob@example.com").returncode == 111
    assert site.deliver("bob@example.com", MESSAGE).returncode == 111
    assert site.deliver("nobody@example.com", MESSAGE).returncode == 111


def test_a_hung_replica_is_given_up_on(site: Tree) -> None:
    with stopped(site.servers[1]):
        done = login(site, "bob@example.com")  # connect timeout 1 s, then the primary
        assert done.returncode == 0, done.stderr
        delivered = site.deliver("bob@example.com", MESSAGE, timeout=20)
        assert delivered.returncode == 0, delivered.stdout
    assert len(new_mail(site.bob.dir)) == 1


def test_a_hung_primary_does_not_hold_a_login(site: Tree) -> None:
    with stopped(site.servers[0]):
        done = login(site, "bob@example.com")
        assert done.returncode == 0, done.stderr
        assert [line for line in site.syslog_lines() if "lastauth not recorded" in line]
        assert site.deliver("nobody@example.com", MESSAGE, timeout=20).returncode == 111


def test_admin_tools_never_write_to_the_replica(site: Tree) -> None:
    """vadduser reads what it is about to change from the primary: a user that is on the primary
    only (the lag) already exists for it."""
    stop_sql_thread(site.servers[1])
    assert vadduser(site, "gina@example.com", "pw1").returncode == 0
    again = vadduser(site, "gina@example.com", "pw2")
    assert again.returncode != 0 and "User already exists" in again.stdout + again.stderr
    assert rows(site.replica, "SELECT pw_name FROM vpopmail WHERE pw_name = 'gina'") == []


def test_user_dirs_are_owned_by_the_domain(site: Tree) -> None:
    stop_sql_thread(site.servers[1])
    assert vadduser(site, "hana@example.com", "pw").returncode == 0
    stat = os.stat(user_dir(site, site.primary, "hana"))
    assert (stat.st_uid, stat.st_gid) == (VPOPMAIL_UID, VPOPMAIL_GID)


Pair = tuple[dict[str, Any], dict[str, Any]]


def test_vmail_sql_popbox_added_on_the_primary_during_the_lag(pair: Pair, dbs: Pair) -> None:
    from test_vmail_sql import MD5_SECRET, SCHEMA, add_domain, add_popbox, owned_dir, write_credentials

    primary_db, replica_db = dbs
    load_schema(primary_db, SCHEMA)
    with Tree(store="vmail-sql", mysql_connect_timeout=1, mysql_query_timeout=3) as tree:
        owned_dir(tree.root / "conf", 0, 0, 0o755)
        tree.vmail_creds = tree.root / "conf" / "vmail-sql.mysql"
        write_credentials(tree, replica_db, primary_db)
        tree.write_settings(vmail_sql_credentials=tree.vmail_creds)
        owned_dir(tree.root / "spool", 0, 0, 0o755)
        mail = owned_dir(tree.root / "spool" / "example.com")
        add_domain(primary_db, "example.com", "89", mail)
        wait_for_replica(*pair)
        stop_sql_thread(pair[1])
        add_popbox(primary_db, "ivy", "{md5}" + MD5_SECRET, "ivy.mbox")  # the primary only
        delivered = tree.deliver("ivy@example.com", MESSAGE, domain_dir=mail)
        assert delivered.returncode == 0, delivered.stdout
        assert b"after the lag" in (mail / "ivy.mbox").read_bytes()
        done, _record = tree.login(fd3_payload("ivy@example.com", "secret", b"<1.2@mail>"))
        assert done.returncode == 0, done.stderr
        assert tree.deliver("nobody@example.com", MESSAGE, domain_dir=mail).returncode == 100


# ------------------------------------------------------------------ through vlookupd


def test_through_the_daemon_the_lag_loses_nothing_either(site: Tree) -> None:
    """vlookupd's workers read the replica; a "no such user" is confirmed on the primary (the
    client asks again with ``primary``, or the daemon's own login decision does), and the next
    request reads the replica again."""
    from lookupd import Daemon

    primary, replica = site.servers
    with Daemon(site, workers=1):
        assert login(site, "bob@example.com").returncode == 0
        stop_sql_thread(replica)
        assert vadduser(site, "kim@example.com", "kimpw").returncode == 0
        delivered = site.deliver("kim@example.com", MESSAGE)
        assert delivered.returncode == 0, delivered.stdout
        assert len(new_mail(user_dir(site, site.primary, "kim"))) == 1
        assert login(site, "kim@example.com", "kimpw").returncode == 0
        assert site.deliver("nobody@example.com", MESSAGE).returncode == 100
        assert login(site, "nobody@example.com").returncode == 1
        # back on the replica: a row only the replica has is what the daemon reads
        before = com_select(primary)
        assert login(site, "bob@example.com").returncode == 0
        assert com_select(primary) == before


def test_the_daemon_keeps_working_when_the_replica_dies(site: Tree) -> None:
    from lookupd import Daemon

    with Daemon(site, workers=1):
        assert login(site, "bob@example.com").returncode == 0
        with stopped(site.servers[1]):
            done = login(site, "bob@example.com")
            assert done.returncode == 0, done.stderr
            assert site.deliver("bob@example.com", MESSAGE, timeout=30).returncode == 0
        assert login(site, "bob@example.com").returncode == 0
