"""vdelivermail on the MySQL store, against the session's real MariaDB.

Each test gets a fresh database (``mysql_db``) holding conf/schema/vpopmail.sql and a sandbox tree
with ``store = mysql`` whose ``etc/vpopmail.mysql`` (owned by the vpopmail uid, as an install
leaves it) points at it.  The installed vdelivermail runs as uid 89 with qmail-local's
environment (``Tree.deliver``); valias rows are inserted with PyMySQL as vpopmail's tools do.
The credentials name the server by TCP: the session server's socket lies in a root-only (0700)
directory that uid 89 cannot reach.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import VPOPMAIL_GID, VPOPMAIL_UID
from test_vdelivermail import HEADERS, MESSAGE, NO_USER, delivered, fake_inject, files, injected, make_maildir
from tree import Tree, load_schema, mysql_connect, mysql_rows, snapshot

DATABASE_DOWN = b"vdelivermail: deferred, database down\n"
VALIASES = b"vdelivermail: valiases processed\n"


@pytest.fixture
def db(mysql_db: dict[str, Any]) -> dict[str, Any]:
    load_schema(mysql_db)
    return mysql_db


def credentials(tree: Tree, read: dict[str, Any], update: dict[str, Any] | None = None, *,
                tcp: bool = True) -> None:
    """etc/vpopmail.mysql, owned by the vpopmail user (mode 0600) so that uid 89 can read it."""
    tree.write_mysql_credentials(read, update, tcp=tcp)
    os.chown(tree.etc / "vpopmail.mysql", VPOPMAIL_UID, VPOPMAIL_GID)


@pytest.fixture
def tree(db: dict[str, Any]) -> Iterator[Tree]:
    """store = mysql; example.com (alias domain alias.test) with bob (NOQUOTA)."""
    with Tree(store="mysql") as t:
        credentials(t, db)
        t.domain_path = t.add_domain("example.com", aliases=("alias.test",))
        t.bob = t.add_user("example.com", "bob", "secret")
        yield t


def add_valias(db: dict[str, Any], alias: str, *lines: str, domain: str = "example.com") -> None:
    conn = mysql_connect(db)
    with conn, conn.cursor() as cur:
        for line in lines:
            cur.execute("INSERT INTO valias (alias, domain, valias_line) VALUES (%s, %s, %s)",
                        (alias, domain, line))


def test_normal_delivery(tree: Tree) -> None:
    done = tree.deliver("bob@example.com", MESSAGE)
    assert (done.returncode, done.stdout, done.stderr) == (0, b"", b"")
    assert delivered(tree.bob.dir) == [HEADERS + MESSAGE]
    done = tree.deliver("bob@alias.test", MESSAGE)
    assert (done.returncode, done.stdout) == (0, b"")
    assert len(delivered(tree.bob.dir)) == 2


def test_unknown_user_and_locked_user(tree: Tree) -> None:
    tree.add_user("example.com", "locked", "secret", flags=0x10)
    done = tree.deliver("nobody@example.com", MESSAGE)
    assert (done.returncode, done.stdout) == (100, NO_USER)
    done = tree.deliver("locked@example.com", MESSAGE)
    assert (done.returncode, done.stdout) == (100, b"vdelivermail: account is locked email bounced "
                                                   b"locked@example.com\n")


def test_quota_from_the_sql_row(tree: Tree, db: dict[str, Any]) -> None:
    record = tree.add_user("example.com", "quser", "secret", quota="3000S")
    maildir = Path(record.dir, "Maildir")
    message = b"Subject: q\n\n" + b"z" * 2000 + b"\n"
    assert tree.deliver("quser@example.com", message).returncode == 0
    done = tree.deliver("quser@example.com", message)
    assert (done.returncode, done.stdout) == (100, b"user is over quota\n\n")
    assert len(files(maildir)) == 1
    assert (maildir / "maildirsize").read_text().split("\n")[0] == "3000S"


def test_blank_dir_is_created_and_stored_in_the_row(tree: Tree, db: dict[str, Any]) -> None:
    tree.add_user("example.com", "carol", "secret", blank_dir=True)
    assert mysql_rows(db, "SELECT pw_dir FROM vpopmail WHERE pw_name = 'carol'") == [("",)]
    done = tree.deliver("carol@example.com", MESSAGE)
    assert (done.returncode, done.stdout) == (0, b"")
    user_dir = tree.domain_path / "carol"
    assert mysql_rows(db, "SELECT pw_dir FROM vpopmail WHERE pw_name = 'carol'") == [(str(user_dir),)]
    st = (user_dir / "Maildir" / "new").stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (VPOPMAIL_UID, VPOPMAIL_GID, 0o750)
    assert delivered(user_dir) == [HEADERS.replace(b"bob@", b"carol@") + MESSAGE]


def test_unreadable_credentials_defer(tree: Tree) -> None:
    os.chown(tree.etc / "vpopmail.mysql", 0, 0)  # root's, mode 0600: uid 89 cannot read it
    text = f"{tree.etc}/vpopmail.mysql: cannot read credentials: Permission denied\n".encode()
    for address, instruction in (("bob@example.com", "bounce-no-mailbox"), ("nobody@example.com", "delete")):
        done = tree.deliver(address, MESSAGE, instruction)
        assert (done.returncode, done.stdout) == (111, text)
    assert delivered(tree.bob.dir) == []


# ------------------------------------------------------------------------------------------------
# valias


def test_valias_rows(tree: Tree, db: dict[str, Any]) -> None:
    base = fake_inject(tree)
    out = tree.root / "program-out"
    tree.write_settings(valias=True)
    add_valias(db, "info", "&carol@example.net", f"{tree.bob.dir}/Maildir/", f"|cat > {out}",
               "# a comment row", "dave@example.org")
    done = tree.deliver("info@example.com", MESSAGE)
    assert (done.returncode, done.stdout, done.stderr) == (0, VALIASES, b"")
    assert delivered(tree.bob.dir) == [HEADERS + MESSAGE]
    assert out.read_bytes() == MESSAGE
    records = injected(base)
    assert [r["argv"][1:] for r in records] == [["--", "carol@example.net"], ["--", "dave@example.org"]]
    for record in records:
        assert record["stdin"].encode("latin-1") == (
            b"Return-Path: <alice@example.org>\nDelivered-To: info@example.com\n" + MESSAGE)


def test_valias_overrides_a_user_and_is_off_by_default(tree: Tree, db: dict[str, Any]) -> None:
    other = make_maildir(tree.domain_path / "archive" / "Maildir")
    add_valias(db, "bob", f"{other}/")
    done = tree.deliver("bob@example.com", MESSAGE)  # valias = no: the row is not read
    assert (done.returncode, done.stdout) == (0, b"")
    assert len(delivered(tree.bob.dir)) == 1 and files(other) == []
    tree.write_settings(valias=True)
    done = tree.deliver("bob@example.com", MESSAGE)
    assert (done.returncode, done.stdout) == (0, VALIASES)
    assert len(delivered(tree.bob.dir)) == 1
    [archived] = files(other)
    assert archived.read_bytes() == b"Return-Path: <alice@example.org>\nDelivered-To: archive@example.com\n" \
        + MESSAGE
    done = tree.deliver("bob@alias.test", MESSAGE)  # rows are kept under the real domain
    assert (done.returncode, done.stdout) == (0, VALIASES)
    assert len(files(other)) == 2


def test_valias_prefix_default_wildcard(tree: Tree, db: dict[str, Any]) -> None:
    tree.write_settings(valias=True)
    log = tree.root / "defaults"
    add_valias(db, "bob-default", f'|echo "bob-default $DEFAULT" >> {log}')
    add_valias(db, "list-default", f'|echo "list-default $DEFAULT" >> {log}')
    add_valias(db, "list-a-default", f'|echo "list-a-default $DEFAULT" >> {log}')
    for address in ("bob-xyz@example.com", "list-a-b-c@example.com", "list-x@example.com",
                    "list-a-b@example.com"):
        done = tree.deliver(address, MESSAGE)
        assert (done.returncode, done.stdout) == (0, VALIASES), address
    assert log.read_text().splitlines() == ["bob-default xyz", "list-a-default b-c", "list-default x",
                                            "list-a-default b"]
    assert delivered(tree.bob.dir) == []
    done = tree.deliver("nolist-x@example.com", MESSAGE)
    assert (done.returncode, done.stdout) == (100, NO_USER)


def test_valias_program_failure_stops_the_rows(tree: Tree, db: dict[str, Any]) -> None:
    tree.write_settings(valias=True)
    add_valias(db, "info", "|exit 100", f"{tree.bob.dir}/Maildir/")
    done = tree.deliver("info@example.com", MESSAGE)
    assert done.returncode == 100
    assert delivered(tree.bob.dir) == []


# ------------------------------------------------------------------------------------------------
# Database down


@pytest.mark.parametrize(("valias", "tcp"), [(False, True), (True, True), (True, False)])
def test_database_down_defers_everything(tree: Tree, db: dict[str, Any], dead_mysql: dict[str, Any],
                                         valias: bool, tcp: bool) -> None:
    base = fake_inject(tree)
    tree.write_settings(valias=valias)
    catchall = make_maildir(tree.domain_path / "catchall" / "Maildir")
    credentials(tree, dead_mysql, tcp=tcp)
    message = tree.message_file(MESSAGE)
    before = snapshot(tree.root, ignore=("syslog.sock", "inject"))
    cases = [("bob@example.com", "bounce-no-mailbox"), ("nobody@example.com", "delete"),
             ("nobody@example.com", "bounce-no-mailbox"), ("nobody@example.com", f"{catchall}/"),
             ("nobody@example.com", "postmaster@example.net"), ("bob-xyz@example.com", "delete"),
             ("bob@alias.test", "delete")]
    for address, instruction in cases:
        done = tree.deliver(address, message, instruction)
        assert (done.returncode, done.stdout, done.stderr) == (111, DATABASE_DOWN, b""), instruction
        assert dead_mysql["password"].encode() not in done.stdout
    assert snapshot(tree.root, ignore=("syslog.sock", "inject")) == before
    assert injected(base) == []
    assert delivered(tree.bob.dir) == [] and files(catchall) == []


def test_database_refusing_access_defers_then_recovers(tree: Tree, db: dict[str, Any]) -> None:
    """The database user loses its rights (as good as a stopped server for us): 111, then fine again."""
    assert tree.deliver("bob@example.com", MESSAGE).returncode == 0
    import pymysql

    root = pymysql.connect(**db["root"], autocommit=True)
    with root, root.cursor() as cur:
        for host in ("%", "localhost"):
            cur.execute(f"REVOKE ALL PRIVILEGES ON `{db['database']}`.* FROM %s@%s", (db["user"], host))
    for address, instruction in (("bob@example.com", "bounce-no-mailbox"), ("nobody@example.com", "delete")):
        done = tree.deliver(address, MESSAGE, instruction)
        assert (done.returncode, done.stdout) == (111, DATABASE_DOWN)
    assert len(delivered(tree.bob.dir)) == 1
    root = pymysql.connect(**db["root"], autocommit=True)
    with root, root.cursor() as cur:
        for host in ("%", "localhost"):
            cur.execute(f"GRANT ALL PRIVILEGES ON `{db['database']}`.* TO %s@%s", (db["user"], host))
    assert tree.deliver("bob@example.com", MESSAGE).returncode == 0
    assert len(delivered(tree.bob.dir)) == 2


def test_update_server_down_during_blank_dir_creation(tree: Tree, db: dict[str, Any],
                                                      dead_mysql: dict[str, Any]) -> None:
    """pw_dir cannot be stored: 111; once the update server is back the message is delivered."""
    tree.add_user("example.com", "carol", "secret", blank_dir=True)
    credentials(tree, db, dead_mysql)
    done = tree.deliver("carol@example.com", MESSAGE)
    assert (done.returncode, done.stdout) == (111, DATABASE_DOWN)
    assert mysql_rows(db, "SELECT pw_dir FROM vpopmail WHERE pw_name = 'carol'") == [("",)]
    assert not (tree.domain_path / "carol").exists(), "the directory whose path was not stored is taken back"
    credentials(tree, db, db)
    done = tree.deliver("carol@example.com", MESSAGE)
    assert (done.returncode, done.stdout) == (0, b"")
    [(pw_dir,)] = mysql_rows(db, "SELECT pw_dir FROM vpopmail WHERE pw_name = 'carol'")
    assert pw_dir and delivered(pw_dir) == [HEADERS.replace(b"bob@", b"carol@") + MESSAGE]
