"""vlookupd itself: its protocol, who may ask what, the cache, the faults the clients survive.

The installed daemon runs for a sandbox tree (tests/lookupd.py); the clients are the installed
vchkpw, vdelivermail and qmail-getpw; MariaDB is the session's (stopped with SIGSTOP where a test
needs it hung) or a private one (stopped for good).  Nothing is mocked.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import VPOPMAIL_GID, VPOPMAIL_UID, fd3_payload, program, run_checkpassword
from lookupd import Daemon, as_uid, change_user, frame, read_frame
from qmysql import POPUSER_UID, USERS_GID, QmailMysqlTree, empty_tables, getpw_fields
from servers import private_mariadb
from tree import REMOTE_IP, Tree, load_schema, mysql_rows, read_record

PASSWORD = "secret"
MESSAGE = b"From: alice@example.org\nTo: bob@example.com\nSubject: hi\n\nhello\n"
NOBODY = 65534
DATABASE_DOWN = b"vdelivermail: deferred, database down\n"


def pop(login: str = "bob@example.com", password: str = PASSWORD) -> bytes:
    return fd3_payload(login, password, b"<1.2@pop.example.com>")


@pytest.fixture
def tree() -> Iterator[Tree]:
    with Tree(logging="y") as t:
        t.add_domain("example.com")
        t.bob = t.add_user("example.com", "bob", PASSWORD)
        t.carol = t.add_user("example.com", "carol", "carol-pw")
        yield t


@pytest.fixture
def daemon(tree: Tree) -> Iterator[Daemon]:
    with Daemon(tree) as d:
        tree.syslog_records()
        yield d


@pytest.fixture
def one_worker(tree: Tree) -> Iterator[Daemon]:
    """A daemon with one worker: every login meets the same cache (the cache is per worker)."""
    with Daemon(tree, workers=1) as d:
        tree.syslog_records()
        yield d


@pytest.fixture
def sql_tree(mysql_db: dict[str, Any]) -> Iterator[Tree]:
    """store = mysql over TCP (vdelivermail runs as uid 89), fast timeouts."""
    load_schema(mysql_db)
    with Tree(store="mysql", logging="y", mysql_connect_timeout=1, mysql_query_timeout=1) as t:
        t.write_mysql_credentials(mysql_db, tcp=True)
        os.chown(t.etc / "vpopmail.mysql", VPOPMAIL_UID, VPOPMAIL_GID)
        t.db = mysql_db
        t.add_domain("example.com")
        t.bob = t.add_user("example.com", "bob", PASSWORD)
        yield t


def messages(user_dir: str) -> list[bytes]:
    new = Path(user_dir) / "Maildir" / "new"
    return [path.read_bytes() for path in sorted(new.iterdir())]


def new_hash(password: str) -> str:
    from passlib import hash as ph

    return ph.md5_crypt.hash(password)


# ------------------------------------------------------------------------------------------------
# the protocol


def raw(daemon: Daemon, data: bytes) -> tuple[str, list[tuple[str, bytes]]] | None:
    """Send bytes as they are; the answer, or None when the daemon closed without one."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(daemon.socket))
        sock.sendall(data)
        try:
            return read_frame(sock)
        except ConnectionError:
            return None


def test_hello(daemon: Daemon) -> None:
    status, answer = daemon.ask("hello")
    assert status == "ok"
    assert (answer["version"], answer["store"], answer["workers"]) == (b"1", b"cdb", b"2")
    assert int(answer["pid"]) in daemon.worker_pids()


@pytest.mark.parametrize("data", [
    b"VL2 hello 0\n",  # another version
    b"VL1 Hello 0\n",  # not a word of ours
    b"VL1 hello x\n",
    b"VL1 hello 99999999\n",  # longer than a body may be
    b"VL1 user 3\nkey",  # a field without its NUL
    b"VL1 user 4\nkey\0",  # a key without a value
    b"GET / HTTP/1.0\r\n\r\n",
    b"x" * 200,  # no header line at all
])
def test_malformed_requests_are_bad(daemon: Daemon, data: bytes) -> None:
    answer = raw(daemon, data)
    assert answer is not None and answer[0] == "bad"
    assert daemon.ask("hello")[0] == "ok"  # and the daemon goes on


