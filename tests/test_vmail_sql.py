"""The vmail-sql store end to end: the installed vchkpw and vdelivermail against the session's MariaDB.

Each test gets a fresh database (``mysql_db``) holding conf/schema/vmail-sql.sql and a sandbox tree
(tests/tree.py) whose settings say ``store = vmail-sql`` and name a credentials file of the
``host|port-or-socket|user|password|db`` form (TCP: uid 89 cannot reach the server's socket).
The domain ``example.com`` (``unix_user`` '89') has its mail under ``<sandbox>/spool/example.com``
(owned by uid 89) and the ``domain_alias`` ``alias.test``; bob has a popbox (mbox file ``bob.mbox``,
password "secret" as ``{md5}``).

vchkpw runs as root with a real fd 3 and the recorder as the program to exec; vdelivermail runs as
uid/gid 89 with qmail-local's environment (``vpop.qmailenv``) and a regular message file on stdin.
Forwards go to a fake qmail-inject that records its argv and stdin.
"""

from __future__ import annotations

import hashlib
import json
import mailbox
import os
import pwd
import re
import secrets
import subprocess
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from helpers import REPO_ROOT, VPOPMAIL_GID, VPOPMAIL_UID, fd3_payload
from tree import REMOTE_IP, Tree, load_schema, mysql_line, mysql_rows

SCHEMA = REPO_ROOT / "conf" / "schema" / "vmail-sql.sql"
BANNER = b"<1896.697170952@pop.example.com>"
MD5_SECRET = "5ebe2294ecd0e0f08eab7690d2a6ee69"  # md5("secret")
BODY = b"Hello Bob,\nFrom the start.\n>From quoted once.\nFrom\n.\n"
QUOTED_BODY = b"Hello Bob,\n>From the start.\n>>From quoted once.\nFrom\n.\n"  # mboxrd
MESSAGE = (b"From: alice@example.org\nTo: bob@example.com\nSubject: hello\n"
           b"Message-ID: <1@example.org>\n\n" + BODY)
RETURN_PATH = b"Return-Path: <alice@example.org>\n"
NO_USER = b"Sorry, no mailbox here by that name. (#5.1.1)\n"
LOOPING = b"mail is looping\n"
DATABASE_DOWN = b"vdelivermail: deferred, database down\n"
FROM_LINE = re.compile(rb"^From alice@example\.org (Mon|Tue|Wed|Thu|Fri|Sat|Sun) "
                       rb"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d\d \d\d:\d\d:\d\d \d{4}\n")

FAKE_INJECT = r'''#!/usr/bin/python3 -I
"""qmail-inject stand-in: appends {argv, stdin, uid} as one JSON line to runs.jsonl next to it,
then exits with the number written in exit-code (0 when there is no such file)."""
import json
import os
import sys

here = os.path.dirname(os.path.abspath(sys.argv[0]))
entry = {"argv": sys.argv, "stdin": sys.stdin.buffer.read().decode("latin-1"), "uid": os.getuid()}
fd = os.open(os.path.join(here, "runs.jsonl"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
os.write(fd, (json.dumps(entry) + "\n").encode())
os.close(fd)
try:
    with open(os.path.join(here, "exit-code")) as f:
        sys.exit(int(f.read()))
except FileNotFoundError:
    sys.exit(0)
'''


# ------------------------------------------------------------------------------------------------
# Fixtures and helpers


def sql(db: Mapping[str, Any], statement: str, *args: Any) -> list[tuple[Any, ...]]:
    return mysql_rows(db, statement, args)


def owned_dir(path: Path, uid: int = VPOPMAIL_UID, gid: int = VPOPMAIL_GID, mode: int = 0o750) -> Path:
    path.mkdir(parents=True)
    os.chown(path, uid, gid)
    path.chmod(mode)
    return path


def add_domain(db: Mapping[str, Any], name: str, unix_user: str | None, path: Path | str | None) -> None:
    sql(db, "INSERT INTO domain (domain_name, unix_user, password_hash, path, max_popbox) "
            "VALUES (%s, %s, NULL, %s, 100)", name, unix_user, None if path is None else str(path))


def add_popbox(db: Mapping[str, Any], local: str, password_hash: str | None, mbox_name: str | None,
               domain: str = "example.com") -> None:
    sql(db, "INSERT INTO popbox (domain_name, local_part, password_hash, mbox_name) VALUES (%s, %s, %s, %s)",
        domain, local, password_hash, mbox_name)


def add_forwarder(db: Mapping[str, Any], local: str, remote: str, domain: str = "example.com") -> None:
    sql(db, "INSERT INTO forwarder (domain_name, local_part, remote_name) VALUES (%s, %s, %s)",
        domain, local, remote)


def write_credentials(tree: Tree, *lines: Mapping[str, Any], tcp: bool = True) -> Path:
    """The vmail-sql credentials file: read line, then the optional update line (uid 89, mode 0600).

    TCP by default: the session's server socket lies in a root-only directory, out of uid 89's reach.
    """
    path: Path = tree.vmail_creds
    text = "".join(mysql_line(db, tcp=tcp) + "\n" for db in lines)
    path.write_text("# read server, then update server\n" + text)
    os.chown(path, VPOPMAIL_UID, VPOPMAIL_GID)
    path.chmod(0o600)
    return path


