"""Dovecot's Lua passdb and userdb (conf/vlookupd.lua) asking vlookupd: a real Dovecot 2.3.

Dovecot 2.4 keeps 2.3's auth Lua API (and drops checkpassword), so 2.3 stands in for it here.
IMAP logins with imaplib and POP3 logins with poplib, good and bad, on the CDB and the MySQL
store, with vpopmail's rules: login forms and the default domain, alias domains, NO_POP/NO_IMAP
flags and domain limits, the mail uid/gid and home, the Maildir++ quota as Dovecot's quota rule
(``doveadm user`` shows the userdb; IMAP GETQUOTAROOT shows it applied).  The users' hashes are
MD5-crypt, which Dovecot 2.4 refuses: Dovecot never sees a hash, the daemon checks the password.
"""

from __future__ import annotations

import imaplib
import os
import poplib
import re
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from helpers import REPO_ROOT, VPOPMAIL_GID, VPOPMAIL_UID, program, wait_for_log
from lookupd import Daemon
from tree import Tree, load_schema

SCRIPT = REPO_ROOT / "conf" / "vlookupd.lua"
MESSAGE = b"From: a@example.net\r\nTo: bob@example.com\r\nSubject: hello\r\n\r\nbody\r\n"
AUTH_CONF = f"""\
passdb {{
  driver = lua
  args = file={SCRIPT}
}}
userdb {{
  driver = prefetch
}}
userdb {{
  driver = lua
  args = file={SCRIPT}
}}"""
EXTRA_CONF = """\
# vpopmail's user%domain form (Dovecot's default set has no %)
auth_username_chars = abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ01234567890.-_@%
mail_plugins = $mail_plugins quota
protocol imap {
  mail_plugins = $mail_plugins imap_quota
}
plugin {
  quota = maildir:User quota
}
"""