def test_unknown_request(daemon: Daemon) -> None:
    assert daemon.ask("frobnicate")[0] == "bad"


def test_several_requests_on_one_connection(daemon: Daemon) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(daemon.socket))
        sock.sendall(frame("domain", [("domain", "example.com")])
                     + frame("user", [("user", "bob"), ("domain", "example.com")]))
        first, second = read_frame(sock), read_frame(sock)
    assert first[0] == "ok" and dict(first[1])["real"] == b"example.com"
    assert second[0] == "ok" and dict(second[1])["name"] == b"bob"


def test_user_answers_hold_no_hash_unless_asked(daemon: Daemon, tree: Tree) -> None:
    status, answer = daemon.ask("user", [("user", "bob"), ("domain", "example.com")])
    assert status == "ok" and answer["dir"] == tree.bob.dir.encode()
    assert "passwd" not in answer and "clear" not in answer
    status, answer = daemon.ask("user", [("user", "bob"), ("domain", "example.com"), ("secrets", "1")])
    assert answer["passwd"] == tree.bob.passwd.encode() and answer["clear"] == PASSWORD.encode()
    assert daemon.ask("user", [("user", "nobody"), ("domain", "example.com")])[0] == "none"
    assert daemon.ask("domain", [("domain", "nowhere.test")])[0] == "none"


# ------------------------------------------------------------------------------------------------
# who may ask what (SO_PEERCRED)


def test_a_stranger_is_refused_everything(daemon: Daemon) -> None:
    requests = (("hello", []), ("user", [("user", "bob"), ("domain", "example.com"), ("secrets", "1")]),
                ("auth", [("login", "bob@example.com"), ("password", PASSWORD), ("service", "pop")]),
                ("getpw", [("name", "bob")]), ("stats", []), ("invalidate", []))
    for op, fields in requests:
        status, answer = daemon.ask(op, fields, uid=NOBODY)
        assert status == "denied", op
        assert set(answer) == {"message"} and b"uid 65534" in answer["message"]
    assert daemon.stats()["denied"] == 6


def test_a_stranger_running_vchkpw_gets_nothing_from_the_daemon(daemon: Daemon, tree: Tree) -> None:
    # vchkpw started by a uid the daemon does not trust: denied, so it does its direct lookup,
    # which (as uid 65534) cannot read the domain's vpasswd either.
    proc, out = spawn_vchkpw(tree, pop(), uid=NOBODY)
    assert proc.wait(timeout=30) == 111 and read_record(out) is None
    assert daemon.stats()["denied"] == 1


def spawn_vchkpw(tree: Tree, fd3: bytes, uid: int | None = None) -> tuple[subprocess.Popen[bytes], Path]:
    """vchkpw in the background with ``fd3`` on a real fd 3 (as ``uid``, when given)."""
    out = tree.record_path()
    r, w = os.pipe()
    os.write(w, fd3)
    os.close(w)

    def preexec() -> None:
        os.dup2(r, 3)
        os.set_inheritable(3, True)
        if uid is not None:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)

    proc = subprocess.Popen([program("vchkpw"), tree.recorder, str(out)], env=tree.env(),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            close_fds=False, preexec_fn=preexec)
    os.close(r)
    return proc, out


@pytest.fixture
def getpw_site(qmail_db: dict[str, Any]) -> Iterator[QmailMysqlTree]:
    empty_tables(qmail_db)
    with QmailMysqlTree(qmail_db) as site:
        site.iain = site.home("home/mail/iain")
        site.mailbox("iain", POPUSER_UID, USERS_GID, site.iain, password="iain-pw")
        yield site