@pytest.fixture
def db(mysql_db: dict[str, Any]) -> dict[str, Any]:
    load_schema(mysql_db, SCHEMA)
    return mysql_db


@pytest.fixture
def tree(db: dict[str, Any]) -> Iterator[Tree]:
    with Tree(store="vmail-sql") as t:
        owned_dir(t.root / "conf", 0, 0, 0o755)
        t.vmail_creds = t.root / "conf" / "vmail-sql.mysql"
        write_credentials(t, db)
        t.inject_dir = owned_dir(t.root / "inject", 0, 0, 0o777)
        inject = t.inject_dir / "qmail-inject"
        inject.write_text(FAKE_INJECT)
        inject.chmod(0o755)
        t.write_settings(vmail_sql_credentials=t.vmail_creds, qmail_inject=inject)
        owned_dir(t.root / "spool", 0, 0, 0o755)
        t.mail = owned_dir(t.root / "spool" / "example.com")
        add_domain(db, "example.com", "89", t.mail)
        sql(db, "INSERT INTO domain_alias (alias, domain_name) VALUES ('alias.test', 'example.com')")
        add_popbox(db, "bob", "{md5}" + MD5_SECRET, "bob.mbox")
        yield t


@pytest.fixture(scope="module")
def mail_user() -> Iterator[pwd.struct_passwd]:
    """A system user (a fresh uid, primary group 89) to name in ``domain.unix_user``; removed after."""
    name = "vmt" + secrets.token_hex(5)
    subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
                    "--shell", "/usr/sbin/nologin", "--gid", str(VPOPMAIL_GID), name],
                   check=True, capture_output=True)
    try:
        entry = pwd.getpwnam(name)
        assert entry.pw_uid not in (0, VPOPMAIL_UID)
        yield entry
    finally:
        subprocess.run(["userdel", name], check=True, capture_output=True)


def login(tree: Tree, name: str, password: str | bytes = "secret", timestamp: bytes = BANNER,
          **env: str | None) -> tuple[subprocess.CompletedProcess[bytes], dict[str, Any] | None]:
    return tree.login(fd3_payload(name, password, timestamp), **env)


def deliver(tree: Tree, address: str, message: bytes | Path = MESSAGE, instruction: str = "bounce-no-mailbox",
            **env: str | None) -> subprocess.CompletedProcess[bytes]:
    """vdelivermail as qmail-local runs it for ``address`` (HOST = its domain, EXT = its local part)."""
    return tree.deliver(address, message, instruction, domain_dir=tree.mail, env=env)


def injected(tree: Tree) -> list[dict[str, Any]]:
    try:
        text = (tree.inject_dir / "runs.jsonl").read_text()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines()]


def inject_exit(tree: Tree, code: int) -> None:
    (tree.inject_dir / "exit-code").write_text(str(code))


def read_mbox(path: Path) -> list[mailbox.mboxMessage]:
    box = mailbox.mbox(str(path), create=False)
    try:
        return list(box)
    finally:
        box.close()


def mboxrd_unquote(body: bytes) -> bytes:
    return re.sub(rb"(?m)^>(>*From )", rb"\1", body)


# ------------------------------------------------------------------------------------------------
# vchkpw: logins


def test_login_local_at_domain(tree: Tree, db: dict[str, Any]) -> None:
    for tcp in (True, False):  # the server's port, then its socket
        write_credentials(tree, db, tcp=tcp)
        done, record = login(tree, "bob@example.com")
        assert done.returncode == 0, done.stderr
        assert record is not None
        assert (record["uid"], record["gid"], record["groups"]) == (89, 89, [89])
        assert record["cwd"] == str(tree.mail)
        env = record["env"]
        assert env["HOME"] == str(tree.mail)
        assert env["MAIL"] == f"{tree.mail}/bob.mbox"
        assert (env["USER"], env["SHELL"]) == ("bob@example.com", "NOLOGIN")
        assert tree.syslog_lines() == [f"vchkpw-pop3: (PLAIN) login success bob@example.com:{REMOTE_IP}"]


def test_login_forms(tree: Tree) -> None:
    for name in ("bob%example.com", "Bob@Example.COM", "bob@alias.test", "BOB%ALIAS.TEST"):
        done, record = login(tree, name)
        assert done.returncode == 0, (name, done.stderr)
        assert record is not None
        assert record["uid"] == 89 and record["cwd"] == str(tree.mail)
        assert record["env"]["MAIL"] == f"{tree.mail}/bob.mbox"
        assert record["env"]["USER"] == "bob@example.com"
        local, _, domain = name.lower().replace("%", "@").partition("@")
        assert tree.syslog_lines() == [f"vchkpw-pop3: (PLAIN) login success {local}@{domain}:{REMOTE_IP}"]