@pytest.fixture(scope="module", params=["cdb", "mysql"])
def site(request: pytest.FixtureRequest, mariadb: dict[str, Any],
         dovecot_factory: Callable[..., dict[str, Any]]) -> Iterator[tuple[Tree, Daemon, dict[str, Any]]]:
    """A tree, its daemon and a Dovecot whose auth is the Lua script; for the whole module."""
    import secrets

    import pymysql

    kwargs: dict[str, Any] = {"logging": "y"}
    db = None
    if request.param == "mysql":
        suffix = secrets.token_hex(4)
        db = {"database": f"dl_{suffix}", "user": f"dl_{suffix}", "password": secrets.token_hex(8),
              "host": mariadb["host"], "port": mariadb["port"], "unix_socket": mariadb["unix_socket"]}
        root = pymysql.connect(unix_socket=mariadb["unix_socket"], user="root", autocommit=True)
        with root.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{db['database']}`")
            cur.execute("CREATE USER %s@'localhost' IDENTIFIED BY %s", (db["user"], db["password"]))
            cur.execute(f"GRANT ALL ON `{db['database']}`.* TO %s@'localhost'", (db["user"],))
        load_schema(db)
        kwargs.update(store="mysql", mysql=db)
    try:
        with Tree(**kwargs) as tree:
            tree.add_domain("example.com", aliases=["example.net"])
            tree.add_user("example.com", "bob", "secret", quota="1048576S,200C")
            tree.add_user("example.com", "carol", "carol-pw")
            tree.add_user("example.com", "dave", "dave-pw")
            tree.add_user("example.com", "nopop", "nopop-pw", flags=0x02)
            tree.add_user("example.com", "noimap", "noimap-pw", flags=0x08)
            tree.add_user("example.com", "noweb", "noweb-pw", flags=0x04)
            tree.write_etc("defaultdomain", "example.com\n")
            tree.add_domain("limited.test")
            tree.add_user("limited.test", "lee", "lee-pw")
            limits = tree.domain_dir("limited.test") / ".qmailadmin-limits"
            limits.write_text("disable_imap\n")
            os.chown(limits, VPOPMAIL_UID, VPOPMAIL_GID)
            with Daemon(tree) as daemon:
                server = dovecot_factory("", import_env={"VPOP_CONFIG": str(tree.config)},
                                         auth_conf=AUTH_CONF, extra_conf=EXTRA_CONF)
                try:
                    yield tree, daemon, server
                finally:
                    server["stop"]()
    finally:
        if db is not None:
            root = pymysql.connect(unix_socket=mariadb["unix_socket"], user="root", autocommit=True)
            with root.cursor() as cur:
                cur.execute(f"DROP DATABASE `{db['database']}`")
                cur.execute("DROP USER %s@'localhost'", (db["user"],))


@pytest.fixture
def tree(site: tuple[Tree, Daemon, dict[str, Any]]) -> Tree:
    site[0].syslog_records()
    return site[0]


@pytest.fixture
def server(site: tuple[Tree, Daemon, dict[str, Any]]) -> dict[str, Any]:
    return site[2]


def put_message(tree: Tree, domain: str, name: str) -> None:
    new = tree.domain_dir(domain) / name / "Maildir" / "new"
    path = new / f"{time.time_ns()}.test.{name}"
    path.write_bytes(MESSAGE)
    os.chown(path, VPOPMAIL_UID, VPOPMAIL_GID)


class FromSource:
    """imaplib's and poplib's clients from a chosen local address (from 127.0.0.1 vpopmail sees a
    webmail login); ``source`` is set before the base class connects."""

    source = "127.0.0.1"
    host: str
    port: int

    def _create_socket(self, timeout):
        return socket.create_connection((self.host, self.port), timeout, source_address=(self.source, 0))


class IMAP(FromSource, imaplib.IMAP4):
    def __init__(self, port: int, source: str) -> None:
        self.source = source
        imaplib.IMAP4.__init__(self, "127.0.0.1", port)


class POP(FromSource, poplib.POP3):
    def __init__(self, port: int, source: str) -> None:
        self.source = source
        poplib.POP3.__init__(self, "127.0.0.1", port)


def imap_login(server: dict[str, Any], login: str, password: str, source: str = "127.0.0.1") -> IMAP:
    imap = IMAP(server["imap_port"], source)
    try:
        imap.login(login, password)
    except BaseException:
        imap.logout()
        raise
    return imap


def imap_refused(server: dict[str, Any], login: str, password: str, source: str = "127.0.0.1") -> str:
    imap = IMAP(server["imap_port"], source)
    try:
        with pytest.raises(imaplib.IMAP4.error) as failed:
            imap.login(login, password)
    finally:
        imap.logout()
    return str(failed.value)


def pop_login(server: dict[str, Any], login: str, password: str, source: str = "127.0.0.1") -> POP:
    pop = POP(server["pop3_port"], source)
    pop.user(login)
    pop.pass_(password)
    return pop


def pop_refused(server: dict[str, Any], login: str, password: str, source: str = "127.0.0.1") -> str:
    pop = POP(server["pop3_port"], source)
    try:
        pop.user(login)
        with pytest.raises(poplib.error_proto) as failed:
            pop.pass_(password)
    finally:
        pop.close()
    return str(failed.value)


def test_imap_login(tree: Tree, server: dict[str, Any]) -> None:
    put_message(tree, "example.com", "bob")
    imap = imap_login(server, "bob@example.com", "secret")
    try:
        typ, data = imap.select("INBOX")
        assert typ == "OK" and int(data[0]) >= 1
        typ, data = imap.fetch("1", "(BODY[HEADER.FIELDS (SUBJECT)])")
        assert typ == "OK" and b"Subject: hello" in data[0][1]
    finally:
        imap.logout()
    uidlist = tree.domain_dir("example.com") / "bob" / "Maildir" / "dovecot-uidlist"
    assert (uidlist.stat().st_uid, uidlist.stat().st_gid) == (VPOPMAIL_UID, VPOPMAIL_GID)
    # logged as vchkpw logs it (vlookupd sends the line), for the same fail2ban filters
    assert any("login success bob@example.com:127.0.0.1" in line for line in tree.syslog_lines())


def test_pop3_login(tree: Tree, server: dict[str, Any]) -> None:
    put_message(tree, "example.com", "carol")
    pop = pop_login(server, "carol@example.com", "carol-pw")
    try:
        count, size = pop.stat()
        assert count == 1 and size == len(MESSAGE)
    finally:
        pop.quit()


def test_bare_login_gets_the_default_domain(tree: Tree, server: dict[str, Any]) -> None:
    imap = imap_login(server, "dave", "dave-pw")
    try:
        assert imap.select("INBOX")[0] == "OK"
    finally:
        imap.logout()
    log = wait_for_log(server["log"], "user=<dave@example.com>")
    assert "Login: user=<dave@example.com>" in log


def test_alias_domain_and_other_forms(tree: Tree, server: dict[str, Any]) -> None:
    for login in ("carol@example.net", "Carol@Example.COM", "carol%example.com"):
        imap = imap_login(server, login, "carol-pw")
        try:
            assert imap.select("INBOX")[0] == "OK"
        finally:
            imap.logout()


def test_wrong_password_and_unknown_user(tree: Tree, server: dict[str, Any]) -> None:
    assert "[AUTHENTICATIONFAILED]" in imap_refused(server, "bob@example.com", "wrong")
    assert pop_refused(server, "bob@example.com", "wrong").startswith("b'-ERR [AUTH]")
    assert "[AUTHENTICATIONFAILED]" in imap_refused(server, "nobody@example.com", "secret")
    assert "[AUTHENTICATIONFAILED]" in imap_refused(server, "bob@nowhere.test", "secret")
    lines = tree.syslog_lines()
    assert any("password fail bob@example.com:127.0.0.1" in line for line in lines)
    assert any("vpopmail user not found nobody@example.com:127.0.0.1" in line for line in lines)


def test_service_flags_and_domain_limits(tree: Tree, server: dict[str, Any]) -> None:
    # From 127.0.0.1 a POP or IMAP login is a webmail one for vpopmail (NO_WEBMAIL applies there):
    # NO_POP, NO_IMAP and disable_imap are seen from another local address.
    other = "127.0.0.2"
    assert "[AUTHENTICATIONFAILED]" in imap_refused(server, "noimap@example.com", "noimap-pw", other)
    pop_login(server, "noimap@example.com", "noimap-pw", other).quit()
    assert pop_refused(server, "nopop@example.com", "nopop-pw", other).startswith("b'-ERR [AUTH]")
    imap_login(server, "nopop@example.com", "nopop-pw", other).logout()
    assert "[AUTHENTICATIONFAILED]" in imap_refused(server, "lee@limited.test", "lee-pw", other)
    pop_login(server, "lee@limited.test", "lee-pw", other).quit()
    assert "[AUTHENTICATIONFAILED]" in imap_refused(server, "noweb@example.com", "noweb-pw")
    imap_login(server, "noweb@example.com", "noweb-pw", other).logout()
    lines = " ".join(tree.syslog_lines())
    assert "imap access denied noimap@example.com:127.0.0.2" in lines
    assert "pop access denied nopop@example.com:127.0.0.2" in lines
    assert "imap access denied lee@limited.test:127.0.0.2" in lines
    assert "webmail access denied noweb@example.com:127.0.0.1" in lines


def doveadm_user(server: dict[str, Any], user: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["doveadm", "-c", str(server["conf"]), "user", user], capture_output=True,
                          text=True, timeout=30, env={"PATH": "/usr/bin:/bin:/usr/sbin:/sbin"})


def test_userdb_fields(tree: Tree, server: dict[str, Any]) -> None:
    done = doveadm_user(server, "bob@example.com")
    assert done.returncode == 0, done.stderr
    fields = dict(line.split("\t", 1) for line in done.stdout.splitlines() if "\t" in line)
    assert fields["uid"] == str(VPOPMAIL_UID) and fields["gid"] == str(VPOPMAIL_GID)
    assert fields["home"] == str(tree.domain_dir("example.com") / "bob")
    assert fields["quota_rule"] == "*:bytes=1048576:messages=200"
    done = doveadm_user(server, "nobody@example.com")
    assert done.returncode == 67  # EX_NOUSER: the userdb says unknown


def test_quota_applied(tree: Tree, server: dict[str, Any]) -> None:
    imap = imap_login(server, "bob@example.com", "secret")
    try:
        typ, data = imap.getquotaroot("INBOX")
    finally:
        imap.logout()
    assert typ == "OK"
    text = b" ".join(item if isinstance(item, bytes) else b" ".join(item) for part in data for item in part)
    assert re.search(rb"\(STORAGE \d+ 1024 MESSAGE \d+ 200\)", text), text  # KiB, messages


def test_password_changed_is_seen_at_once(tree: Tree, server: dict[str, Any]) -> None:
    imap_login(server, "dave@example.com", "dave-pw").logout()
    done = subprocess.run([program("vpasswd"), "dave@example.com", "dave-new"], env=tree.env(),
                          capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr
    imap_login(server, "dave@example.com", "dave-new").logout()
    assert "[AUTHENTICATIONFAILED]" in imap_refused(server, "dave@example.com", "dave-pw")


def test_daemon_down_is_a_temporary_failure(site: tuple[Tree, Daemon, dict[str, Any]]) -> None:
    tree, daemon, server = site
    daemon.stop()
    try:
        text = imap_refused(server, "bob@example.com", "secret")
        assert "[UNAVAILABLE]" in text
        assert "-ERR [SYS/TEMP]" in pop_refused(server, "bob@example.com", "secret")
    finally:
        daemon.start()
    imap_login(server, "bob@example.com", "secret").logout()  # the script connects again