def test_the_getpw_uid_gets_getpw_answers_only(getpw_site: QmailMysqlTree) -> None:
    qmailp = 64011
    with Daemon(getpw_site, lookup_getpw_users=str(qmailp)) as daemon:
        status, answer = daemon.ask("getpw", [("name", "iain")], uid=qmailp)
        assert status == "ok"
        assert (answer["uid"], answer["home"]) == (b"800", getpw_site.iain.encode())
        assert "password" not in answer
        assert daemon.ask("hello", uid=qmailp)[0] == "ok"
        for op in ("auth", "user", "stats", "invalidate"):
            assert daemon.ask(op, [("login", "iain"), ("password", "iain-pw"), ("service", "pop")],
                              uid=qmailp)[0] == "denied"
        # qmail-getpw as qmailp, which cannot read control/sqlserver (root, 0640): the daemon answers
        done = getpw_site.getpw("iain-slowlaris", user=qmailp, group=qmailp)
        wanted = getpw_fields("iain", POPUSER_UID, USERS_GID, getpw_site.iain, "-", "slowlaris")
        assert (done.returncode, done.stdout) == (0, wanted)
    done = getpw_site.getpw("iain", user=qmailp, group=qmailp)  # no daemon: its own lookup, refused
    assert (done.returncode, done.stdout) == (111, b"")


# ------------------------------------------------------------------------------------------------
# the cache


