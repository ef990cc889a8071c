"""vpopmaild, installed, under Debian's tcpserver on 127.0.0.1, on the CDB and the MySQL store.

Clients: Roundcube's own password driver (``plugins/password/drivers/vpopmaild.php`` from
Debian's roundcube-plugins, run by php-cli through ``roundcube_vpopmaild.php``) and the tests'
own protocol client (``vpopmaild_client.Client``; Net_Vpopmaild cannot be had here).  What the
commands change is read back from the files (``vpasswd``, ``users/assign``, ``.qmail-*``,
``.qmailadmin-limits``) or the rows, and logins are tried through the installed vchkpw.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import REPO_ROOT, VPOPMAIL_GID, VPOPMAIL_UID, fd3_payload, program
from tree import Tree, load_schema, mysql_rows, snapshot
from vpopmaild_client import Daemon

CLOCK = 1_700_000_000
NO_PASSWD_CHNG, NO_POP, QA_ADMIN, SA_ADMIN, V_OVERRIDE = 0x01, 0x02, 0x1000, 0x10000, 0x2000
HARNESS = REPO_ROOT / "tests" / "roundcube_vpopmaild.php"
PASSWORDS = ("pm-secret", "bob-secret", "carol-secret", "boss-secret", "dave-secret", "qa-secret",
             "new-secret 1", "other-secret")


@pytest.fixture(params=["cdb", "mysql"])
def site(request: pytest.FixtureRequest) -> Iterator[Tree]:
    """example.com (postmaster, bob, carol with NO_PASSWD_CHNG, boss a system admin, qa a domain
    admin by QA_ADMIN) and other.org (dave)."""
    if request.param == "cdb":
        tree = Tree()
    else:
        db = request.getfixturevalue("mysql_db")
        load_schema(db)
        tree = Tree(store="mysql")
        tree.write_mysql_credentials(db, tcp=True)  # vdelivermail runs as uid 89
        os.chown(tree.etc / "vpopmail.mysql", VPOPMAIL_UID, VPOPMAIL_GID)
        tree.db = db
    tree.kind = request.param
    tree.clock = CLOCK
    tree.keep_draining()
    with tree:
        tree.add_domain("example.com")
        tree.add_domain("other.org")
        tree.add_user("example.com", "postmaster", "pm-secret")
        tree.add_user("example.com", "bob", "bob-secret")
        tree.add_user("example.com", "carol", "carol-secret", flags=NO_PASSWD_CHNG)
        tree.add_user("example.com", "boss", "boss-secret", flags=SA_ADMIN)
        tree.add_user("example.com", "qa", "qa-secret", flags=QA_ADMIN)
        tree.add_user("other.org", "dave", "dave-secret")
        yield tree


@pytest.fixture
def daemon(site: Tree) -> Iterator[Daemon]:
    with Daemon(site.env()) as running:
        yield running


def stored(tree: Tree, user: str, domain: str = "example.com") -> dict[str, Any] | None:
    """The user's record as the store holds it, read without vpop: the vpasswd line or the row."""
    if tree.kind == "cdb":
        for line in (tree.domain_dir(domain) / "vpasswd").read_text().splitlines():
            fields = line.split(":")
            if fields[0] == user:
                return {"passwd": fields[1], "gid": int(fields[3]), "gecos": fields[4], "dir": fields[5],
                        "quota": fields[6], "clear": fields[7] if len(fields) > 7 else ""}
        return None
    rows = mysql_rows(tree.db, "SELECT pw_passwd, pw_gid, pw_gecos, pw_dir, pw_shell, pw_clear_passwd "
                               "FROM vpopmail WHERE pw_name = %s AND pw_domain = %s", (user, domain))
    if not rows:
        return None
    passwd, gid, gecos, directory, quota, clear = rows[0]
    return {"passwd": passwd, "gid": gid, "gecos": gecos, "dir": directory, "quota": quota, "clear": clear}


def logs_in(tree: Tree, address: str, password: str) -> bool:
    """A POP login through the installed vchkpw."""
    done, record = tree.login(fd3_payload(address, password))
    return done.returncode == 0 and record is not None