@pytest.mark.parametrize("name", ["b\u00f6b@example.com", "B\u00d6B@example.com", "b\u00f3b%example.com",
                                  "bob@ex\u00e4mple.com", "bob@EX\u00c4MPLE.COM", "bob@\u00e9xample.com",
                                  "bob@alias.t\u00ebst", "b\u00f6b@alias.test"])
def test_names_are_not_matched_through_the_collation(tree: Tree, db: dict[str, Any], name: str) -> None:
    """utf8mb4_general_ci takes böb for bob and exämple.com for example.com: neither may log in as bob."""
    done, record = login(tree, name)
    assert (done.returncode, record) == (1, None), done
    local, _, domain = name.replace("%", "@").partition("@")
    lower = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
    assert tree.syslog_lines() == [f"vchkpw-pop3: vpopmail user not found {local.translate(lower)}@"
                                   f"{domain.translate(lower)}:{REMOTE_IP}"]
    done, record = login(tree, "BOB@ALIAS.TEST")  # ASCII case is folded
    assert done.returncode == 0 and record is not None and record["env"]["USER"] == "bob@example.com"


def test_rows_in_ascii_mixed_case_still_answer(tree: Tree, db: dict[str, Any]) -> None:
    """ASCII case is what the programs fold (and what the C programs' ci collations folded)."""
    path = owned_dir(tree.root / "spool" / "mixed")
    add_domain(db, "Mixed.Example.NET", "89", path)
    add_popbox(db, "Carol", "{plaintext}carol-pw", "carol.mbox", domain="Mixed.Example.NET")
    for name in ("carol@mixed.example.net", "CAROL@MIXED.example.net"):
        done, record = login(tree, name, "carol-pw")
        assert done.returncode == 0 and record is not None, done
        assert record["env"]["USER"] == "Carol@mixed.example.net"
        assert record["env"]["MAIL"] == f"{path}/carol.mbox"
    for name in ("car\u00f6l@mixed.example.net", "carol@m\u00efxed.example.net"):
        done, record = login(tree, name, "carol-pw")
        assert (done.returncode, record) == (1, None)
    tree.syslog_lines()


def test_login_without_a_domain_takes_the_default_domain(tree: Tree) -> None:
    # tpop3d used the listening address's domain; we use vpopmail's default-domain rules.
    done, record = login(tree, "bob")
    assert (done.returncode, record) == (1, None)  # no default domain yet
    done, record = login(tree, "bob", VPOPMAIL_DOMAIN="example.com")
    assert done.returncode == 0, done.stderr
    assert record is not None and record["env"]["MAIL"] == f"{tree.mail}/bob.mbox"
    tree.write_etc("defaultdomain", "alias.test\n")
    done, record = login(tree, "bob")
    assert done.returncode == 0, done.stderr
    assert record is not None and record["env"]["USER"] == "bob@example.com"
    tree.syslog_lines()


@pytest.mark.parametrize("form", ["name", "number"])
def test_unix_user_by_name_or_number(tree: Tree, db: dict[str, Any], mail_user: pwd.struct_passwd,
                                     form: str) -> None:
    # The domain's files belong to the test user alone (0700): only its uid can enter them.
    path = owned_dir(tree.root / "spool" / "named.test", mail_user.pw_uid, VPOPMAIL_GID, 0o700)
    unix_user = mail_user.pw_name if form == "name" else str(mail_user.pw_uid)
    add_domain(db, "named.test", unix_user, str(path) + "/")
    add_popbox(db, "carol", "{plaintext}carol-pw", "Maildir/", domain="named.test")
    done, record = login(tree, "carol@named.test", "carol-pw")
    assert done.returncode == 0, done.stderr
    assert record is not None
    # gid = that user's primary group, whatever the number says
    assert (record["uid"], record["gid"]) == (mail_user.pw_uid, VPOPMAIL_GID)
    assert record["groups"] == [VPOPMAIL_GID]
    assert record["cwd"] == str(path)
    assert record["env"]["HOME"] == str(path)
    assert record["env"]["MAIL"] == f"{path}/Maildir/"


def test_numeric_unix_user_without_passwd_entry(tree: Tree, db: dict[str, Any]) -> None:
    uid = 64000 + secrets.randbelow(1000)
    while True:
        try:
            pwd.getpwuid(uid)
        except KeyError:
            break
        uid += 1
    path = owned_dir(tree.root / "spool" / "bare.test", uid, uid, 0o700)
    add_domain(db, "bare.test", str(uid), path)
    add_popbox(db, "dave", "{md5}" + MD5_SECRET, "dave", domain="bare.test")
    done, record = login(tree, "dave@bare.test")
    assert done.returncode == 0, done.stderr
    assert (record["uid"], record["gid"], record["cwd"]) == (uid, uid, str(path))


def test_unusable_unix_user_defers(tree: Tree, db: dict[str, Any]) -> None:
    add_domain(db, "broken.test", "no-such-user-here", tree.mail)
    add_domain(db, "nouser.test", None, tree.mail)
    for domain in ("broken.test", "nouser.test"):
        add_popbox(db, "bob", "{md5}" + MD5_SECRET, "bob.mbox", domain=domain)
        done, record = login(tree, f"bob@{domain}")
        assert (done.returncode, record) == (111, None)
        done = deliver(tree, f"bob@{domain}")
        assert done.returncode == 111, done.stdout
    assert not (tree.mail / "bob.mbox").exists()


