"""The test infrastructure itself: MariaDB, real fd 3, the recorder, Dovecot as a checkpassword client."""

from __future__ import annotations

import imaplib
import json
import os
import poplib
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest
from helpers import (
    VENV_BIN,
    VPOPMAIL_GID,
    VPOPMAIL_UID,
    fd3_payload,
    make_home,
    remove_tree,
    run_checkpassword,
    shared_tmpdir,
    write_recorder,
)

# --------------------------------------------------------------------------------------------------
# MariaDB


def _query_one(**kwargs: Any) -> tuple[Any, ...]:
    conn = pymysql.connect(connect_timeout=5, **kwargs)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT VERSION(), CURRENT_USER(), DATABASE(), @@character_set_database")
            row = cur.fetchone()
            assert row is not None
            return row
    finally:
        conn.close()


def test_mysql_app_user_over_socket_and_tcp(mysql_db: dict[str, Any]) -> None:
    creds = {"user": mysql_db["user"], "password": mysql_db["password"], "database": mysql_db["database"]}
    version, user, database, charset = _query_one(unix_socket=mysql_db["unix_socket"], **creds)
    assert "MariaDB" in version
    assert user == f"{mysql_db['user']}@localhost"
    assert database == mysql_db["database"]
    assert charset == "utf8mb4"
    version, user, database, _ = _query_one(host=mysql_db["host"], port=mysql_db["port"], **creds)
    assert "MariaDB" in version
    assert user == f"{mysql_db['user']}@%"
    assert database == mysql_db["database"]


def test_mysql_app_user_can_create_tables_and_root_kwargs_work(mysql_db: dict[str, Any]) -> None:
    conn = pymysql.connect(
        unix_socket=mysql_db["unix_socket"], user=mysql_db["user"], password=mysql_db["password"],
        database=mysql_db["database"], autocommit=True,
    )
    with conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE t (id INT PRIMARY KEY, name VARCHAR(64))")
        cur.execute("INSERT INTO t VALUES (%s, %s)", (1, "ünïcode"))
        cur.execute("SELECT name FROM t")
        assert cur.fetchone() == ("ünïcode",)
    root = pymysql.connect(**mysql_db["root"])
    with root, root.cursor() as cur:
        cur.execute("SELECT CURRENT_USER()")
        assert cur.fetchone() == ("root@localhost",)


def test_mysql_db_is_fresh_per_test(mariadb: dict[str, Any], mysql_db: dict[str, Any]) -> None:
    conn = pymysql.connect(unix_socket=mariadb["unix_socket"], user="root", password="")
    with conn, conn.cursor() as cur:
        cur.execute(f"SHOW TABLES FROM `{mysql_db['database']}`")
        assert cur.fetchall() == ()
        cur.execute("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE 't\\_%%'")
        assert cur.fetchone() == (1,)  # the previous test's database was dropped


def test_dead_mysql_refuses_quickly(dead_mysql: dict[str, Any]) -> None:
    started = time.monotonic()
    creds = {"user": dead_mysql["user"], "password": dead_mysql["password"], "connect_timeout": 5}
    with pytest.raises(pymysql.err.OperationalError):
        pymysql.connect(unix_socket=dead_mysql["unix_socket"], **creds)
    with pytest.raises(pymysql.err.OperationalError):
        pymysql.connect(host=dead_mysql["host"], port=dead_mysql["port"], **creds)
    assert time.monotonic() - started < 2


# --------------------------------------------------------------------------------------------------
# run_checkpassword: a real fd 3


def test_fd3_delivers_bytes_and_eof() -> None:
    payload = fd3_payload("alice@example.com", "secret", "<123.456@host>")
    res = run_checkpassword(["/bin/sh", "-c", "cat <&3"], payload, {})
    assert res.returncode == 0, res.stderr
    assert res.stdout == payload