def roundcube(daemon: Daemon, user: str, current: str, new: str) -> int:
    """Roundcube's vpopmaild driver changing ``user``'s password; its result code."""
    env = {"PATH": "/usr/bin:/bin", "RC_USER": user, "RC_CURPASS": current, "RC_NEWPASS": new}
    done = subprocess.run(["php", str(HARNESS), "127.0.0.1", str(daemon.port)], env=env,
                          capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    daemon.wait_sessions_done()  # the driver does not wait for the final answer
    return int(done.stdout.decode().strip())


def assert_no_password_logged(tree: Tree, lines: list[str]) -> None:
    for line in lines:
        for secret in PASSWORDS:
            assert secret not in line, line


# ------------------------------------------------------------------ Roundcube


def test_roundcube_changes_a_password_and_vchkpw_takes_only_the_new_one(site: Tree, daemon: Daemon) -> None:
    assert logs_in(site, "bob@example.com", "bob-secret")
    assert roundcube(daemon, "bob@example.com", "bob-secret", "new-secret 1") == 0  # PASSWORD_SUCCESS
    record = stored(site, "bob")
    assert record is not None and record["passwd"].startswith("$6$")  # password_scheme: sha512-crypt
    assert record["clear"] == "new-secret 1"
    assert logs_in(site, "bob@example.com", "new-secret 1")
    assert not logs_in(site, "bob@example.com", "bob-secret")
    lines = site.syslog_lines()
    assert "vpopmaild: mod_user bob@example.com (clear_text_password) by bob@example.com:127.0.0.1" in lines
    assert_no_password_logged(site, lines)


def test_roundcube_new_hashes_follow_the_password_scheme(site: Tree) -> None:
    site.write_settings(password_scheme="bcrypt")
    with Daemon(site.env()) as daemon:
        assert roundcube(daemon, "bob@example.com", "bob-secret", "new-secret 1") == 0
    record = stored(site, "bob")
    assert record is not None and record["passwd"].startswith("$2b$12$")
    assert logs_in(site, "bob@example.com", "new-secret 1")


def test_roundcube_with_a_wrong_current_password_changes_nothing(site: Tree, daemon: Daemon) -> None:
    before = stored(site, "bob")
    assert roundcube(daemon, "bob@example.com", "not-it", "new-secret 1") == 2  # PASSWORD_ERROR
    assert stored(site, "bob") == before
    assert logs_in(site, "bob@example.com", "bob-secret")
    assert "vpopmaild: password fail bob@example.com:127.0.0.1" in site.syslog_lines()


def test_roundcube_is_refused_under_no_passwd_chng(site: Tree, daemon: Daemon) -> None:
    before = stored(site, "carol")
    assert roundcube(daemon, "carol@example.com", "carol-secret", "new-secret 1") == 2  # vpopmail: 0
    assert stored(site, "carol") == before
    assert logs_in(site, "carol@example.com", "carol-secret")
    lines = site.syslog_lines()
    assert ("vpopmaild: mod_user carol@example.com refused (40.506 Password change not allowed): "
            "NO_PASSWD_CHNG is set by carol@example.com:127.0.0.1") in lines
    assert_no_password_logged(site, lines)


def test_domain_limits_disable_password_changing_too(site: Tree, daemon: Daemon) -> None:
    with daemon.client() as admin:
        assert admin.slogin("boss@example.com", "boss-secret") == "+OK "
        assert admin.block("set_limits example.com", ["disable_password_changing 1"]) == ("+OK ", "+OK ")
    assert roundcube(daemon, "bob@example.com", "bob-secret", "new-secret 1") == 2
    assert logs_in(site, "bob@example.com", "bob-secret")
    # an admin's own account too: postmaster and QA_ADMIN (domain admins), boss (a system admin)
    for user, password in (("postmaster", "pm-secret"), ("qa", "qa-secret"), ("boss", "boss-secret")):
        before = stored(site, user)
        assert roundcube(daemon, f"{user}@example.com", password, "new-secret 1") == 2, user
        assert stored(site, user) == before
        assert logs_in(site, f"{user}@example.com", password)
    assert ("vpopmaild: mod_user postmaster@example.com refused (40.506 Password change not allowed): "
            "NO_PASSWD_CHNG is set by postmaster@example.com:127.0.0.1") in site.syslog_lines()
    with daemon.client() as admin:  # their admins may still set a user's password
        assert admin.slogin("postmaster@example.com", "pm-secret") == "+OK "
        new_password = ["clear_text_password new-secret 1"]
        assert admin.block("mod_user bob@example.com", new_password) == ("+OK ", "+OK ")
    assert logs_in(site, "bob@example.com", "new-secret 1")


# ------------------------------------------------------------------ logins


def test_greeting_and_the_three_logins(site: Tree, daemon: Daemon) -> None:
    domain_dir = site.domain_dir("example.com")
    with daemon.client() as client:
        assert client.greeting == "+OK "
        status, lines = client.call("login bob@example.com bob-secret")
    record = stored(site, "bob")
    assert status == "+OK+"
    assert lines == [
        f"vpopmail_dir {site.vpopmail_home}", f"domain_dir {domain_dir}", "uid 89", "gid 89",
        "name bob", "comment bob", "quota NOQUOTA", f"user_dir {domain_dir}/bob",
        f"encrypted_password {record['passwd']}", "clear_text_password bob-secret",
        "no_password_change 0", "no_pop 0", "no_webmail 0", "no_imap 0", "bounce_mail 0", "no_relay 0",
        "no_dialup 0", "user_flag_0 0", "user_flag_1 0", "user_flag_2 0", "user_flag_3 0", "no_smtp 0",
        "domain_admin_privileges 0", "override_domain_limits 0", "no_spamassassin 0", "delete_spam 0",
        "no_maildrop 0", "system_admin_privileges 0"]
    with daemon.client() as client:
        info = dict(line.split(" ", 1) for line in client.call("clogin postmaster@example.com pm-secret")[1])
        assert info["gidflags"] == str(QA_ADMIN)  # postmaster is a domain admin (QA_ADMIN OR'ed in)
        assert "no_pop" not in info
    with daemon.client() as client:
        assert client.slogin("bob@example.com", "bob-secret") == "+OK "
        assert client.command("quit") == "+OK "
        assert client.closed()


def test_login_refusals_say_nothing_about_which_names_exist(site: Tree, daemon: Daemon) -> None:
    with daemon.client() as client:
        assert client.command("login") == "-ERR 6.203 Email Address Required"
        assert client.command("login bob@example.com") == "-ERR 7.204 Password Required"
        assert client.slogin("bob@example.com", "wrong") == "-ERR 8.207 Invalid Login"
    with daemon.client() as client:
        assert client.slogin("nobody@example.com", "wrong") == "-ERR 8.207 Invalid Login"
        assert client.slogin("bob@nowhere.example", "wrong") == "-ERR 8.207 Invalid Login"
        assert client.slogin("b/ob@example.com", "wrong") == "-ERR 8.205 Invalid Login"
    lines = site.syslog_lines()
    assert "vpopmaild: vpopmail user not found nobody@example.com:127.0.0.1" in lines
    assert_no_password_logged(site, lines)


def test_three_failed_logins_end_the_connection(site: Tree, daemon: Daemon) -> None:
    with daemon.client() as client:
        for _ in range(2):
            assert client.slogin("bob@example.com", "wrong") == "-ERR 8.207 Invalid Login"
        assert client.slogin("bob@example.com", "wrong") == "-ERR 8.207 Invalid Login"
        assert client.line() == "-ERR 5.105 Too many invalid login attempts"
        assert client.closed()
    assert "vpopmaild: 3 failed logins: connection closed -:127.0.0.1" in site.syslog_lines()


def test_four_lines_before_a_login_at_most(site: Tree, daemon: Daemon) -> None:
    with daemon.client() as client:
        assert client.call("help")[0] == "+OK+"
        client.send("")  # a blank line counts, as in vpopmail
        assert client.command("user_info bob@example.com") == "-ERR 4.104 Invalid Command"
        assert client.call("help")[0] == "+OK+"
        assert client.line() == "-ERR 2.102 Too many actions before login"
        assert client.closed()
    with daemon.client() as client:  # the fourth line may be the login
        for _ in range(3):
            assert client.call("help")[0] == "+OK+"
        assert client.slogin("bob@example.com", "bob-secret") == "+OK "
        assert client.call("help")[0] == "+OK+"


def test_logins_are_checked_as_the_vpopmaild_service(site: Tree, daemon: Daemon) -> None:
    site.add_user("example.com", "eve", "eve-secret", flags=0x04)  # NO_WEBMAIL
    site.add_user("example.com", "sam", "sam-secret", flags=0x800)  # NO_SMTP
    with daemon.client() as client:  # the right password and a wrong one: the same answer
        assert client.slogin("eve@example.com", "eve-secret") == "-ERR 8.207 Invalid Login"
        assert client.slogin("eve@example.com", "not-it") == "-ERR 8.207 Invalid Login"
    with daemon.client() as client:
        assert client.slogin("sam@example.com", "sam-secret") == "+OK "
    lines = site.syslog_lines()
    assert "vpopmaild: webmail access denied eve@example.com:127.0.0.1" in lines  # the real reason
    assert "vpopmaild: password fail eve@example.com:127.0.0.1" in lines
    site.write_settings(vpopmaild_service="smtp")  # an SMTP server authenticating through vpopmaild
    with Daemon(site.env()) as smtp, smtp.client() as client:
        assert client.slogin("sam@example.com", "sam-secret") == "-ERR 8.207 Invalid Login"
        assert client.slogin("eve@example.com", "eve-secret") == "+OK "
    assert "vpopmaild: smtp access denied sam@example.com:127.0.0.1" in site.syslog_lines()


# ------------------------------------------------------------------ limits of the wire


def test_a_silent_client_is_dropped_after_the_read_timeout(site: Tree) -> None:
    site.write_settings(vpopmaild_timeout=1)
    with Daemon(site.env()) as daemon:
        with daemon.client() as client:
            started = time.monotonic()
            assert client.line() == "-ERR 3.103 Read Timeout"
            assert 0.9 < time.monotonic() - started < 10
            assert client.closed()
        with daemon.client() as client:
            assert client.slogin("bob@example.com", "bob-secret") == "+OK "
            assert client.line() == "-ERR 3.106 Read Timeout"
        with daemon.client() as client:  # a line trickled in byte by byte gets no more time
            for byte in b"help":
                client.sock.sendall(bytes([byte]))
                time.sleep(0.3)
            assert client.line() == "-ERR 3.103 Read Timeout"
    assert "vpopmaild: read timeout (1 s) -:127.0.0.1" in site.syslog_lines()


def test_a_line_of_one_megabyte_is_refused_and_thrown_away(site: Tree, daemon: Daemon) -> None:
    with daemon.client() as client:
        client.send(b"slogin bob@example.com " + b"x" * (1 << 20))
        assert client.line() == "-ERR 39.110 Line too long"
        assert client.slogin("bob@example.com", "bob-secret") == "+OK "
        client.send(b"mod_user bob@example.com " + b"y" * (1 << 20))
        assert client.line() == "-ERR 39.108 Line too long"
        ack, final = client.block("mod_user bob@example.com", [b"comment " + b"z" * (1 << 20)])
        assert (ack, final) == ("+OK ", "-ERR 39.507 Line too long")
        assert client.command("quit") == "+OK "
    assert stored(site, "bob")["gecos"] == "bob"


def test_a_client_gone_in_the_middle_of_mod_user_changes_nothing(site: Tree, daemon: Daemon) -> None:
    before = snapshot(site.domain_dir("example.com"))
    row = stored(site, "bob")
    with daemon.client() as client:
        assert client.slogin("bob@example.com", "bob-secret") == "+OK "
        assert client.command("mod_user bob@example.com") == "+OK "
        client.send("clear_text_password new-secret 1", "comment Robert")
        client.sock.shutdown(socket.SHUT_WR)
        assert client.closed()
    daemon.wait_sessions_done()
    assert stored(site, "bob") == row
    assert snapshot(site.domain_dir("example.com")) == before
    assert logs_in(site, "bob@example.com", "bob-secret")
    assert ("vpopmaild: client gone during mod_user bob@example.com: nothing changed "
            "bob@example.com:127.0.0.1") in site.syslog_lines()


# ------------------------------------------------------------------ every command


def test_help_lists_what_the_level_may_do(site: Tree, daemon: Daemon) -> None:
    with daemon.client() as client:
        assert client.call("help")[1] == [
            "", "Login", "login login user@domain password - expanded bitmaps",
            "clogin login user@domain password - compact bitmapts",
            "slogin login user@domain password - silent results", "", "Utility", "help help",
            "exit quit", "quit quit", "q quit"]
        client.slogin("bob@example.com", "bob-secret")
        user_help = client.call("help")[1]
    assert "mod_user user@domain (option lines)<crlf>.<crlf>" in user_help
    assert not any(line.startswith(("add_user", "add_domain")) for line in user_help)
    with daemon.client() as client:
        client.slogin("boss@example.com", "boss-secret")
        assert "add_domain domain postmaster-password<crlf>" in client.call("help")[1]


def test_domain_commands(site: Tree, daemon: Daemon) -> None:
    assign = site.qmail_home / "users" / "assign"
    with daemon.client() as client:
        assert client.slogin("boss@example.com", "boss-secret") == "+OK "
        assert client.command("add_domain new.net pm-new") == "+OK "
        assert "+new.net-:new.net:89:89:" in assign.read_text()
        assert logs_in(site, "postmaster@new.net", "pm-new")
        assert client.command("add_domain new.net pm-new") == "-ERR 0.804 Domain already exists"
        assert client.command("add_alias_domain new.net alias.net") == "+OK "
        assert "+alias.net-:new.net:89:89:" in assign.read_text()
        assert client.call("dom_info alias.net") == ("+OK+", [
            "domain new.net", f"path {site.domain_dir('new.net')}", "uid 89", "gid 89", "alias alias.net"])
        assert client.call("list_domains") == ("+OK+", [  # users/assign's order (sorted)
            "new.net alias.net", "example.com example.com", "new.net new.net", "other.org other.org"])
        assert client.call("list_domains 2 2") == ("+OK+", ["new.net new.net", "other.org other.org"])
        assert client.info("domain_count") == {"count": "4"}
        assert client.info("find_domain other.org") == {"page": "4"}
        assert client.info("find_domain other.org 3") == {"page": "2"}
        assert client.call("find_domain unknown.example") == ("+OK+", [])
        assert client.command("del_domain new.net") == "+OK "
        assert "new.net" not in assign.read_text()
        assert not site.domain_dir("new.net").exists()
        assert client.command("del_domain new.net") == "-ERR 0.1303 Domain does not exist"
        assert client.command("dom_info new.net") == "-ERR 0.1404 Domain does not exist"
        # vaddaliasdomain's decision: either order, its texts
        assert client.command("add_alias_domain alias2.org other.org") == "+OK "
        assert "+alias2.org-:other.org:89:89:" in assign.read_text()
        assert client.command("add_alias_domain none.example none2.example") == \
            "-ERR 0.1204 Neither 'none.example' or 'none2.example' exist, unable to create alias."
        assert client.command("add_alias_domain example.com other.org") == \
            "-ERR 0.1204 Both domains already exist, unable to create alias."


def test_user_commands(site: Tree, daemon: Daemon) -> None:
    with daemon.client() as client:
        assert client.slogin("postmaster@example.com", "pm-secret") == "+OK "
        assert client.command("add_user frank@example.com frank secret") == "+OK "
        assert logs_in(site, "frank@example.com", "frank secret")
        assert stored(site, "frank")["passwd"].startswith("$6$")
        assert client.command("add_user frank@example.com x") == "-ERR 0.305 User already exists"
        info = client.info("user_info frank@example.com")
        assert info["name"] == "frank" and info["user_dir"] == str(site.domain_dir("example.com") / "frank")
        assert info["clear_text_password"] == "frank secret"
        assert info["gidflags"] == "0"  # after slogin, as after clogin (vpopmail's output_type)
        assert client.info("user_count example.com") == {"count": "6"}
        status, lines = client.call("list_users example.com 2 3")
        assert status == "+OK+"
        shown = [line for line in lines if line.startswith("name ")]
        assert shown == ["name frank", "name postmaster", "name qa"]
        assert lines.count("") == 3  # a blank line after each user
        names = [line[5:] for line in client.call("list_users example.com")[1] if line.startswith("name ")]
        assert names == ["bob", "boss", "carol", "frank", "postmaster", "qa"]
        changes = ["comment Frank F", "user_flag_2 1", "no_pop 0"]  # no_pop 0: no change, allowed
        assert client.block("mod_user frank@example.com", changes) == ("+OK ", "+OK ")
        record = stored(site, "frank")
        assert record["gecos"] == "Frank F" and record["gid"] == 0x200
        # NO_POP is for a system admin or a domain admin with V_OVERRIDE: the whole change is refused
        refused = client.block("mod_user frank@example.com", ["comment Other", "no_pop 1"])
        assert refused == ("+OK ", "-ERR 9.507 Not Authorized")
        assert stored(site, "frank") == record
        with daemon.client() as boss:
            assert boss.slogin("boss@example.com", "boss-secret") == "+OK "
            assert boss.block("mod_user frank@example.com", ["no_pop 1"]) == ("+OK ", "+OK ")
        assert stored(site, "frank")["gid"] == NO_POP | 0x200
        assert not logs_in(site, "frank@example.com", "frank secret")  # NO_POP
        assert client.info("get_lastauth frank@example.com") == {"time": str(CLOCK), "ip": "192.0.2.10"}
        assert ("vpopmaild: mod_user frank@example.com refused (9.507 Not Authorized): may not change "
                "no_pop by postmaster@example.com:127.0.0.1") in site.syslog_lines()
        assert client.command("add_user gina@example.com gina-secret") == "+OK "
        assert client.info("get_lastauth gina@example.com") == {"time": str(CLOCK), "ip": "0.0.0.0"}
        assert client.info("get_lastauth carol@example.com") == {"time": "0", "ip": "0.0.0.0"}
        assert client.command("del_user frank@example.com") == "+OK "
        assert stored(site, "frank") is None
        assert not (site.domain_dir("example.com") / "frank").exists()
        assert client.command("del_user frank@example.com") == "-ERR 12.405 User does not exist"


def test_quota_and_sizes(site: Tree, daemon: Daemon) -> None:
    message = b"From: a@example.org\nSubject: hi\n\n" + b"x" * 3000 + b"\n"
    assert site.deliver("bob@example.com", message).returncode == 0
    with daemon.client() as client:
        assert client.slogin("boss@example.com", "boss-secret") == "+OK "
        assert client.block("mod_user bob@example.com", ["quota 10M"]) == ("+OK ", "+OK ")
        assert stored(site, "bob")["quota"] == "10485760S"
        maildirsize = site.domain_dir("example.com") / "bob" / "Maildir" / "maildirsize"
        assert maildirsize.read_text().splitlines()[0] == "10485760S"
        size = sum(path.stat().st_size for path in (maildirsize.parent / "new").iterdir())
        assert client.info("get_user_size bob@example.com") == {"size": str(size), "count": "1"}
        sizes = client.call("get_domain_size example.com")[1]
    at = sizes.index("user bob@example.com")
    assert sizes[at:at + 3] == ["user bob@example.com", f"size {size}", "count 1"]
    assert sizes[-3:] == ["domain example.com", f"size {size}", "count 1"]
    with daemon.client() as client:
        assert client.slogin("bob@example.com", "bob-secret") == "+OK "
        assert client.info("get_user_size bob@example.com")["count"] == "1"  # their own account
        assert client.info("get_lastauth bob@example.com") == {"time": "0", "ip": "0.0.0.0"}
        assert client.command("get_user_size carol@example.com") == "-ERR 11.3804 Not Authorized for domain"


def test_alias_commands(site: Tree, daemon: Daemon) -> None:
    def lines_of(alias: str) -> list[str]:
        if site.kind == "cdb":
            path = site.domain_dir("example.com") / f".qmail-{alias}"
            return path.read_text().splitlines() if path.exists() else []
        rows = mysql_rows(site.db, "SELECT valias_line FROM valias WHERE alias = %s AND "
                                   "domain = 'example.com' ORDER BY valias_line", (alias,))
        return [row[0] for row in rows]

    with daemon.client() as client:
        assert client.slogin("postmaster@example.com", "pm-secret") == "+OK "
        assert client.command("add_alias sales@example.com bob@example.com") == "+OK "
        assert client.command("add_alias sales@example.com &carol@example.com") == "+OK "
        assert client.command("add_alias sales@example.com bob@example.com") == \
            "-ERR 17.907 Alias Insertion Failed"
        assert sorted(lines_of("sales")) == ["&carol@example.com", "bob@example.com"]
        assert sorted(client.call("list_alias example.com")[1]) == [
            "sales@example.com &carol@example.com", "sales@example.com bob@example.com"]
        assert sorted(client.call("list_alias sales@example.com")[1]) == [
            "sales@example.com &carol@example.com", "sales@example.com bob@example.com"]
        assert client.command("remove_alias sales@example.com bob@example.com") == "+OK "
        assert lines_of("sales") == ["&carol@example.com"]
        assert client.command("remove_alias sales@example.com bob@example.com") == \
            "-ERR 18.1007 Alias Removal Failed"
        # a program or file delivery would run as the domain's uid: for system admins only
        assert client.command("add_alias run@example.com |/bin/sh -c id") == "-ERR 9.908 Not Authorized"
        assert client.command("add_alias run@example.com /tmp/Maildir/") == "-ERR 9.908 Not Authorized"
        assert lines_of("run") == []
        assert client.command("add_alias sales@other.org bob@example.com") == \
            "-ERR 11.904 Not Authorized for domain"
        assert client.command("delete_alias sales@example.com") == "+OK "
        assert lines_of("sales") == []
        assert client.command("delete_alias sales@example.com") == "-ERR 19.1106 Alias Deletion Failed"
        assert client.call("list_alias example.com") == ("+OK+", [])
        assert client.call("list_alias nobody@example.com") == ("+OK+", [])  # vpopmail: only "."
    with daemon.client() as client:
        assert client.slogin("boss@example.com", "boss-secret") == "+OK "
        assert client.command("add_alias run@example.com |/usr/bin/true arg") == "+OK "
        assert lines_of("run") == ["|/usr/bin/true arg"]


def test_limits_commands(site: Tree, daemon: Daemon) -> None:
    limits_file = site.domain_dir("example.com") / ".qmailadmin-limits"
    with daemon.client() as client:
        assert client.slogin("boss@example.com", "boss-secret") == "+OK "
        status, lines = client.call("get_limits example.com")
        assert status == "+OK+" and "max_popaccounts -1" in lines
        assert [line.split()[0] for line in lines].count("perm_defaultquota") == 1  # vpopmail: twice
        ack, final = client.block("set_limits example.com", [
            "max_popaccounts 10", "disk_quota: 100", "disable_pop 1", "perm_account 7",
            "perm_maillist_users 3"])
        assert (ack, final) == ("+OK ", "+OK ")
        limits = client.info("get_limits example.com")
        assert (limits["max_popaccounts"], limits["disk_quota"], limits["disable_pop"]) == ("10", "100", "1")
        perms = (limits["perm_account"], limits["perm_maillist_users"], limits["perm_quota"])
        assert perms == ("7", "3", "0")
        assert "maxpopaccounts: 10" in limits_file.read_text().splitlines()
        assert not logs_in(site, "bob@example.com", "bob-secret")  # disable_pop
        before = limits_file.read_text()
        for bad in (["max_popaccounts ten"], ["disable_pop 2"], ["no_such_limit 1"], ["perm_alias 9"]):
            assert client.block("set_limits example.com", bad) == ("+OK ", "-ERR 41.3506 Invalid Parameter")
        assert limits_file.read_text() == before
        assert client.command("del_limits example.com") == "+OK "
        assert not limits_file.exists()
        assert client.info("get_limits example.com")["max_popaccounts"] == "-1"
    with daemon.client() as client:
        assert client.slogin("postmaster@example.com", "pm-secret") == "+OK "
        assert client.info("get_limits example.com")["disable_pop"] == "0"  # their own domain
        assert client.command("get_limits other.org") == "-ERR 11.3404 Not Authorized for domain"
        assert client.command("set_limits example.com") == "-ERR 9.3501 Not Authorized"


def test_ip_map_commands(site: Tree) -> None:
    with Daemon(site.env()) as daemon, daemon.client() as client:
        assert client.slogin("boss@example.com", "boss-secret") == "+OK "
        assert client.command("show_ip_map") == "-ERR 33.3302 Not Available"  # ip_alias_domains = no
    site.write_settings(ip_alias_domains=True)
    with Daemon(site.env()) as daemon, daemon.client() as client:
        assert client.slogin("boss@example.com", "boss-secret") == "+OK "
        assert client.command("add_ip_map 192.0.2.1 example.com") == "+OK "
        assert client.command("add_ip_map 192.0.2.1 unknown.example") == "-ERR 38.3104 Invalid Domain"
        assert client.command("add_ip_map 300.1.1.1 example.com") == "-ERR 0.3105 invalid IP address"
        assert client.command("get_ip_map") == "-ERR 37.3002 IP Required"  # vpopmail had no text for 37
        assert client.call("show_ip_map") == ("+OK+", ["192.0.2.1 example.com"])
        assert client.call("get_ip_map 192.0.2.1") == ("+OK+", ["192.0.2.1 example.com"])
        assert logs_in(site, "bob", "bob-secret")  # TCPLOCALIP 192.0.2.1 -> example.com
        assert client.command("del_ip_map 192.0.2.1 example.com") == "+OK "
        assert client.command("del_ip_map 192.0.2.1 example.com") == "-ERR 0.3204 no such mapping"
        assert client.call("show_ip_map") == ("+OK+", [])


def test_file_commands_are_not_offered(site: Tree, daemon: Daemon) -> None:
    before = snapshot(site.domain_dir("example.com"))
    with daemon.client() as client:
        assert client.slogin("postmaster@example.com", "pm-secret") == "+OK "
        domain_dir = site.domain_dir("example.com")
        for command, minor in (("read_file example.com/vpasswd", 2101), (f"list_dir {domain_dir}/", 1801),
                               ("mk_dir example.com/x/", 1601), ("rm_dir bob@example.com/Maildir", 1701),
                               ("rm_file example.com/.qmail-default", 1901),
                               ("stat_file example.com/vpasswd", 2201),
                               ("rename_file example.com/a example.com/b", 3807)):
            assert client.command(command) == f"-ERR 33.{minor} Not Available"
        # write_file's data lines (Net_Vpopmaild sends them at once) are read, not taken for commands
        client.send("write_file example.com/.qmail-x", "|/bin/sh -c id", "quit", ".")
        assert client.line() == "-ERR 33.2002 Not Available"
        assert client.call("list_lists example.com")[0] == "-ERR 36.2901 Not Implemented yet"
    assert snapshot(site.domain_dir("example.com")) == before


def test_mod_user_rules(site: Tree, daemon: Daemon) -> None:
    with daemon.client() as client:  # a user: their own account, no flags of the admins
        assert client.slogin("bob@example.com", "bob-secret") == "+OK "
        assert client.command("mod_user carol@example.com") == "-ERR 11.504 Not Authorized for domain"
        assert client.command("mod_user dave@other.org") == "-ERR 11.504 Not Authorized for domain"
        before = stored(site, "bob")
        for lines, answer in (
                (["encrypted_password $1$abcdefgh$0123456789012345678901"], "-ERR 9.507 Not Authorized"),
                (["quota 1M"], "-ERR 9.507 Not Authorized"),
                (["system_admin_privileges 1"], "-ERR 9.507 Not Authorized"),
                (["domain_admin_privileges 1"], "-ERR 9.507 Not Authorized"),
                (["clear_all_flags 1", "no_relay 1"], "-ERR 9.507 Not Authorized"),
                (["no_such_thing 1"], "-ERR 41.507 Invalid Parameter"),
                (["no_spamassassin yes"], "-ERR 41.507 Invalid Parameter"),
                (["clear_text_password"], "-ERR 41.507 Invalid Parameter"),
                (["comment a:b"], "-ERR 0.507 bad character")):
            assert client.block("mod_user bob@example.com", ["comment changed", *lines]) == ("+OK ", answer)
        assert stored(site, "bob") == before
        preferences = ["comment Bob", "no_spamassassin 1", "delete_spam 1"]
        assert client.block("mod_user bob@example.com", preferences) == ("+OK ", "+OK ")
        assert stored(site, "bob")["gid"] == 0x4000 | 0x8000
    with daemon.client() as client:  # a domain admin: their domain, never a system admin's account
        assert client.slogin("qa@example.com", "qa-secret") == "+OK "
        assert client.command("mod_user dave@other.org") == "-ERR 11.503 Not Authorized for domain"
        assert client.command("mod_user boss@example.com") == "-ERR 9.508 Not Authorized"
        assert client.command("del_user boss@example.com") == "-ERR 9.406 Not Authorized"
        new_password = ["clear_text_password new-secret 1"]
        assert client.block("mod_user bob@example.com", new_password) == ("+OK ", "+OK ")
        assert client.block("mod_user bob@example.com", ["override_domain_limits 1"]) == \
            ("+OK ", "-ERR 9.507 Not Authorized")
    assert logs_in(site, "bob@example.com", "new-secret 1")
    with daemon.client() as client:  # a system admin sets a stored hash
        assert client.slogin("boss@example.com", "boss-secret") == "+OK "
        from passlib.hash import md5_crypt

        hashed = md5_crypt.using(salt="vpopmail").hash("other-secret")
        assert client.block("mod_user dave@other.org", [f"encrypted_password {hashed}"]) == ("+OK ", "+OK ")
        assert stored(site, "dave", "other.org")["passwd"] == hashed
        assert stored(site, "dave", "other.org")["clear"] == ""
        assert client.block("mod_user carol@example.com", ["clear_text_password new-secret 1"]) == \
            ("+OK ", "+OK ")  # NO_PASSWD_CHNG binds carol, not her admins
        assert client.block("mod_user boss@example.com", ["no_password_change 1"]) == ("+OK ", "+OK ")
        assert client.command("mod_user boss@example.com") == "-ERR 40.506 Password change not allowed"
    assert logs_in(site, "dave@other.org", "other-secret")
    assert logs_in(site, "carol@example.com", "new-secret 1")
    assert_no_password_logged(site, site.syslog_lines())


def test_a_refused_mod_user_does_not_take_its_lines_for_commands(site: Tree, daemon: Daemon) -> None:
    """Roundcube sends mod_user, its lines and '.' without waiting: after a refusal they are dropped."""
    with daemon.client() as client:
        assert client.slogin("bob@example.com", "bob-secret") == "+OK "
        client.send("mod_user carol@example.com", "clear_text_password new-secret 1", "comment x", ".",
                    "mod_user bob@example.com")
        assert client.line() == "-ERR 11.504 Not Authorized for domain"
        assert client.line() == "+OK "  # the next command's ack, nothing for the dropped lines
        client.send("comment Bobby", ".")
        assert client.line() == "+OK "
        assert client.command("quit") == "+OK "
    assert stored(site, "bob")["gecos"] == "Bobby"
    assert stored(site, "carol")["clear"] == "carol-secret"
    lines = site.syslog_lines()
    assert not any("Invalid Command" in line for line in lines)
    assert_no_password_logged(site, lines)


def test_every_refusal_is_logged_without_the_password(site: Tree, daemon: Daemon) -> None:
    cases = (
        ("bob@example.com", "bob-secret", "user_info carol@example.com", "-ERR 9.601 Not Authorized"),
        ("bob@example.com", "bob-secret", "add_user x@example.com new-secret 1", "-ERR 9.301 Not Authorized"),
        ("bob@example.com", "bob-secret", "list_domains", "-ERR 9.2301 Not Authorized"),
        ("bob@example.com", "bob-secret", "get_lastauth carol@example.com",
         "-ERR 11.3704 Not Authorized for domain"),
        ("bob@example.com", "bob-secret", "frobnicate new-secret 1", "-ERR 4.107 Invalid Command"),
        ("postmaster@example.com", "pm-secret", "add_domain x.example new-secret 1",
         "-ERR 9.801 Not Authorized"),
        ("postmaster@example.com", "pm-secret", "add_user x@other.org new-secret 1",
         "-ERR 11.304 Not Authorized for domain"),
        ("postmaster@example.com", "pm-secret", "user_info dave@other.org",
         "-ERR 11.604 Not Authorized for domain"),
        ("postmaster@example.com", "pm-secret", "del_user nobody@example.com",
         "-ERR 12.405 User does not exist"),
        ("postmaster@example.com", "pm-secret", "add_user x@example.com", "-ERR 7.305 Password Required"),
        ("postmaster@example.com", "pm-secret", "user_count other.org",
         "-ERR 11.2603 Not Authorized for domain"),
        ("boss@example.com", "boss-secret", "add_user b/ad@example.com new-secret 1",
         "-ERR 10.303 Invalid Email Address"),
        ("boss@example.com", "boss-secret", "add_domain bad_name new-secret 1",
         "-ERR 0.804 Invalid domain name"),
        ("boss@example.com", "boss-secret", "list_users", "-ERR 13.2702 Domain Required"),
    )
    for address, password, command, answer in cases:
        with daemon.client() as client:
            assert client.slogin(address, password) == "+OK "
            assert client.command(command) == answer, command
        word = command.split()[0]
        logged = [line for line in site.syslog_lines() if " refused (" in line]
        code = answer.split()[1]
        assert len(logged) == 1 and f"refused ({code} " in logged[0], (command, logged)
        assert logged[0].endswith(f"by {address}:127.0.0.1")
        shown = word if answer != "-ERR 4.107 Invalid Command" else "command"
        assert logged[0].startswith(f"vpopmaild: {shown}")
        assert_no_password_logged(site, logged)


TEMPORARY = "-ERR 42.209 Temporary failure, try again later"
SECRETS = {"postmaster": "pm-secret", "bob": "bob-secret"}


@contextlib.contextmanager
def mysql_tree(db: dict[str, Any], *users: str) -> Iterator[Tree]:
    """A MySQL tree of its own (connect timeout 1 s): example.com with ``users``."""
    load_schema(db)
    with Tree(store="mysql", mysql_connect_timeout=1) as tree:
        tree.keep_draining()
        tree.write_mysql_credentials(db)
        tree.add_domain("example.com")
        for user in users:
            tree.add_user("example.com", user, SECRETS[user])
        yield tree


def test_a_database_that_is_down_is_a_temporary_failure(mysql_db: dict[str, Any],
                                                       dead_mysql: dict[str, Any]) -> None:
    with mysql_tree(mysql_db, "bob") as tree:
        tree.write_mysql_credentials(dead_mysql)
        with Daemon(tree.env()) as daemon, daemon.client() as client:
            for _ in range(3):
                assert client.slogin("bob@example.com", "bob-secret") == TEMPORARY
            assert client.call("help")[0] == "+OK+"  # not failed logins: the fourth line is still answered
            assert client.line() == "-ERR 2.102 Too many actions before login"
        assert any(line.startswith("vpopmaild: ") and "database" in line for line in tree.syslog_lines())


# ------------------------------------------------------------------ what a domain admin may see and do


def users_listed(client: Any, domain: str) -> dict[str, dict[str, str]]:
    """``list_users domain`` as {name: {field: value}} (each user's lines end with an empty line)."""
    status, lines = client.call(f"list_users {domain}")
    assert status == "+OK+"
    users, current = {}, {}
    for line in lines:
        if line == "":
            users[current["name"]] = current
            current = {}
        else:
            key, _, value = line.partition(" ")
            current[key] = value
    return users


def test_a_domain_admin_never_reads_a_system_admins_password(site: Tree, daemon: Daemon) -> None:
    boss = stored(site, "boss")
    for admin, password in (("postmaster@example.com", "pm-secret"), ("qa@example.com", "qa-secret")):
        with daemon.client() as client:
            assert client.slogin(admin, password) == "+OK "
            assert client.command("user_info boss@example.com") == "-ERR 9.606 Not Authorized"
            listed = users_listed(client, "example.com")
            assert listed["boss"]["encrypted_password"] == "" and listed["boss"]["clear_text_password"] == ""
            assert listed["bob"]["clear_text_password"] == "bob-secret"  # their users' they may
            assert client.info("user_info bob@example.com")["clear_text_password"] == "bob-secret"
    with daemon.client() as client:
        assert client.slogin("boss@example.com", "boss-secret") == "+OK "
        listed = users_listed(client, "example.com")
        assert listed["boss"]["encrypted_password"] == boss["passwd"]
        assert client.info("user_info boss@example.com")["clear_text_password"] == "boss-secret"
    lines = site.syslog_lines()
    assert ("vpopmaild: user_info boss@example.com refused (9.606 Not Authorized): the account is a "
            "system admin's by postmaster@example.com:127.0.0.1") in lines
    assert_no_password_logged(site, lines)


def alias_lines(tree: Tree, alias: str, domain: str = "example.com") -> list[str]:
    """An alias's lines as the store holds them: the ``.qmail-<alias>`` file or the valias rows."""
    if tree.kind == "cdb":
        path = tree.domain_dir(domain) / f".qmail-{alias}"
        return path.read_text().splitlines() if path.exists() else []
    rows = mysql_rows(tree.db, "SELECT valias_line FROM valias WHERE alias = %s AND domain = %s "
                               "ORDER BY valias_line", (alias, domain))
    return [row[0] for row in rows]


def test_a_domain_admin_cannot_alias_an_account_away(site: Tree, daemon: Daemon) -> None:
    with daemon.client() as client:
        assert client.slogin("postmaster@example.com", "pm-secret") == "+OK "
        for name in ("boss@example.com", "Boss@EXAMPLE.COM", "bob@example.com"):
            assert client.command(f"add_alias {name} me@evil.example") == "-ERR 9.909 Not Authorized"
        assert client.command("add_alias sales@example.com me@evil.example") == "+OK "  # no account
    assert alias_lines(site, "boss") == [] and alias_lines(site, "bob") == []
    assert alias_lines(site, "sales") == ["me@evil.example"]
    assert logs_in(site, "boss@example.com", "boss-secret")
    assert ("vpopmaild: add_alias boss@example.com refused (9.909 Not Authorized): an account has that "
            "name by postmaster@example.com:127.0.0.1") in site.syslog_lines()
    with daemon.client() as client:  # a system admin may (a forward of an account they decide on)
        assert client.slogin("boss@example.com", "boss-secret") == "+OK "
        assert client.command("add_alias bob@example.com bob@other.org") == "+OK "
    assert alias_lines(site, "bob") == ["bob@other.org"]


def test_admin_commands_read_the_update_server(mysql_db: dict[str, Any], dead_mysql: dict[str, Any]) -> None:
    """The read line of the credentials names a live server, the update line one that is down:
    logins (which read the replica, as vchkpw) succeed, every admin command reads the update
    server and fails as temporary; the lines of a mod_user sent without waiting are dropped."""
    with mysql_tree(mysql_db, "postmaster", "bob") as tree:
        tree.write_mysql_credentials(mysql_db, dead_mysql)
        with Daemon(tree.env()) as daemon:
            with daemon.client() as client:
                assert client.slogin("postmaster@example.com", "pm-secret") == "+OK "
                assert client.command("user_info bob@example.com") == \
                    "-ERR 42.605 Temporary failure, try again later"
                client.send("mod_user bob@example.com", "clear_text_password new-secret 1", ".", "quit")
                assert client.line() == "-ERR 42.507 Temporary failure, try again later"
                assert client.line() == "+OK "  # quit's: nothing for the dropped lines
                assert client.closed()
            with daemon.client() as client:  # Roundcube's own driver: a failure, never a success
                assert client.slogin("bob@example.com", "bob-secret") == "+OK "
            assert roundcube(daemon, "bob@example.com", "bob-secret", "new-secret 1") == 2
        lines = tree.syslog_lines()
        assert not any("Invalid Command" in line for line in lines)
        assert_no_password_logged(tree, lines)


def test_passwords_and_comments_the_vpasswd_line_cannot_hold_are_refused(site: Tree, daemon: Daemon) -> None:
    """':' splits a vpasswd line, a control character a protocol line: refused on every store,
    by vpopmaild and by the admin commands alike (one check)."""
    before = stored(site, "bob")
    with daemon.client() as client:
        assert client.slogin("postmaster@example.com", "pm-secret") == "+OK "
        for line in ("clear_text_password new:secret", b"clear_text_password new\0secret",
                     "comment Bob:x", b"comment Bob\x01"):
            assert client.block("mod_user bob@example.com", [line]) == ("+OK ", "-ERR 0.507 bad character")
        assert client.command("add_user frank@example.com frank:secret") == "-ERR 0.305 bad character"
    assert stored(site, "bob") == before and stored(site, "frank") is None
    for argv in (["vpasswd", "bob@example.com", "new:secret"], ["vadduser", "frank@example.com", "a:b"],
                 ["vadduser", "-c", "Frank\x01", "frank@example.com", "frank-secret"]):
        done = site.run([program(argv[0]), *argv[1:]])
        assert (done.returncode, (done.stdout + done.stderr).strip()) == (236, b"Error: bad character"), argv
    assert stored(site, "bob") == before and stored(site, "frank") is None
    assert logs_in(site, "bob@example.com", "bob-secret")


def test_no_password_is_logged_at_logging_p(site: Tree) -> None:
    """``logging = p`` makes vchkpw log wrong passwords, as vpopmail; vpopmaild never does."""
    site.write_settings(logging="p")
    with Daemon(site.env()) as daemon:
        with daemon.client() as client:
            assert client.slogin("bob@example.com", "other-secret") == "-ERR 8.207 Invalid Login"
            assert client.slogin("bob@example.com", "bob-secret") == "+OK "
            assert client.block("mod_user bob@example.com", ["clear_text_password new-secret 1"]) == \
                ("+OK ", "+OK ")
        assert roundcube(daemon, "carol@example.com", "carol-secret", "new-secret 1") == 2
    lines = site.syslog_lines()
    assert "vpopmaild: password fail bob@example.com:127.0.0.1" in lines
    assert_no_password_logged(site, lines)
    assert not logs_in(site, "dave@other.org", "dave-wrong")  # vchkpw at logging = p: the password
    assert any("dave-wrong" in line for line in site.syslog_lines())


def test_stored_line_breaks_cannot_make_protocol_lines(site: Tree, daemon: Daemon) -> None:
    """A comment or clear password with CR/LF put in by other means (a billing system's row; a
    vpasswd line holds no LF) goes out as one line, ``?`` for each CR/LF."""
    if site.kind == "mysql":
        gecos, clear = "Eve\r\n.\r\n+OK", "pw\r\n-ERR 1.1 x"
        shown_gecos, shown_clear = "Eve??.??+OK", "pw??-ERR 1.1 x"
    else:
        gecos, clear = "Eve\r.", "pw\rX"
        shown_gecos, shown_clear = "Eve?.", "pw?X"
    site.add_user("example.com", "eve", clear, gecos=gecos)
    with daemon.client() as client:
        assert client.slogin("boss@example.com", "boss-secret") == "+OK "
        status, lines = client.call("user_info eve@example.com")
        assert status == "+OK+" and not any("\r" in line or "\n" in line for line in lines)
        assert f"comment {shown_gecos}" in lines and f"clear_text_password {shown_clear}" in lines
        assert client.info("user_count example.com") == {"count": "6"}  # nothing left over


def test_a_line_of_data_that_is_a_dot_cannot_end_an_answer() -> None:
    """The wire itself (the installed vpopmaild.wire): only its END ends an answer."""
    from vpopmaild import wire

    ours, theirs = socket.socketpair()
    with ours, theirs:
        connection = wire.Connection(ours.fileno(), ours.fileno(), 5)
        connection.send([wire.OK_MORE, ".", "a\nb", "\x00", wire.END, wire.OK])
        theirs.settimeout(5)
        data = b""
        while not data.endswith(b"+OK \r\n"):
            data += theirs.recv(4096)
    assert data == b"+OK+\r\n..\r\na?b\r\n?\r\n.\r\n+OK \r\n"


def many_alias_lines(tree: Tree, megabytes: int) -> None:
    """Aliases of about ``megabytes`` MB in all (1000-byte lines), written as the store keeps them."""
    lines = [f"{n:04d}-" + "x" * 994 + "@example.org" for n in range(1000)]
    if tree.kind == "cdb":
        for n in range(megabytes):
            path = tree.domain_dir("example.com") / f".qmail-big{n}"
            path.write_text("\n".join(lines) + "\n")
            os.chown(path, VPOPMAIL_UID, VPOPMAIL_GID)
        return
    from tree import mysql_connect

    conn = mysql_connect(tree.db)
    with conn, conn.cursor() as cur:
        cur.executemany("INSERT INTO valias (alias, domain, valias_line) VALUES (%s, 'example.com', %s)",
                        [(f"big{n}", line) for n in range(megabytes) for line in lines])


def test_a_client_that_stops_reading_is_dropped_after_the_timeout(site: Tree) -> None:
    """A 12 MB answer (more than the socket buffers hold) to a client that reads nothing."""
    many_alias_lines(site, 12)
    site.write_settings(vpopmaild_timeout=2)
    with Daemon(site.env()) as daemon:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        with sock:
            sock.connect(("127.0.0.1", daemon.port))
            sock.sendall(b"slogin boss@example.com boss-secret\r\nlist_alias example.com\r\n")
            daemon.wait_sessions_done(timeout=30)  # while the client is still connected
    assert "vpopmaild: write timeout (2 s): the client does not read boss@example.com:127.0.0.1" in \
        site.syslog_lines()


def test_the_lines_of_a_block_get_one_timeout_in_all(site: Tree) -> None:
    site.write_settings(vpopmaild_timeout=1)
    before = stored(site, "bob")
    with Daemon(site.env()) as daemon, daemon.client() as client:
        assert client.slogin("bob@example.com", "bob-secret") == "+OK "
        assert client.command("mod_user bob@example.com") == "+OK "
        for _ in range(10):  # each line well within the timeout, all of them not
            client.send("user_flag_2 1")
            if select.select([client.sock], [], [], 0.4)[0]:
                break  # an answer before the '.': the server gave up
        else:
            client.send(".")
        assert client.line() == "-ERR 3.106 Read Timeout"
        assert client.closed()
    assert stored(site, "bob") == before


def test_get_lastauth_without_auth_logging_answers_as_vpopmail(site: Tree) -> None:
    site.write_settings(auth_logging=False)
    with Daemon(site.env()) as daemon, daemon.client() as client:
        assert client.slogin("bob@example.com", "bob-secret") == "+OK "
        assert client.command("get_lastauth bob@example.com") == "+OK "
        assert client.command("get_lastauth carol@example.com") == "-ERR 11.3704 Not Authorized for domain"


def test_addresses_in_every_form_and_through_an_alias_domain(site: Tree, daemon: Daemon) -> None:
    with daemon.client() as boss:
        assert boss.slogin("boss@example.com", "boss-secret") == "+OK "
        assert boss.command("add_alias_domain example.com alias.example") == "+OK "
    with daemon.client() as client:  # upper case and '%': the same accounts
        assert client.slogin("Postmaster@EXAMPLE.COM", "pm-secret") == "+OK "
        assert client.block("mod_user BOB@EXAMPLE.COM", ["comment Upper"]) == ("+OK ", "+OK ")
        assert stored(site, "bob")["gecos"] == "Upper"
        assert client.block("mod_user bob%example.com", ["comment Percent"]) == ("+OK ", "+OK ")
        assert stored(site, "bob")["gecos"] == "Percent"
        assert client.command("mod_user Boss@Example.Com") == "-ERR 9.508 Not Authorized"
    with daemon.client() as client:  # a user names their own account in any form
        assert client.slogin("bob%example.com", "bob-secret") == "+OK "
        assert client.block("mod_user BOB@example.com", ["comment Own"]) == ("+OK ", "+OK ")
        assert client.command("mod_user CAROL@example.com") == "-ERR 11.504 Not Authorized for domain"
    assert stored(site, "bob")["gecos"] == "Own"
    with daemon.client() as client:  # a domain admin logged in through the alias domain
        assert client.slogin("postmaster@alias.example", "pm-secret") == "+OK "
        assert client.info("user_info bob@alias.example")["name"] == "bob"
        assert client.info("user_info bob@example.com")["name"] == "bob"
        assert client.block("mod_user bob@alias.example", ["comment Alias"]) == ("+OK ", "+OK ")
        assert client.info("user_count alias.example") == {"count": "5"}
        assert client.command("add_user frank@alias.example frank-secret") == "+OK "
        assert client.command("user_info boss@alias.example") == "-ERR 9.606 Not Authorized"
        assert client.command("mod_user boss@alias.example") == "-ERR 9.508 Not Authorized"
        assert client.command("add_alias boss@alias.example me@evil.example") == "-ERR 9.909 Not Authorized"
        assert client.command("user_info dave@other.org") == "-ERR 11.604 Not Authorized for domain"
    assert stored(site, "bob")["gecos"] == "Alias"
    assert logs_in(site, "frank@example.com", "frank-secret")
    with daemon.client() as client:  # and the other way: the real domain's admin, the alias's names
        assert client.slogin("qa@example.com", "qa-secret") == "+OK "
        assert client.command("del_user frank@alias.example") == "+OK "
    assert stored(site, "frank") is None