def test_wrong_password(tree: Tree) -> None:
    for password in ("wrong", "Secret", MD5_SECRET, "{md5}" + MD5_SECRET):
        done, record = login(tree, "bob@example.com", password)
        assert (done.returncode, record) == (1, None)
    assert tree.syslog_lines() == [f"vchkpw-pop3: password fail bob@example.com:{REMOTE_IP}"] * 4


def test_unknown_user_or_domain(tree: Tree) -> None:
    names = ["carol@example.com", "bob@nowhere.test", "bob", "@example.com", "bob@",
             "bob@example.com@example.com", "bob@example.com.", "bob.mbox@example.com"]
    for name in names:
        done, record = login(tree, name)
        assert (done.returncode, record) == (1, None), name
    lines = tree.syslog_lines()
    assert len(lines) == len(names)
    assert all(line.startswith("vchkpw-pop3: vpopmail user not found ") for line in lines), lines


def test_database_down(tree: Tree, dead_mysql: dict[str, Any]) -> None:
    write_credentials(tree, dead_mysql)
    done, record = login(tree, "bob@example.com")
    assert (done.returncode, record) == (111, None)
    assert b"database down" in done.stderr
    [line] = tree.syslog_lines()
    assert line.startswith("vchkpw-pop3: database down") and line.endswith(f"bob@example.com:{REMOTE_IP}")
    # a wrong password cannot be told from a right one while the database is down
    done, record = login(tree, "bob@example.com", "wrong")
    assert (done.returncode, record) == (111, None)


def test_read_server_down_update_server_up(tree: Tree, db: dict[str, Any],
                                           dead_mysql: dict[str, Any]) -> None:
    write_credentials(tree, dead_mysql, db)
    done, record = login(tree, "bob@example.com")
    assert done.returncode == 0, done.stderr
    assert record is not None and record["env"]["MAIL"] == f"{tree.mail}/bob.mbox"
    done, record = login(tree, "bob@example.com", "wrong")
    assert (done.returncode, record) == (1, None)
    done = deliver(tree, "bob@example.com")
    assert (done.returncode, done.stdout) == (0, b"")
    assert len(read_mbox(tree.mail / "bob.mbox")) == 1


def test_default_credentials_path(tree: Tree, db: dict[str, Any]) -> None:
    tree.write_settings(vmail_sql_credentials=None)
    done, record = login(tree, "bob@example.com")
    assert (done.returncode, record) == (111, None)  # <vpopmail_home>/etc/vmail-sql.mysql is missing
    assert str(tree.etc / "vmail-sql.mysql").encode() in done.stderr
    tree.vmail_creds = tree.etc / "vmail-sql.mysql"
    write_credentials(tree, db)
    done, record = login(tree, "bob@example.com")
    assert done.returncode == 0, done.stderr
    assert record is not None


# ------------------------------------------------------------------------------------------------
# vchkpw: password_hash forms

SERVER_HASHES = {
    # scheme -> SQL computing the stored value in MariaDB from the password %s
    "{md5} hex": "CONCAT('{md5}', MD5(%s))",
    "no prefix hex": "MD5(%s)",
    "no prefix base64": "TO_BASE64(UNHEX(MD5(%s)))",
    "{md5} base64": "CONCAT('{md5}', TO_BASE64(UNHEX(MD5(%s))))",
    "{crypt} DES": "CONCAT('{crypt}', ENCRYPT(%s, 'xy'))",
    "{crypt} md5": "CONCAT('{crypt}', ENCRYPT(%s, '$1$Saltier$'))",
    "{crypt_md5}": "CONCAT('{crypt_md5}', ENCRYPT(%s, '$1$pepper$'))",
    "{mysql} 16": "CONCAT('{mysql}', OLD_PASSWORD(%s))",
    "{mysql} 8": "CONCAT('{mysql}', LEFT(OLD_PASSWORD(%s), 8))",
    "{sha1}": "CONCAT('{sha1}', SHA1(%s))",
    "{sha1} upper": "CONCAT('{sha1}', UPPER(SHA1(%s)))",
    "{plaintext}": "CONCAT('{plaintext}', %s)",
}

FIXED_HASHES = [
    (MD5_SECRET, "secret"),
    (MD5_SECRET.upper(), "secret"),
    ("{md5}" + MD5_SECRET.upper(), "secret"),
    ("Xr4ilOzQ4PCOq3aQ0qbuaQ==", "secret"),
    ("{md5}Xr4ilOzQ4PCOq3aQ0qbuaQ==", "secret"),
    ("{crypt}abNANd1rDfiNc", "secret"),
    ("{crypt}$1$saltsalt$9xy1btjgzLYfb7hivXtC//", "secret"),
    ("{crypt_md5}$1$saltsalt$9xy1btjgzLYfb7hivXtC//", "secret"),
    ("{plaintext}secret", "secret"),
    ("{mysql}5d2e19393cc5ef67", "password"),
    ("{mysql}5d2e1939", "password"),
    ("{sha1}e5e9fa1ba31ecd1ae84f75caaa474f3a663f05f4", "secret"),
]