def test_fd3_none_means_closed() -> None:
    res = run_checkpassword(["/bin/sh", "-c", "cat <&3"], None, {})
    assert res.returncode != 0
    assert b"3" in res.stderr  # dash: "3: Bad file descriptor"


def test_fd3_is_read_only_end() -> None:
    res = run_checkpassword(["/bin/sh", "-c", "echo x >&3"], b"", {})
    assert res.returncode != 0


def test_fd3_large_payload() -> None:
    payload = os.urandom(300_000)
    res = run_checkpassword(["/bin/sh", "-c", "cat <&3"], payload, {})
    assert res.returncode == 0
    assert res.stdout == payload


def test_exact_environment_and_stdin() -> None:
    res = run_checkpassword(["/usr/bin/env"], b"", {"ONLY": "this"})
    assert res.stdout == b"ONLY=this\n"
    res = run_checkpassword(["/bin/cat"], None, {}, stdin=b"from stdin")
    assert res.stdout == b"from stdin"
    res = run_checkpassword(["/bin/cat"], None, {})
    assert res.stdout == b""  # /dev/null


def test_timeout_kills_child() -> None:
    started = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        run_checkpassword(["/bin/sleep", "30"], b"", {}, timeout=0.5)
    assert time.monotonic() - started < 5


def test_only_stdio_and_fd3_are_inherited(world_tmp: Path) -> None:
    recorder = write_recorder(world_tmp)
    leaked = os.open("/dev/null", os.O_RDONLY)  # inheritable on purpose: must still not leak
    os.set_inheritable(leaked, True)
    try:
        out = world_tmp / "with.json"
        assert run_checkpassword([recorder, str(out)], b"x", {}).returncode == 0
        assert json.loads(out.read_text())["fds"] == [0, 1, 2, 3]
        out = world_tmp / "without.json"
        assert run_checkpassword([recorder, str(out)], None, {}).returncode == 0
        assert json.loads(out.read_text())["fds"] == [0, 1, 2]
    finally:
        os.close(leaked)


# --------------------------------------------------------------------------------------------------
# Recorder, shared dirs, the venv as uid 89


def test_recorder_as_vpopmail(world_tmp: Path) -> None:
    recorder = write_recorder(world_tmp)
    out = world_tmp / "rec.json"
    res = subprocess.run(
        [recorder, str(out), "more", "args"], env={"A": "1"}, cwd="/", capture_output=True,
        user=VPOPMAIL_UID, group=VPOPMAIL_GID, extra_groups=[], timeout=20,
    )
    assert res.returncode == 0, res.stderr
    rec = json.loads(out.read_text())
    assert rec["argv"] == [recorder, str(out), "more", "args"]
    assert rec["env"] == {"A": "1"}  # exactly what execve passed
    assert rec["cwd"] == "/"
    assert (rec["uid"], rec["euid"], rec["gid"], rec["egid"]) == (89, 89, 89, 89)
    assert rec["groups"] == []
    assert out.stat().st_uid == 89


def test_recorder_exec(world_tmp: Path) -> None:
    recorder = write_recorder(world_tmp)
    out = world_tmp / "rec.json"
    res = subprocess.run(
        [recorder, str(out)], env={"RECORD_EXEC": "/usr/bin/env", "B": "2"}, capture_output=True, timeout=20
    )
    assert res.returncode == 0
    assert sorted(res.stdout.splitlines()) == [b"B=2", b"RECORD_EXEC=/usr/bin/env"]  # no LC_CTYPE added
    assert json.loads(out.read_text())["env"]["B"] == "2"


def test_shared_tmpdir_mode() -> None:
    path = shared_tmpdir()
    try:
        assert path.stat().st_mode & 0o7777 == 0o1777
        assert str(path).startswith("/tmp/")
    finally:
        remove_tree(path)


