"""vchkpw on the MySQL store: the installed program against the session's real MariaDB.

Each test gets a fresh database (``mysql_db``) holding conf/schema/vpopmail.sql, loaded with PyMySQL,
and a sandbox tree whose ``etc/vpopmail.mysql`` points at it (read line, optional update line).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cdblib import Reader
from helpers import VPOPMAIL_GID, VPOPMAIL_UID, epoch, fd3_payload, program
from passlib import hash as ph
from tree import REMOTE_IP, Tree, load_schema, mysql_connect, mysql_rows, snapshot

BANNER = b"<4242.1700000000@mail.example.com>"
PASSWORD = "secret"
OK_LINE = f"vchkpw-pop3: (PLAIN) login success bob@example.com:{REMOTE_IP}"


def pop(login: str = "bob@example.com", password: str = PASSWORD, timestamp: bytes = BANNER) -> bytes:
    return fd3_payload(login, password, timestamp)


@pytest.fixture
def db(mysql_db: dict[str, Any]) -> dict[str, Any]:
    load_schema(mysql_db)
    return mysql_db


@pytest.fixture
def tree(db: dict[str, Any]) -> Iterator[Tree]:
    """store = mysql, one credentials line (socket); example.com with bob / secret."""
    with Tree(store="mysql", mysql=db) as t:
        t.add_domain("example.com")
        t.bob = t.add_user("example.com", "bob", PASSWORD)
        yield t


def insert_user(db: dict[str, Any], name: str, domain: str | None, password: str, *, pw_dir: str | None = "",
                flags: int = 0, table: str = "vpopmail") -> None:
    """A row as a billing system would insert it (md5-crypt hash, clear copy)."""
    columns = ["pw_name", "pw_passwd", "pw_uid", "pw_gid", "pw_gecos", "pw_dir", "pw_shell",
               "pw_clear_passwd"]
    values: list[Any] = [name, ph.md5_crypt.hash(password), 0, flags, name, pw_dir, "NOQUOTA", password]
    if domain is not None:
        columns.append("pw_domain")
        values.append(domain)
    conn = mysql_connect(db)
    with conn, conn.cursor() as cur:
        marks = ", ".join(["%s"] * len(values))
        cur.execute(f"INSERT INTO `{table}` ({', '.join(columns)}) VALUES ({marks})", values)


def test_login_success(tree: Tree, db: dict[str, Any]) -> None:
    assert mysql_rows(db, "SELECT pw_name, pw_domain, pw_dir FROM vpopmail") == [
        ("bob", "example.com", tree.bob.dir)]
    done, record = tree.login(pop())
    assert done.returncode == 0, done.stderr
    assert record is not None
    assert (record["uid"], record["gid"], record["groups"]) == (89, 89, [89])
    assert record["cwd"] == tree.bob.dir
    env = record["env"]
    assert (env["USER"], env["HOME"], env["SHELL"], env["VPOPUSER"]) == (
        "bob", tree.bob.dir, "NOLOGIN", "bob@example.com")
    assert tree.syslog_lines() == [OK_LINE]


def test_wrong_password_and_unknown_user(tree: Tree) -> None:
    done, record = tree.login(pop(password="wrong"))
    assert done.returncode == 1 and record is None
    done, record = tree.login(pop("nobody@example.com"))
    assert done.returncode == 1 and record is None
    assert tree.syslog_lines() == [f"vchkpw-pop3: password fail bob@example.com:{REMOTE_IP}",
                                   f"vchkpw-pop3: vpopmail user not found nobody@example.com:{REMOTE_IP}"]


def test_login_over_tcp(tree: Tree, db: dict[str, Any]) -> None:
    tree.write_mysql_credentials(db, tcp=True)
    done, record = tree.login(pop())
    assert done.returncode == 0, done.stderr
    assert record is not None


def test_user_from_a_billing_row(tree: Tree, db: dict[str, Any]) -> None:
    user_dir = tree.domain_dir("example.com") / "carol"
    insert_user(db, "carol", "example.com", "carol-pw", pw_dir=str(user_dir))
    done, record = tree.login(pop("Carol@Example.com", "carol-pw"))
    assert done.returncode == 0, done.stderr
    # the directory did not exist: recreated with its Maildir
    assert record["cwd"] == str(user_dir)
    assert (user_dir / "Maildir" / "new").is_dir()


def test_apop_with_clear_password_column(tree: Tree) -> None:
    challenge = b"<77.88@pop.example.com>"
    digest = hashlib.md5(challenge + PASSWORD.encode()).hexdigest()
    done, record = tree.login(pop(password=digest, timestamp=challenge))
    assert done.returncode == 0, done.stderr
    assert tree.syslog_lines() == [f"vchkpw-pop3: (APOP) login success bob@example.com:{REMOTE_IP}"]


def test_one_table_per_domain(db: dict[str, Any]) -> None:
    with Tree(store="mysql", mysql=db, many_domains=False) as tree:
        tree.add_domain("ex-ample.co.uk")
        tree.add_domain("example.com")
        tree.add_user("ex-ample.co.uk", "bob", PASSWORD)
        insert_user(db, "alice", None, "alice-pw", table="ex_ample_co_uk",
                    pw_dir=str(tree.domain_dir("ex-ample.co.uk") / "alice"))
        assert sorted(mysql_rows(db, "SELECT pw_name FROM ex_ample_co_uk")) == [("alice",), ("bob",)]
        assert mysql_rows(db, "SELECT pw_name FROM vpopmail") == []
        done, record = tree.login(pop("bob@ex-ample.co.uk"))
        assert done.returncode == 0, done.stderr
        assert record["cwd"] == str(tree.domain_dir("ex-ample.co.uk") / "bob")
        done, record = tree.login(pop("alice@ex-ample.co.uk", "alice-pw"))
        assert done.returncode == 0, done.stderr
        # a domain in users/assign whose table does not exist is a broken store, not "no such user"
        # (add_domain made the table, as vadddomain does: take it away)
        with mysql_connect(db) as conn, conn.cursor() as cur:
            cur.execute("DROP TABLE example_com")
        done, record = tree.login(pop("bob@example.com"))
        assert done.returncode == 111 and record is None
        assert b"doesn't exist" in done.stderr


def test_many_domains_table_is_not_read_when_off(tree: Tree) -> None:
    tree.write_settings(many_domains=False)
    done, record = tree.login(pop())  # bob is in `vpopmail`; the per-domain table is missing
    assert done.returncode == 111 and record is None
    assert b"example_com" in done.stderr


@pytest.mark.parametrize("blank", [None, ""])
def test_blank_pw_dir_is_created_and_written_back(tree: Tree, db: dict[str, Any], blank: str | None) -> None:
    insert_user(db, "carol", "example.com", "carol-pw", pw_dir=blank)
    before = snapshot(tree.root)
    done, record = tree.login(pop("carol@example.com", "wrong"))
    assert done.returncode == 1 and record is None
    assert snapshot(tree.root) == before
    assert mysql_rows(db, "SELECT pw_dir FROM vpopmail WHERE pw_name = 'carol'") == [(blank,)]

    done, record = tree.login(pop("carol@example.com", "carol-pw"))
    assert done.returncode == 0, done.stderr
    user_dir = tree.domain_dir("example.com") / "carol"
    assert record["cwd"] == str(user_dir) and record["env"]["HOME"] == str(user_dir)
    for path in (user_dir, user_dir / "Maildir", user_dir / "Maildir" / "cur", user_dir / "Maildir" / "new",
                 user_dir / "Maildir" / "tmp"):
        st = path.stat()
        assert (st.st_uid, st.st_gid) == (VPOPMAIL_UID, VPOPMAIL_GID), path
    assert mysql_rows(db, "SELECT pw_dir FROM vpopmail WHERE pw_name = 'carol'") == [(str(user_dir),)]
    done, record = tree.login(pop("carol@example.com", "carol-pw"))
    assert done.returncode == 0 and record["cwd"] == str(user_dir)


def test_lastauth_row(tree: Tree, db: dict[str, Any]) -> None:
    tree.clock = epoch("2027-03-01 00:00:00")
    done, record = tree.login(pop())
    assert done.returncode == 0, done.stderr
    rows = mysql_rows(db, "SELECT user, domain, remote_ip, timestamp FROM lastauth")
    assert len(rows) == 1
    user, domain, ip, stamp = rows[0]
    assert (user, domain, ip) == ("bob", "example.com", REMOTE_IP)
    assert stamp == tree.clock
    tree.login(pop(), TCPREMOTEIP="198.51.100.7")
    assert mysql_rows(db, "SELECT remote_ip FROM lastauth") == [("198.51.100.7",)]
    assert not (Path(tree.bob.dir) / "lastauth").exists()


def test_lastauth_table_created_on_demand(tree: Tree, db: dict[str, Any]) -> None:
    mysql_rows(db, "DROP TABLE lastauth")
    done, record = tree.login(pop())
    assert done.returncode == 0, done.stderr
    assert mysql_rows(db, "SELECT user, remote_ip FROM lastauth") == [("bob", REMOTE_IP)]


def test_no_lastauth_row_when_off_or_refused(tree: Tree, db: dict[str, Any]) -> None:
    tree.login(pop(password="wrong"))
    tree.write_settings(auth_logging=False)
    done, record = tree.login(pop())
    assert done.returncode == 0
    assert mysql_rows(db, "SELECT * FROM lastauth") == []


def test_relay_row_and_tcp_smtp_cdb(tree: Tree, db: dict[str, Any]) -> None:
    tree.write_settings(roaming_users=True)
    tree.write_etc("tcp.smtp", '127.:allow,RELAYCLIENT=""\n')
    tree.clock = epoch("2027-10-31 01:30:00")
    done, record = tree.login(pop())
    assert done.returncode == 0, done.stderr
    rows = mysql_rows(db, "SELECT ip_addr, timestamp FROM relay")
    assert rows == [(REMOTE_IP, str(tree.clock))]
    rules = dict(Reader((tree.etc / "tcp.smtp.cdb").read_bytes()).items())
    assert rules[REMOTE_IP.encode()] == b"+RELAYCLIENT=\0+RBLSMTPD=\0"
    assert rules[b"127."] == b"+RELAYCLIENT=\0"
    assert not (tree.etc / "open-smtp").exists()
    # SMTP logins do not open the relay
    done, record = tree.login(pop(timestamp=b""), TCPLOCALPORT="25", TCPREMOTEIP="198.51.100.7")
    assert done.returncode == 0, done.stderr
    assert [r[0] for r in mysql_rows(db, "SELECT ip_addr FROM relay")] == [REMOTE_IP]


def test_clearopensmtp_deletes_old_relay_rows(tree: Tree, db: dict[str, Any]) -> None:
    tree.write_settings(roaming_users=True, relay_clear_minutes=60)
    tree.write_etc("tcp.smtp", '127.:allow,RELAYCLIENT=""\n')
    tree.clock = now = epoch("2027-01-01 00:00:00")
    assert tree.login(pop())[0].returncode == 0
    for ip, stamp in (("203.0.113.9", now - 3600), ("203.0.113.8", now - 3599)):
        mysql_rows(db, "INSERT INTO relay (ip_addr, timestamp) VALUES (%s, %s)", (ip, str(stamp)))
    done = tree.run([program("clearopensmtp")], None, tree.env())
    assert (done.returncode, done.stdout) == (0, b"clearopensmtp: 1 relay entry removed\n"), done.stderr
    assert sorted(r[0] for r in mysql_rows(db, "SELECT ip_addr FROM relay")) == [REMOTE_IP, "203.0.113.8"]
    rules = dict(Reader((tree.etc / "tcp.smtp.cdb").read_bytes()).items())
    assert b"203.0.113.9" not in rules and REMOTE_IP.encode() in rules


def test_mysql_limits(tree: Tree, db: dict[str, Any]) -> None:
    mysql_rows(db, "INSERT INTO limits (domain, disable_pop) VALUES ('example.com', 1)")
    done, record = tree.login(pop())
    assert done.returncode == 0, "the limits table is read only with mysql_limits = yes"
    tree.write_settings(mysql_limits=True)
    done, record = tree.login(pop())
    assert done.returncode == 1 and record is None
    assert tree.syslog_lines()[-1] == f"vchkpw-pop3: pop access denied bob@example.com:{REMOTE_IP}"
    done, record = tree.login(pop(), TCPLOCALPORT="143")
    assert done.returncode == 0, done.stderr


def test_mysql_limits_without_a_row_uses_the_files(tree: Tree) -> None:
    tree.write_settings(mysql_limits=True)
    tree.write_etc("vlimits.default", "disable_imap\n")
    done, record = tree.login(pop(), TCPLOCALPORT="143")
    assert done.returncode == 1 and record is None
    done, record = tree.login(pop())
    assert done.returncode == 0, done.stderr


# ------------------------------------------------------------------------------------------------
# Read and update servers


def test_read_server_down_update_server_up(tree: Tree, db: dict[str, Any],
                                           dead_mysql: dict[str, Any]) -> None:
    tree.write_mysql_credentials(dead_mysql, db)
    done, record = tree.login(pop())
    assert done.returncode == 0, done.stderr
    assert record is not None and record["cwd"] == tree.bob.dir
    assert mysql_rows(db, "SELECT user FROM lastauth") == [("bob",)]
    done, record = tree.login(pop(password="wrong"))
    assert done.returncode == 1 and record is None


def test_read_server_down_over_tcp(tree: Tree, db: dict[str, Any], dead_mysql: dict[str, Any]) -> None:
    tree.write_mysql_credentials(dead_mysql, db, tcp=True)
    done, record = tree.login(pop())
    assert done.returncode == 0, done.stderr


@pytest.fixture
def replica(db: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A second database on the same server, same user: the "read" copy of ``db``."""
    import pymysql

    name = db["database"] + "_r"
    root = pymysql.connect(**db["root"], autocommit=True)
    with root, root.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}`")
        for host in ("%", "localhost"):
            cur.execute(f"GRANT ALL PRIVILEGES ON `{name}`.* TO %s@%s", (db["user"], host))
    copy = dict(db, database=name)
    try:
        load_schema(copy)
        yield copy
    finally:
        root = pymysql.connect(**db["root"], autocommit=True)
        with root, root.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")


def test_reads_from_the_read_server_writes_to_the_update_server(
        tree: Tree, db: dict[str, Any], replica: dict[str, Any]) -> None:
    insert_user(db, "carol", "example.com", "carol-pw", pw_dir="")
    insert_user(replica, "carol", "example.com", "carol-pw", pw_dir="")
    only_read_dir = tree.domain_dir("example.com") / "only-read"
    insert_user(replica, "only-read", "example.com", "r-pw", pw_dir=str(only_read_dir))
    insert_user(replica, "gone", "example.com", "g-pw", pw_dir="")  # deleted on the primary, not yet here
    tree.write_mysql_credentials(replica, db)
    done, record = tree.login(pop("only-read@example.com", "r-pw"))
    assert done.returncode == 0, done.stderr  # found through the read line
    # a blank pw_dir is filled on the primary, compare-and-set: a row that is not there is no success
    done, record = tree.login(pop("gone@example.com", "g-pw"))
    assert done.returncode == 111 and record is None
    assert b"vanished" in done.stderr
    assert not (tree.domain_dir("example.com") / "gone").exists()
    done, record = tree.login(pop("carol@example.com", "carol-pw"))
    assert done.returncode == 0, done.stderr
    user_dir = str(tree.domain_dir("example.com") / "carol")
    assert mysql_rows(db, "SELECT pw_dir FROM vpopmail WHERE pw_name = 'carol'") == [(user_dir,)]
    assert mysql_rows(replica, "SELECT pw_dir FROM vpopmail WHERE pw_name = 'carol'") == [("",)]
    assert sorted(mysql_rows(db, "SELECT user FROM lastauth")) == [("carol",), ("only-read",)]
    assert mysql_rows(replica, "SELECT user FROM lastauth") == []


@pytest.mark.parametrize("style", ["checkpassword", "vpopmail"])
def test_database_down(tree: Tree, dead_mysql: dict[str, Any], style: str) -> None:
    tree.write_settings(exit_codes=style)
    tree.write_mysql_credentials(dead_mysql, dead_mysql)
    for fd3 in (pop(), pop(password="wrong"), pop("nobody@example.com")):
        done, record = tree.login(fd3)
        assert done.returncode == 111, done.stderr
        assert record is None
        assert b"database down" in done.stderr
        assert dead_mysql["password"].encode() not in done.stderr
    lines = tree.syslog_lines()
    assert len(lines) == 3
    assert all(line.startswith("vchkpw-pop3: ") and "database down" in line for line in lines)
    assert not any("user not found" in line or "password fail" in line for line in lines)


def test_database_down_single_line(tree: Tree, dead_mysql: dict[str, Any]) -> None:
    tree.write_mysql_credentials(dead_mysql, tcp=True)
    done, record = tree.login(pop())
    assert done.returncode == 111 and record is None
    assert b"database down" in done.stderr


def test_database_refuses_the_credentials(tree: Tree, db: dict[str, Any]) -> None:
    wrong = dict(db, password="Not-The-Password-42")
    tree.write_mysql_credentials(wrong)
    done, record = tree.login(pop())
    assert done.returncode == 111 and record is None
    assert b"Not-The-Password-42" not in done.stderr
    assert b"Not-The-Password-42" not in b"".join(tree.syslog_records())


def test_update_server_down_at_blank_dir(tree: Tree, db: dict[str, Any], dead_mysql: dict[str, Any]) -> None:
    insert_user(db, "carol", "example.com", "carol-pw", pw_dir="")
    tree.write_mysql_credentials(db, dead_mysql)
    done, record = tree.login(pop("carol@example.com", "carol-pw"))
    assert done.returncode == 111, done.stderr
    assert record is None
    assert mysql_rows(db, "SELECT pw_dir FROM vpopmail WHERE pw_name = 'carol'") == [("",)]
    # The update server is back: the next login completes the job.
    tree.write_mysql_credentials(db, db)
    done, record = tree.login(pop("carol@example.com", "carol-pw"))
    assert done.returncode == 0, done.stderr
    user_dir = str(tree.domain_dir("example.com") / "carol")
    assert record["cwd"] == user_dir
    assert mysql_rows(db, "SELECT pw_dir FROM vpopmail WHERE pw_name = 'carol'") == [(user_dir,)]


def test_update_server_down_does_not_refuse_a_login(tree: Tree, db: dict[str, Any],
                                                    dead_mysql: dict[str, Any]) -> None:
    # lastauth cannot be written: logged, and the login goes on.
    tree.write_mysql_credentials(db, dead_mysql)
    done, record = tree.login(pop())
    assert done.returncode == 0, done.stderr
    assert record is not None
    lines = tree.syslog_lines()
    assert lines[0] == OK_LINE
    assert any("lastauth" in line for line in lines[1:])