def test_hash_vectors(tree: Tree, db: dict[str, Any]) -> None:
    for n, (stored, password) in enumerate(FIXED_HASHES):
        add_popbox(db, f"v{n}", stored, f"v{n}.mbox")
        done, record = login(tree, f"v{n}@example.com", password)
        assert done.returncode == 0, (stored, done.stderr)
        assert record is not None and record["env"]["MAIL"] == f"{tree.mail}/v{n}.mbox"
        done, record = login(tree, f"v{n}@example.com", password[:-1] + password[-1].upper())
        assert (done.returncode, record) == (1, None), stored
        assert tree.syslog_lines() == [f"vchkpw-pop3: (PLAIN) login success v{n}@example.com:{REMOTE_IP}",
                                       f"vchkpw-pop3: password fail v{n}@example.com:{REMOTE_IP}"]


def test_hashes_computed_by_the_server(tree: Tree, db: dict[str, Any]) -> None:
    """The stored values come from MariaDB's own MD5(), SHA1(), ENCRYPT() (crypt(3)) and OLD_PASSWORD()."""
    password = "Tr0ub4dor&3"
    for n, (label, expression) in enumerate(SERVER_HASHES.items()):
        sql(db, f"INSERT INTO popbox (domain_name, local_part, password_hash, mbox_name) "
                f"VALUES ('example.com', %s, {expression}, %s)", f"u{n}", password, f"u{n}.mbox")
        [(stored,)] = sql(db, "SELECT password_hash FROM popbox WHERE local_part = %s", f"u{n}")
        assert stored and stored != password or label == "{plaintext}", (label, stored)
        if label in ("{crypt} md5", "{crypt_md5}"):
            assert re.fullmatch(r"\{crypt(_md5)?\}\$1\$\w+\$[./0-9A-Za-z]{22}", stored), stored
        done, record = login(tree, f"u{n}@example.com", password)
        assert done.returncode == 0, (label, stored, done.stderr)
        assert record["env"]["MAIL"] == f"{tree.mail}/u{n}.mbox"
        done, record = login(tree, f"u{n}@example.com", password.lower())
        assert (done.returncode, record) == (1, None), (label, stored)


def test_unknown_format_refused_and_logged(tree: Tree, db: dict[str, Any]) -> None:
    for stored, scheme in (("{whirlpool}" + MD5_SECRET, "{whirlpool}"), ("{SSHA}abcdef", "{ssha}"),
                           ("{}" + MD5_SECRET, "{}")):
        sql(db, "UPDATE popbox SET password_hash = %s WHERE local_part = 'bob'", stored)
        done, record = login(tree, "bob@example.com")
        assert (done.returncode, record) == (1, None)
        assert tree.syslog_lines() == [
            f"vchkpw-pop3: unknown password format {scheme} bob@example.com:{REMOTE_IP}"]


def test_malformed_hash_refused(tree: Tree, db: dict[str, Any]) -> None:
    for stored, password in (("{md5}" + MD5_SECRET[:-1], "secret"), ("{mysql}5d2e19393cc5ef6", "password"),
                             ("{sha1}abc", "secret"), ("", "secret"), ("", "")):
        sql(db, "UPDATE popbox SET password_hash = %s WHERE local_part = 'bob'", stored)
        done, record = login(tree, "bob@example.com", password)
        assert (done.returncode, record) == (1, None), stored


def test_null_hash_refused(tree: Tree, db: dict[str, Any]) -> None:
    sql(db, "UPDATE popbox SET password_hash = NULL WHERE local_part = 'bob'")
    for password in ("secret", "x"):
        done, record = login(tree, "bob@example.com", password)
        assert (done.returncode, record) == (1, None)
    assert tree.syslog_lines() == [f"vchkpw-pop3: NULL password_hash bob@example.com:{REMOTE_IP}"] * 2


def test_two_popbox_rows_refused_and_logged(tree: Tree, db: dict[str, Any]) -> None:
    sql(db, "ALTER TABLE popbox DROP PRIMARY KEY")
    add_popbox(db, "bob", "{plaintext}secret", "other.mbox")
    assert sql(db, "SELECT COUNT(*) FROM popbox WHERE local_part = 'bob'") == [(2,)]
    done, record = login(tree, "bob@example.com")
    assert (done.returncode, record) == (1, None)
    assert tree.syslog_lines() == [
        f"vchkpw-pop3: database inconsistency: 2 popbox rows bob@example.com:{REMOTE_IP}"]
    # delivery cannot tell which mailbox is meant either: deferred, nothing written
    done = deliver(tree, "bob@example.com")
    assert done.returncode == 111
    assert b"inconsistency" in done.stdout
    assert sorted(os.listdir(tree.mail)) == []