def test_a_password_changed_with_vpasswd_is_seen_at_once(daemon: Daemon, tree: Tree) -> None:
    for _ in range(3):  # cached now, in both workers or one
        assert tree.login(pop())[0].returncode == 0
    assert daemon.stats()["cache_hits"] >= 1
    done = subprocess.run([program("vpasswd"), "bob@example.com", "new-secret"], env=tree.env(),
                          capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert daemon.stats()["invalidations"] == 1
    for _ in range(3):
        assert tree.login(pop(password="new-secret"))[0].returncode == 0
        assert tree.login(pop())[0].returncode == 1


def test_a_refusal_is_never_served_from_the_cache(one_worker: Daemon, tree: Tree) -> None:
    # A new password set behind the admin tools' back (no invalidation) works at once: the cached
    # record refuses it, the daemon reads the record again and decides on that.
    for _ in range(3):
        assert tree.login(pop())[0].returncode == 0
    change_user(tree, "bob", passwd=new_hash("billing-pw"))
    for _ in range(3):
        assert tree.login(pop(password="billing-pw"))[0].returncode == 0
    stats = one_worker.stats()
    assert stats["cache_rechecks"] >= 1 and stats["cache_changed"] >= 1
    assert "password fail" not in " ".join(tree.syslog_lines())


def test_a_service_flag_lifted_behind_its_back_is_seen(daemon: Daemon, tree: Tree) -> None:
    change_user(tree, "carol", gid=0x02)  # NO_POP
    env = {"TCPLOCALPORT": "143"}
    for _ in range(3):  # IMAP is allowed: carol's record (with NO_POP) is cached
        assert tree.login(pop("carol@example.com", "carol-pw"), **env)[0].returncode == 0
    change_user(tree, "carol", gid=0)
    assert tree.login(pop("carol@example.com", "carol-pw"))[0].returncode == 0  # POP, not refused
    assert "pop access denied" not in " ".join(tree.syslog_lines())


def test_a_wrong_password_costs_one_check_and_is_logged_once(daemon: Daemon, tree: Tree) -> None:
    for _ in range(3):
        assert tree.login(pop())[0].returncode == 0
    tree.syslog_lines()
    before = daemon.stats()
    assert tree.login(pop(password="wrong"))[0].returncode == 1
    after = daemon.stats()
    assert tree.syslog_lines() == ["vchkpw-pop3: password fail bob@example.com:192.0.2.10"]
    # if the record came from the cache, it was read again and found unchanged: the refusal stands
    assert after["cache_changed"] == before["cache_changed"]


def test_stale_positive_answers_until_invalidated(one_worker: Daemon, tree: Tree) -> None:
    """Documented: a password changed behind the admin tools' back still lets the old one in while
    cached (at most lookup_cache_seconds); ``vlookupd --invalidate`` ends that at once."""
    for _ in range(4):
        assert tree.login(pop())[0].returncode == 0
    change_user(tree, "bob", passwd=new_hash("other"))
    results = {tree.login(pop())[0].returncode for _ in range(4)}
    assert results == {0}  # the cached record
    done = subprocess.run([program("vlookupd"), "--invalidate", "bob@example.com"], env=tree.env(),
                          capture_output=True, timeout=30)
    assert (done.returncode, done.stdout, done.stderr) == (0, b"", b"")
    assert {tree.login(pop())[0].returncode for _ in range(4)} == {1}


def test_cached_answers_expire(tree: Tree) -> None:
    with Daemon(tree, workers=1, lookup_cache_seconds=1) as daemon:
        assert tree.login(pop())[0].returncode == 0
        change_user(tree, "bob", passwd=new_hash("other"))
        assert tree.login(pop())[0].returncode == 0  # still cached
        time.sleep(1.2)
        assert tree.login(pop())[0].returncode == 1
        assert daemon.stats()["cache_misses"] >= 2


def test_the_cache_is_bounded(tree: Tree) -> None:
    for n in range(12):
        tree.add_user("example.com", f"u{n}", "pw")
    with Daemon(tree, workers=1, lookup_cache_entries=5) as daemon:
        for n in range(12):
            assert tree.login(pop(f"u{n}@example.com", "pw"))[0].returncode == 0
        assert daemon.stats()["cache_entries"] == 5


def test_no_cache_at_all(tree: Tree) -> None:
    with Daemon(tree, workers=1, lookup_cache_seconds=0) as daemon:
        for _ in range(3):
            assert tree.login(pop())[0].returncode == 0
        stats = daemon.stats()
        assert (stats["cache_hits"], stats["cache_entries"]) == (0, 0)


def test_deliveries_never_use_the_cache(daemon: Daemon, tree: Tree) -> None:
    assert tree.login(pop())[0].returncode == 0
    assert tree.deliver("bob@example.com", MESSAGE).returncode == 0
    change_user(tree, "bob", gid=0x10)  # BOUNCE_MAIL, behind the admin tools' back
    done = tree.deliver("bob@example.com", MESSAGE)
    assert (done.returncode, done.stdout) == (100, b"vdelivermail: account is locked email bounced "
                                                   b"bob@example.com\n")
    assert len(messages(tree.bob.dir)) == 1


# ------------------------------------------------------------------------------------------------
# faults: a dead, stopped or lost daemon; a database that goes away behind a running daemon


def test_a_socket_taken_by_another_uid_is_not_the_daemon(tree: Tree) -> None:
    """Someone binds the socket's name (here: in the tree's world-writable root) and says yes to
    everything: vchkpw (root) and vdelivermail do not take its word, they decide themselves."""
    path = tree.root / "fake.sock"
    tree.write_settings(lookup_socket=path)
    ok = frame("ok", [("name", "bob"), ("uid", 89), ("gid", 89), ("home", "/"), ("full_name", "bob@x"),
                      ("real", "example.com"), ("dir", "/tmp"), ("shell", "NOQUOTA")])
    code = ("import socket, sys\n"
            "s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(8); print('up', flush=True)\n"
            "while True:\n"
            "    c, _ = s.accept(); c.recv(65536); c.sendall(bytes.fromhex(sys.argv[2])); c.close()\n")
    fake = subprocess.Popen([sys.executable, "-I", "-c", code, str(path), ok.hex()], stdout=subprocess.PIPE,
                            preexec_fn=as_uid(NOBODY))
    try:
        assert fake.stdout is not None and fake.stdout.readline() == b"up\n"
        done, record = tree.login(pop(password="wrong"))
        assert (done.returncode, record) == (1, None)  # decided directly: a wrong password
        assert tree.deliver("nobody@example.com", MESSAGE).returncode == 100  # no such user, directly
    finally:
        fake.kill()
        fake.wait()


def test_without_a_daemon_everything_works_directly(tree: Tree) -> None:
    tree.write_settings(lookup_socket=tree.root / "vlookupd.sock")  # named, never started
    assert tree.login(pop())[0].returncode == 0
    assert tree.deliver("bob@example.com", MESSAGE).returncode == 0


def test_a_socket_left_by_a_killed_daemon(tree: Tree) -> None:
    daemon = Daemon(tree)
    daemon.kill()
    assert daemon.socket.exists()  # nobody listens: refused at once
    assert tree.login(pop())[0].returncode == 0
    assert tree.deliver("bob@example.com", MESSAGE).returncode == 0
    assert len(messages(tree.bob.dir)) == 1


def test_daemon_killed_mid_request(tree: Tree) -> None:
    daemon = Daemon(tree, lookup_timeout=60)
    daemon.pause()  # requests are accepted by the kernel and wait
    try:
        proc, out = spawn_vchkpw(tree, pop())
        message = tree.message_file(MESSAGE)
        delivery = subprocess.Popen(
            [program("vdelivermail"), "", "bounce-no-mailbox"], stdin=open(message, "rb"),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tree.domain_dir("example.com"),
            env=_delivery_env(tree, "bob@example.com"), user=VPOPMAIL_UID, group=VPOPMAIL_GID)
        time.sleep(0.5)
        assert proc.poll() is None and delivery.poll() is None  # both wait for the daemon
    finally:
        daemon.resume()
        daemon.kill()
    # the daemon is gone: both finish on their own, long before their 60 s timeout
    assert proc.wait(timeout=20) == 0
    assert read_record(out)["cwd"] == tree.bob.dir
    assert delivery.wait(timeout=20) == 0
    assert messages(tree.bob.dir) == [_headers("bob@example.com") + MESSAGE]  # once, nothing lost


def test_a_stopped_daemon_is_waited_for_lookup_timeout_only(tree: Tree) -> None:
    daemon = Daemon(tree, lookup_timeout=1)
    daemon.pause()
    try:
        started = time.monotonic()
        assert tree.login(pop())[0].returncode == 0
        assert tree.deliver("bob@example.com", MESSAGE).returncode == 0
        assert time.monotonic() - started < 20  # two waits of about 1 s, not a hang
    finally:
        daemon.resume()
        daemon.stop()
    assert len(messages(tree.bob.dir)) == 1


def _delivery_env(tree: Tree, address: str) -> dict[str, str]:
    from vpop.qmailenv import virtual_delivery_environ

    return virtual_delivery_environ(address, str(tree.domain_dir("example.com")), "alice@example.org",
                                    base={"PATH": "/usr/bin:/bin", "VPOP_CONFIG": str(tree.config)})


def _headers(address: str) -> bytes:
    return f"Return-Path: <alice@example.org>\nDelivered-To: {address}\n".encode()


def test_a_worker_that_dies_is_replaced(daemon: Daemon, tree: Tree) -> None:
    first = daemon.worker_pids()
    os.kill(first[0], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while len(set(daemon.worker_pids()) - set(first)) < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(daemon.worker_pids()) == 2 and first[0] not in daemon.worker_pids()
    for _ in range(4):
        assert tree.login(pop())[0].returncode == 0
    assert any("worker 0" in line or "worker 1" in line for line in tree.syslog_lines())


def test_stop_removes_the_socket(daemon: Daemon, tree: Tree) -> None:
    daemon.stop()
    assert not daemon.socket.exists()
    assert tree.login(pop())[0].returncode == 0


def run_vlookupd(tree: Tree, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([program("vlookupd"), *args], capture_output=True, timeout=30,
                          env={"PATH": "/usr/bin:/bin", "VPOP_CONFIG": str(tree.config)})


def test_a_second_daemon_refuses_to_start(daemon: Daemon, tree: Tree) -> None:
    done = run_vlookupd(tree)
    assert done.returncode == 111
    assert f"another vlookupd answers on {daemon.socket}".encode() in done.stderr
    assert daemon.ask("hello")[0] == "ok"


def test_no_socket_setting(tree: Tree) -> None:
    done = run_vlookupd(tree)
    assert (done.returncode, done.stderr) == (
        111, f"vlookupd: {tree.config}: lookup_socket is not set: vlookupd has no socket to serve\n".encode())


def test_lastauth_is_written_after_the_answer_and_its_failure_logged(sql_tree: Tree) -> None:
    """The daemon answers first and writes lastauth then (nothing in the answer waits for it): the
    row is there soon after, and a write that fails is logged with the client's pid, as directly."""
    tree = sql_tree
    with Daemon(tree, workers=1, lookup_cache_seconds=60) as daemon:
        tree.clock = 1_700_000_000
        for _ in range(2):  # from the database, then from the cache
            done = tree.login(pop())[0]
            assert done.returncode == 0
            assert eventually(lambda: mysql_rows(tree.db, "SELECT user, remote_ip, timestamp FROM lastauth")
                              == [("bob", REMOTE_IP, 1_700_000_000)])
            mysql_rows(tree.db, "DELETE FROM lastauth")
        assert daemon.stats()["cache_hits"] >= 1
        # a lastauth that cannot be written (a view in the table's place): logged, the login goes on
        mysql_rows(tree.db, "DROP TABLE lastauth")
        mysql_rows(tree.db, "CREATE VIEW lastauth AS SELECT 'x' AS user, 'y' AS domain, 'z' AS remote_ip, "
                            "0 AS timestamp")
        tree.syslog_records()
        done = tree.login(pop())[0]
        assert done.returncode == 0

        records: list[Any] = []

        def logged() -> bool:
            records.extend(tree.syslog_parsed())
            return any("lastauth not recorded bob@example.com" in r.message for r in records)

        assert eventually(logged)
        assert {r.pid for r in records} == {done.pid}
        success = f"vchkpw-pop3: (PLAIN) login success bob@example.com:{REMOTE_IP}"
        assert records[0].message == success  # the login's own line first, as directly


def test_a_login_does_not_wait_for_its_lastauth_write(sql_tree: Tree) -> None:
    """lastauth's table locked by another client: the login is answered all the same, and the row
    is written once the lock goes (the write waits in the daemon, not in the login)."""
    from tree import mysql_connect

    tree = sql_tree
    with Daemon(tree, workers=1, lookup_timeout=30, mysql_query_timeout=30):
        assert tree.login(pop())[0].returncode == 0
        mysql_rows(tree.db, "DELETE FROM lastauth")
        holder = mysql_connect(tree.db)
        try:
            with holder.cursor() as cur:
                cur.execute("LOCK TABLES lastauth WRITE")
            proc, out = spawn_vchkpw(tree, pop())
            assert proc.wait(timeout=20) == 0  # answered while lastauth is locked
            assert read_record(out)["cwd"] == tree.bob.dir
        finally:
            holder.close()  # the lock goes with the connection
        assert eventually(lambda: mysql_rows(tree.db, "SELECT user FROM lastauth") == [("bob",)])


def test_a_hung_database_behind_a_running_daemon(sql_tree: Tree, mariadb: dict[str, Any]) -> None:
    tree = sql_tree
    with Daemon(tree, lookup_timeout=30) as daemon:
        assert tree.login(pop())[0].returncode == 0
        pid = mariadb["proc"].pid
        os.kill(pid, signal.SIGSTOP)
        try:
            done, record = tree.login(pop())
            assert (done.returncode, record) == (111, None)
            assert done.stderr.startswith(b"vchkpw: database ")
            delivery = tree.deliver("bob@example.com", MESSAGE)
            assert (delivery.returncode, delivery.stdout) == (111, DATABASE_DOWN)
            assert daemon.stats()["temp"] >= 2  # the daemon's answers, not a client's own lookup
        finally:
            os.kill(pid, signal.SIGCONT)
        # the database is back: the daemon connects again by itself
        assert tree.login(pop())[0].returncode == 0
        assert tree.deliver("bob@example.com", MESSAGE).returncode == 0


def test_a_database_gone_behind_a_running_daemon() -> None:
    import pymysql

    with private_mariadb() as server, Tree(store="mysql", logging="y") as tree:
        root = pymysql.connect(unix_socket=server["unix_socket"], user="root", autocommit=True)
        with root.cursor() as cur:
            cur.execute("CREATE DATABASE vp")
            cur.execute("CREATE USER 'vp'@'%' IDENTIFIED BY 'vp-pw'")
            cur.execute("GRANT ALL ON vp.* TO 'vp'@'%'")
        root.close()
        db = {"host": "127.0.0.1", "port": server["port"], "unix_socket": server["unix_socket"], "user": "vp",
              "password": "vp-pw", "database": "vp"}
        load_schema(db)
        tree.write_mysql_credentials(db, tcp=True)
        os.chown(tree.etc / "vpopmail.mysql", VPOPMAIL_UID, VPOPMAIL_GID)
        tree.add_domain("example.com")
        tree.add_user("example.com", "bob", PASSWORD)
        with Daemon(tree) as daemon:
            assert tree.login(pop())[0].returncode == 0
            server["proc"].terminate()
            server["proc"].wait(timeout=30)
            for _ in range(3):
                done, record = tree.login(pop())
                assert (done.returncode, record) == (111, None)
                assert b"database down" in done.stderr
                delivery = tree.deliver("bob@example.com", MESSAGE)
                assert (delivery.returncode, delivery.stdout) == (111, DATABASE_DOWN)
            stats = daemon.stats()
            assert stats["temp"] >= 6 and stats["internal"] == 0


def test_qmail_getpw_with_the_database_hung(getpw_site: QmailMysqlTree, mariadb: dict[str, Any]) -> None:
    getpw_site.write_settings(mysql_connect_timeout=1, mysql_query_timeout=1)
    with Daemon(getpw_site, lookup_timeout=30) as daemon:
        assert getpw_site.getpw("iain").returncode == 0
        pid = mariadb["proc"].pid
        os.kill(pid, signal.SIGSTOP)
        try:
            done = getpw_site.getpw("iain")
            assert (done.returncode, done.stdout) == (111, b"")
            assert daemon.stats()["temp"] >= 1
        finally:
            os.kill(pid, signal.SIGCONT)


# ------------------------------------------------------------------------------------------------
# settings, statistics, the driver


def test_changed_settings_are_followed(daemon: Daemon, tree: Tree) -> None:
    assert tree.login(pop())[0].returncode == 0
    assert tree.syslog_lines() == ["vchkpw-pop3: (PLAIN) login success bob@example.com:192.0.2.10"]
    tree.write_settings(logging="e")  # successes are not logged at e
    assert tree.login(pop())[0].returncode == 0
    assert tree.syslog_lines() == []
    assert daemon.stats()["stale"] == 0


def eventually(check, timeout: float = 10) -> bool:
    """``check()`` is true now or becomes true within ``timeout`` seconds (signals are relayed)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_hup_reads_the_credentials_again(sql_tree: Tree) -> None:
    tree = sql_tree
    good = (tree.etc / "vpopmail.mysql").read_text()
    with Daemon(tree) as daemon:
        assert daemon.proc is not None
        assert tree.login(pop())[0].returncode == 0
        tree.write_mysql_credentials(dict(tree.db, password="not-the-password"), tcp=True)
        assert tree.login(pop())[0].returncode == 0  # its connections are still the old ones
        os.kill(daemon.proc.pid, signal.SIGHUP)
        assert eventually(lambda: tree.login(pop())[0].returncode == 111)
        (tree.etc / "vpopmail.mysql").write_text(good)
        os.kill(daemon.proc.pid, signal.SIGHUP)
        assert eventually(lambda: tree.login(pop())[0].returncode == 0)


def test_a_client_with_other_settings_is_not_answered(daemon: Daemon, tree: Tree) -> None:
    other = tree.root / "other.conf"
    other.write_text(tree.config.read_text() + "auth_logging = no\n")
    done, record = tree.login(pop(), VPOP_CONFIG=str(other))
    assert done.returncode == 0 and record is not None  # its own lookup
    assert daemon.stats()["stale"] == 1


def test_stats_command_and_signal(daemon: Daemon, tree: Tree) -> None:
    assert tree.login(pop())[0].returncode == 0
    assert tree.login(pop(password="wrong"))[0].returncode == 1
    done = subprocess.run([program("vlookupd"), "--stats"], env=tree.env(), capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr
    counters = dict(line.split(" ") for line in done.stdout.decode().splitlines())
    assert int(counters["requests"]) >= 2 and int(counters["ok"]) >= 1 and int(counters["refused"]) == 1
    assert int(counters["workers"]) == 2 and int(counters["rss_kib"]) > 0
    assert int(counters["latency_us"]) > 0
    tree.syslog_records()
    assert daemon.proc is not None
    os.kill(daemon.proc.pid, signal.SIGUSR1)
    deadline = time.monotonic() + 10
    while True:
        records = [r for r in tree.syslog_parsed() if r.tag == "vlookupd"]
        if records or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert records and records[0].pid == daemon.proc.pid
    assert records[0].message.startswith("stats connections=")
    assert " refused=1 " in records[0].message and " cache_hits=" in records[0].message


def launcher_python() -> str:
    """The interpreter of the installed launchers (their ``#!python -IS`` line)."""
    return Path(program("vchkpw")).read_text().split("\n")[0][2:].split()[0]


def importtime(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[bytes]:
    """The launcher run as ``python -IS -X importtime launcher args``: stderr lists every import."""
    return run_checkpassword([launcher_python(), "-IS", "-X", "importtime", *argv], **kw)


def test_no_database_driver_through_the_daemon(sql_tree: Tree, getpw_site: QmailMysqlTree) -> None:
    tree = sql_tree

    def imports(through: bool) -> dict[str, bytes]:
        if not through:
            tree.write_settings(lookup_socket="none")
            getpw_site.write_settings(lookup_socket="none")
        login = importtime([program("vchkpw"), "/bin/true"], fd3=pop(), env=tree.env())
        assert login.returncode == 0, login.stderr
        delivery = tree.deliver("bob@example.com", MESSAGE, argv=[
            launcher_python(), "-IS", "-X", "importtime", program("vdelivermail"), "", "bounce-no-mailbox"])
        assert delivery.returncode == 0, delivery.stderr
        getpw = importtime([program("qmail-getpw"), "iain"], fd3=None, env=getpw_site.program_env(),
                           cwd=getpw_site.qmail_home)
        assert getpw.returncode == 0, getpw.stderr
        return {"vchkpw": login.stderr, "vdelivermail": delivery.stderr, "qmail-getpw": getpw.stderr}

    with Daemon(tree), Daemon(getpw_site):
        for name, text in imports(True).items():
            assert b"import time:" in text and b"pymysql" not in text, name
            # the quick paths: not even os (see vchkpw.main, vdelivermail.main)
            assert not re.search(rb"\| +os\n", text), name
    for name, text in imports(False).items():  # the direct path does import it: the check can fail
        assert b"| pymysql" in text, name
        assert re.search(rb"\| +os\n", text), name


def test_a_file_where_the_socket_goes_is_left_alone(tree: Tree) -> None:
    """A lookup_socket that names an existing file (a typo) is not removed: vlookupd refuses to start."""
    daemon = Daemon(tree, start=False)
    daemon.socket.write_bytes(b"precious\n")
    env = {"PATH": "/usr/bin:/bin", "VPOP_CONFIG": str(tree.config)}
    done = subprocess.run([program("vlookupd")], env=env, stdin=subprocess.DEVNULL, capture_output=True,
                          timeout=30)
    assert done.returncode == 111, done
    assert b"is not a socket" in done.stdout + done.stderr
    assert daemon.socket.read_bytes() == b"precious\n"


def test_the_socket_is_made_mode_0666_by_its_bind(daemon: Daemon) -> None:
    """Any uid may connect (its peer credentials decide what it gets); no chmod by name is needed."""
    mode = os.lstat(daemon.socket).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o666