def test_venv_usable_by_vpopmail() -> None:
    """The programs run as uid 89 under qmail-local: the venv interpreter must work for that uid."""
    res = subprocess.run(
        [str(VENV_BIN / "python"), "-I", "-c", "import os, pymysql, cdblib, passlib; print(os.getuid())"],
        env={}, cwd="/", capture_output=True, user=VPOPMAIL_UID, group=VPOPMAIL_GID, extra_groups=[],
        timeout=30,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout == b"89\n"


# --------------------------------------------------------------------------------------------------
# Dovecot with a checkpassword stub

_STUB = """#!/usr/bin/python3 -I
import json, os, sys
data = b""
while True:
    chunk = os.read(3, 4096)
    if not chunk:
        break
    data += chunk
homes = os.environ["STUB_HOMES"]
login, password = data.split(b"\\0")[:2]
with open(os.path.join(homes, "last.json"), "w") as f:
    json.dump({"argv": sys.argv, "env": dict(os.environ), "fd3": data.decode("latin-1")}, f)
if password != b"good":
    sys.exit(1)
os.environ["USER"] = login.decode()
os.environ["HOME"] = os.path.join(homes, login.decode())
os.environ["EXTRA"] = "userdb_uid userdb_gid"
os.environ["userdb_uid"] = "89"
os.environ["userdb_gid"] = "89"
os.execv(sys.argv[1], sys.argv[1:])
"""


@pytest.fixture(scope="module")
def stub_dovecot(dovecot_factory: Any) -> Iterator[dict[str, Any]]:
    stub_dir = Path(tempfile.mkdtemp(prefix="stub-", dir="/tmp"))
    stub_dir.chmod(0o755)
    stub = stub_dir / "checkpassword"
    stub.write_text(_STUB)
    stub.chmod(0o755)
    homes = shared_tmpdir()
    make_home(homes, "alice")
    instance = dovecot_factory(str(stub), {"STUB_HOMES": str(homes)})
    try:
        yield dict(instance, homes=homes)
    finally:
        instance["stop"]()
        remove_tree(stub_dir)
        remove_tree(homes)


def _last_call(dc: dict[str, Any]) -> dict[str, Any]:
    return json.loads((dc["homes"] / "last.json").read_text())


def test_dovecot_imap_login(stub_dovecot: dict[str, Any]) -> None:
    with imaplib.IMAP4("127.0.0.1", stub_dovecot["imap_port"], timeout=20) as imap:
        typ, _ = imap.login("alice", "good")
        assert typ == "OK"
        typ, _ = imap.select("INBOX")
        assert typ == "OK"
    call = _last_call(stub_dovecot)
    assert call["fd3"] == "alice\0good\0\0"
    assert call["argv"][1:] == ["/usr/lib/dovecot/checkpassword-reply"]
    assert "PATH" not in call["env"]
    assert call["env"]["SERVICE"] == "imap"
    maildir = stub_dovecot["homes"] / "alice" / "Maildir"
    assert maildir.is_dir()
    assert maildir.stat().st_uid == 89  # mail process ran as the uid the program returned


def test_dovecot_imap_bad_password(stub_dovecot: dict[str, Any]) -> None:
    with imaplib.IMAP4("127.0.0.1", stub_dovecot["imap_port"], timeout=20) as imap:
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            imap.login("alice", "bad")


def test_dovecot_pop3_login(stub_dovecot: dict[str, Any]) -> None:
    pop = poplib.POP3("127.0.0.1", stub_dovecot["pop3_port"], timeout=20)
    try:
        pop.user("alice")
        assert pop.pass_("good").startswith(b"+OK")
        assert pop.stat() == (0, 0)
    finally:
        pop.quit()
    assert _last_call(stub_dovecot)["env"]["SERVICE"] == "pop3"


def test_dovecot_pop3_bad_password(stub_dovecot: dict[str, Any]) -> None:
    pop = poplib.POP3("127.0.0.1", stub_dovecot["pop3_port"], timeout=20)
    try:
        pop.user("alice")
        with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
            pop.pass_("bad")
    finally:
        pop.close()