def test_apop_only_with_plaintext(tree: Tree, db: dict[str, Any]) -> None:
    challenge = b"<4711.1700000000@pop.example.com>"
    digest = hashlib.md5(challenge + b"secret").hexdigest()
    sql(db, "UPDATE popbox SET password_hash = '{plaintext}secret' WHERE local_part = 'bob'")
    done, record = login(tree, "bob@example.com", digest, challenge)
    assert done.returncode == 0, done.stderr
    assert record is not None and record["env"]["MAIL"] == f"{tree.mail}/bob.mbox"
    assert tree.syslog_lines() == [f"vchkpw-pop3: (APOP) login success bob@example.com:{REMOTE_IP}"]
    # a digest for another challenge, or of another password, fails
    done, record = login(tree, "bob@example.com", digest, b"<1.2@pop.example.com>")
    assert (done.returncode, record) == (1, None)
    done, record = login(tree, "bob@example.com", hashlib.md5(challenge + b"wrong").hexdigest(), challenge)
    assert (done.returncode, record) == (1, None)
    # the same digest against a {md5} hash of the same password: no clear text, no APOP
    sql(db, "UPDATE popbox SET password_hash = %s WHERE local_part = 'bob'", "{md5}" + MD5_SECRET)
    done, record = login(tree, "bob@example.com", digest, challenge)
    assert (done.returncode, record) == (1, None)
    done, record = login(tree, "bob@example.com", "secret", challenge)
    assert done.returncode == 0, done.stderr


# ------------------------------------------------------------------------------------------------
# vdelivermail: popboxes


def test_mbox_delivery(tree: Tree) -> None:
    second = MESSAGE.replace(b"Subject: hello", b"Subject: again")
    for message in (MESSAGE, second):
        done = deliver(tree, "bob@example.com", message)
        assert (done.returncode, done.stdout, done.stderr) == (0, b"", b"")
    path = tree.mail / "bob.mbox"
    raw = path.read_bytes()
    one = RETURN_PATH + b"Delivered-To: bob@example.com\n" + MESSAGE.replace(BODY, QUOTED_BODY) + b"\n"
    two = one.replace(b"Subject: hello", b"Subject: again")
    first_line = FROM_LINE.match(raw)
    assert first_line, raw[:80]
    rest = raw[first_line.end():]
    assert rest[:len(one)] == one
    second_line = FROM_LINE.match(rest[len(one):])
    assert second_line
    assert rest[len(one) + second_line.end():] == two
    st = path.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (VPOPMAIL_UID, VPOPMAIL_GID, 0o600)
    assert not Path(str(path) + ".lock").exists()

    messages = read_mbox(path)
    assert [m["Subject"] for m in messages] == ["hello", "again"]
    for msg in messages:
        assert msg["Return-Path"] == "<alice@example.org>"
        assert msg["Delivered-To"] == "bob@example.com"
        assert msg["Message-ID"] == "<1@example.org>"
        assert msg.get_from().startswith("alice@example.org ")
        payload = msg.get_payload(decode=False).encode()
        assert payload == QUOTED_BODY
        assert mboxrd_unquote(payload) == BODY


def test_mbox_in_a_subdirectory_and_empty_sender(tree: Tree, db: dict[str, Any]) -> None:
    owned_dir(tree.mail / "spool")
    add_popbox(db, "erin", "{md5}" + MD5_SECRET, "spool/erin")
    done = tree.deliver("erin@example.com", MESSAGE, domain_dir=tree.mail, sender="")
    assert (done.returncode, done.stdout) == (0, b"")
    raw = (tree.mail / "spool" / "erin").read_bytes()
    assert raw.startswith(b"From MAILER-DAEMON ")
    [msg] = read_mbox(tree.mail / "spool" / "erin")
    assert msg["Return-Path"] == "<>"
    assert msg["Delivered-To"] == "erin@example.com"


def test_maildir_popbox(tree: Tree, db: dict[str, Any]) -> None:
    maildir = tree.mail / "carol"
    owned_dir(maildir)
    for sub in ("new", "cur", "tmp"):
        owned_dir(maildir / sub)
    add_popbox(db, "carol", "{md5}" + MD5_SECRET, "carol/")
    done = deliver(tree, "carol@example.com")
    assert (done.returncode, done.stdout, done.stderr) == (0, b"", b"")
    [new] = list((maildir / "new").iterdir())
    assert new.read_bytes() == RETURN_PATH + b"Delivered-To: carol@example.com\n" + MESSAGE
    assert list((maildir / "tmp").iterdir()) == []
    assert not (tree.mail / "carol.mbox").exists()


def test_unusable_mbox_name_defers(tree: Tree, db: dict[str, Any]) -> None:
    for n, mbox_name in enumerate([None, "", "../escape", "/etc/passwd", "a/../../escape"]):
        add_popbox(db, f"frank{n}", "{md5}" + MD5_SECRET, mbox_name)
        done = deliver(tree, f"frank{n}@example.com")
        assert done.returncode == 111, mbox_name
        assert b"unusable mbox_name" in done.stdout
    assert os.listdir(tree.mail) == []
    assert not (tree.root / "spool" / "escape").exists()


def test_delivery_through_a_domain_alias(tree: Tree) -> None:
    done = deliver(tree, "bob@alias.test")
    assert (done.returncode, done.stdout) == (0, b"")
    [msg] = read_mbox(tree.mail / "bob.mbox")
    assert msg["Delivered-To"] == "bob@example.com"
    assert msg.get_payload().encode() == QUOTED_BODY


def test_concurrent_mbox_deliveries(tree: Tree) -> None:
    # Bodies of up to ~300 KB (several 64 KiB writes each), with lines that need quoting.
    messages = {}
    for n in range(24):
        lines = b"".join(b"From line %d of %d\nplain %d\n" % (i, n, i) for i in range(n * 500))
        body = f"message {n}\n".encode() + lines + b"end\n"
        head = f"From: alice@example.org\nSubject: m{n}\n\n".encode()
        messages[n] = (body, tree.message_file(head + body))

    def one(n: int) -> tuple[int, int, bytes]:
        done = deliver(tree, "bob@example.com", messages[n][1])
        return n, done.returncode, done.stdout

    with ThreadPoolExecutor(max_workers=12) as pool:
        outcomes = list(pool.map(one, messages))
    assert [(code, out) for _, code, out in outcomes] == [(0, b"")] * len(messages)
    found = read_mbox(tree.mail / "bob.mbox")
    assert sorted(m["Subject"] for m in found) == sorted(f"m{n}" for n in messages)
    for msg in found:
        n = int(msg["Subject"][1:])
        payload = msg.get_payload().encode()
        assert mboxrd_unquote(payload) == messages[n][0], msg["Subject"]
        assert b"\nFrom " not in payload
    raw = (tree.mail / "bob.mbox").read_bytes()
    assert len(re.findall(rb"(?m)^From ", raw)) == len(messages)
    assert raw.startswith(b"From alice@example.org ") and raw.endswith(b"end\n\n")
    assert not (tree.mail / "bob.mbox.lock").exists()


# ------------------------------------------------------------------------------------------------
# vdelivermail: forwarders, _default_, the instruction


def test_forwarders_several_rows(tree: Tree, db: dict[str, Any]) -> None:
    add_forwarder(db, "sales", "one@example.net")
    add_forwarder(db, "sales", "&two@example.org")
    for address in ("sales@example.com", "sales@alias.test"):
        done = deliver(tree, address)
        assert (done.returncode, done.stdout, done.stderr) == (0, b"", b"")
        runs = injected(tree)
        assert sorted(r["argv"][1:] for r in runs) == [["--", "one@example.net"], ["--", "two@example.org"]]
        for run in runs:
            assert run["argv"][0] == str(tree.inject_dir / "qmail-inject")
            assert run["uid"] == VPOPMAIL_UID
            assert run["stdin"].encode("latin-1") == (
                RETURN_PATH + f"Delivered-To: {address}\n".encode() + MESSAGE)
        (tree.inject_dir / "runs.jsonl").unlink()
    assert os.listdir(tree.mail) == []


def test_forwarder_row_under_the_alias_name(tree: Tree, db: dict[str, Any]) -> None:
    # Exim's director matches forwarder.domain_name against the domain mail came for, or the real one.
    add_forwarder(db, "info", "boss@example.net", domain="alias.test")
    done = deliver(tree, "info@alias.test")
    assert (done.returncode, done.stdout) == (0, b"")
    assert [r["argv"][1:] for r in injected(tree)] == [["--", "boss@example.net"]]
    done = deliver(tree, "info@example.com")
    assert (done.returncode, done.stdout) == (100, NO_USER)
    assert len(injected(tree)) == 1


def test_forwarder_takes_precedence_over_the_popbox(tree: Tree, db: dict[str, Any]) -> None:
    add_forwarder(db, "bob", "bob@elsewhere.example")
    done = deliver(tree, "bob@example.com")
    assert (done.returncode, done.stdout) == (0, b"")
    assert [r["argv"][1:] for r in injected(tree)] == [["--", "bob@elsewhere.example"]]
    assert not (tree.mail / "bob.mbox").exists()


def test_forwarder_names_are_addresses_only(tree: Tree, db: dict[str, Any]) -> None:
    # Exim: forbid_pipe, forbid_file.  A remote_name is never run nor written to.
    marker = tree.root / "ran"
    add_forwarder(db, "evil", f"|touch {marker}")
    add_forwarder(db, "evil", str(tree.root / "written"))
    done = deliver(tree, "evil@example.com")
    assert done.returncode == 0, done.stdout
    targets = sorted(r["argv"][2] for r in injected(tree))
    assert targets == sorted([f"|touch {marker}", str(tree.root / "written")])
    assert not marker.exists() and not (tree.root / "written").exists()


def test_qmail_inject_failure(tree: Tree, db: dict[str, Any]) -> None:
    add_forwarder(db, "sales", "one@example.net")
    for n, code in enumerate((100, 111), 1):
        inject_exit(tree, code)
        done = deliver(tree, "sales@example.com")
        assert (done.returncode, done.stdout) == (code, b"system error calling qmail-inject\n")
        assert len(injected(tree)) == n


def test_default_forwarder(tree: Tree, db: dict[str, Any]) -> None:
    add_forwarder(db, "_default_", "catchall@example.net")
    for address in ("nobody@example.com", "nobody@alias.test"):
        done = deliver(tree, address)
        assert (done.returncode, done.stdout) == (0, b"")
    runs = injected(tree)
    assert [r["argv"][1:] for r in runs] == [["--", "catchall@example.net"]] * 2
    assert runs[0]["stdin"].encode("latin-1") == RETURN_PATH + b"Delivered-To: nobody@example.com\n" + MESSAGE
    # a popbox still wins over the catch-all
    done = deliver(tree, "bob@example.com")
    assert (done.returncode, done.stdout) == (0, b"")
    assert len(injected(tree)) == 2
    assert len(read_mbox(tree.mail / "bob.mbox")) == 1


def test_no_popbox_no_forwarder_bounces(tree: Tree) -> None:
    done = deliver(tree, "nobody@example.com")
    assert (done.returncode, done.stdout, done.stderr) == (100, NO_USER, b"")
    done = deliver(tree, "nobody@alias.test")
    assert (done.returncode, done.stdout) == (100, NO_USER)
    assert os.listdir(tree.mail) == [] and injected(tree) == []


def test_no_popbox_no_forwarder_delete(tree: Tree) -> None:
    done = deliver(tree, "nobody@example.com", instruction="delete")
    assert (done.returncode, done.stdout, done.stderr) == (0, b"", b"")
    assert os.listdir(tree.mail) == [] and injected(tree) == []


def test_no_popbox_no_forwarder_instruction_address(tree: Tree) -> None:
    done = deliver(tree, "nobody@example.com", instruction="postmaster@example.net")
    assert (done.returncode, done.stdout) == (0, b"")
    assert [r["argv"][1:] for r in injected(tree)] == [["--", "postmaster@example.net"]]


def test_domain_not_in_the_table_defers(tree: Tree) -> None:
    done = deliver(tree, "bob@nowhere.test")
    assert (done.returncode, done.stdout) == (
        111, b"vdelivermail: domain nowhere.test is not in the domain table\n")


def test_loop(tree: Tree, db: dict[str, Any]) -> None:
    add_forwarder(db, "sales", "one@example.net")
    add_forwarder(db, "_default_", "catchall@example.net")
    for address in ("bob@example.com", "bob@alias.test", "sales@example.com", "nobody@alias.test"):
        local = address.partition("@")[0]
        message = f"Received: from x\nDelivered-To: {local.upper()}@Example.COM\n".encode() + MESSAGE
        done = deliver(tree, address, message)
        assert (done.returncode, done.stdout) == (100, LOOPING), address
    assert os.listdir(tree.mail) == [] and injected(tree) == []


def test_no_loop_for_another_address(tree: Tree) -> None:
    message = b"Delivered-To: xbob@example.com\nDelivered-To: bob@example.com.evil\n" + MESSAGE
    done = deliver(tree, "bob@example.com", message)
    assert (done.returncode, done.stdout) == (0, b"")
    assert len(read_mbox(tree.mail / "bob.mbox")) == 1


# ------------------------------------------------------------------------------------------------
# vdelivermail: the database down


def test_database_down_defers(tree: Tree, db: dict[str, Any], dead_mysql: dict[str, Any]) -> None:
    add_forwarder(db, "sales", "one@example.net")
    message = tree.message_file(MESSAGE)
    cases = [  # what qmail gets once the database is back
        ("bob@example.com", "bounce-no-mailbox", (0, b"")),       # a popbox user
        ("sales@example.com", "bounce-no-mailbox", (0, b"")),     # a forwarder
        ("sales@alias.test", "bounce-no-mailbox", (0, b"")),
        ("nobody@example.com", "delete", (0, b"")),               # an unknown user, instruction delete
        ("nobody@example.com", "bounce-no-mailbox", (100, NO_USER)),
    ]
    for tcp in (True, False):
        write_credentials(tree, dead_mysql, tcp=tcp)
        for address, instruction, _ in cases:
            done = deliver(tree, address, message, instruction)
            assert (done.returncode, done.stdout, done.stderr) == (111, DATABASE_DOWN, b""), address
    assert os.listdir(tree.mail) == [] and injected(tree) == []
    write_credentials(tree, db)  # qmail retries: nothing was lost
    for address, instruction, outcome in cases:
        done = deliver(tree, address, message, instruction)
        assert (done.returncode, done.stdout) == outcome, address
    assert len(read_mbox(tree.mail / "bob.mbox")) == 1
    assert [r["argv"][1:] for r in injected(tree)] == [["--", "one@example.net"]] * 2


@pytest.mark.parametrize("table", ["forwarder", "popbox", "domain"])
def test_missing_table_defers(tree: Tree, db: dict[str, Any], table: str) -> None:
    sql(db, f"DROP TABLE {table}")
    for instruction in ("bounce-no-mailbox", "delete"):
        done = deliver(tree, "nobody@example.com", instruction=instruction)
        assert (done.returncode, done.stdout) == (111, DATABASE_DOWN)
    assert os.listdir(tree.mail) == []
