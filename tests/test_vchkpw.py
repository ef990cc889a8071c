"""vchkpw on the CDB store: the installed program, a real fd 3, a real environment, real files.

Every test runs ``.venv/bin/vchkpw <recorder> <outfile>`` as a subprocess (tree.Tree.login); the
recorder writes what it was exec'd with (uid, gid, groups, cwd, environment).  syslog lines are
read from the unix datagram socket the ``syslog_socket`` setting names.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from cdblib import Reader
from helpers import VPOPMAIL_GID, VPOPMAIL_UID, epoch, fd3_payload, program
from passlib import hash as ph
from syslogrecord import FACILITY_MAIL, SEVERITY
from tree import LOCAL_IP, REMOTE_IP, Tree, snapshot

BANNER = b"<4242.1700000000@mail.example.com>"  # qmail-popup's timestamp, sent with USER/PASS too
PASSWORD = "secret"
NO_POP, NO_WEBMAIL, NO_IMAP, NO_RELAY, NO_SMTP, V_OVERRIDE = 0x02, 0x04, 0x08, 0x20, 0x800, 0x2000
OK_LINE = "vchkpw-pop3: (PLAIN) login success bob@example.com:" + REMOTE_IP
FAIL_LINE = "vchkpw-pop3: password fail bob@example.com:" + REMOTE_IP


@pytest.fixture
def tree() -> Iterator[Tree]:
    """example.com (uid/gid 89, alias domain alias.test) with bob / secret; logging = y."""
    with Tree(logging="y") as t:
        t.add_domain("example.com", aliases=("alias.test",))
        t.bob = t.add_user("example.com", "bob", PASSWORD)
        yield t


def pop(login: str | bytes = "bob@example.com", password: str | bytes = PASSWORD,
        timestamp: bytes = BANNER) -> bytes:
    return fd3_payload(login, password, timestamp)


def assert_session(record: dict | None, user_dir: str, login: str = "bob@example.com") -> None:
    """What a successful non-SMTP login hands the program."""
    assert record is not None, "nothing was exec'd"
    assert (record["uid"], record["euid"], record["gid"], record["egid"]) == (89, 89, 89, 89)
    assert record["groups"] == [VPOPMAIL_GID]
    assert record["cwd"] == user_dir
    env = record["env"]
    assert env["USER"] == "bob"
    assert env["HOME"] == user_dir
    assert env["SHELL"] == "NOLOGIN"
    assert env["VPOPUSER"] == login
    assert record["fds"] == [0, 1, 2], "fd 3 must be closed before the exec"


# ------------------------------------------------------------------------------------------------
# The main path


def test_pop_login_success(tree: Tree) -> None:
    done, record = tree.login(pop())
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"" and done.stderr == b""
    assert_session(record, tree.bob.dir)
    env = record["env"]
    assert env["TCPREMOTEIP"] == REMOTE_IP and env["VPOP_CONFIG"] == str(tree.config)  # passed through
    assert "LC_CTYPE" not in env
    assert record["argv"][0] == tree.recorder and len(record["argv"]) == 2
    (record,) = tree.syslog_parsed()
    assert (record.facility, record.severity) == (FACILITY_MAIL, SEVERITY["notice"])
    assert record.tag == "vpopmail" and record.pid is not None and record.pid > 1
    assert record.message == OK_LINE


def test_log_name_setting(tree: Tree) -> None:
    tree.write_settings(log_name="vpop-test")
    done, record = tree.login(pop())
    assert done.returncode == 0, done.stderr
    (record,) = tree.syslog_parsed()
    assert record.tag == "vpop-test" and record.message == OK_LINE


def test_wrong_password_is_refused(tree: Tree) -> None:
    done, record = tree.login(pop(password="wrong"))
    assert done.returncode == 1
    assert record is None
    assert tree.syslog_lines() == [FAIL_LINE]


@pytest.mark.parametrize(
    ("level", "good", "bad"),
    [
        ("n", [], []),
        ("e", [], [FAIL_LINE]),
        ("y", [OK_LINE], [FAIL_LINE]),
        ("p", [], ["vchkpw-pop3: password fail (pass: 'x#y') bob@example.com:" + REMOTE_IP]),
        ("v", [OK_LINE], ["vchkpw-pop3: password fail (pass: 'x#y') bob@example.com:" + REMOTE_IP]),
    ],
)
def test_logging_levels(tree: Tree, level: str, good: list[str], bad: list[str]) -> None:
    tree.write_settings(logging=level)
    done, record = tree.login(pop())
    assert done.returncode == 0 and record is not None
    assert tree.syslog_lines() == good
    done, record = tree.login(pop(password="x%y"))  # vpopmail's sysc(): '%' is logged as '#'
    assert done.returncode == 1 and record is None
    assert tree.syslog_lines() == bad


def test_logging_passwords_only_at_p_and_v(tree: Tree) -> None:
    for level in ("n", "e", "y"):
        tree.write_settings(logging=level)
        tree.login(pop(password="hunter2-guess"))
        assert not any("hunter2" in line for line in tree.syslog_lines())


@pytest.mark.parametrize("level", ["n", "e"])
def test_not_found_is_logged_at_every_level(tree: Tree, level: str) -> None:
    tree.write_settings(logging=level)
    done, record = tree.login(pop("nobody@example.com"))
    assert done.returncode == 1 and record is None
    assert tree.syslog_lines() == ["vchkpw-pop3: vpopmail user not found nobody@example.com:" + REMOTE_IP]


@pytest.mark.parametrize(
    ("login", "shown"),
    [("nobody@example.com", "nobody@example.com"), ("bob@nowhere.test", "bob@nowhere.test"),
     ("Nobody@NoWhere.Test", "nobody@nowhere.test"), ("bob", "bob@")],
)
def test_unknown_user_or_domain(tree: Tree, login: str, shown: str) -> None:
    done, record = tree.login(pop(login))
    assert done.returncode == 1
    assert record is None
    assert tree.syslog_lines() == [f"vchkpw-pop3: vpopmail user not found {shown}:{REMOTE_IP}"]


def test_domain_without_vpasswd_is_temporary(tree: Tree) -> None:
    for name in ("vpasswd", "vpasswd.cdb"):
        (tree.domain_dir("example.com") / name).unlink()
    done, record = tree.login(pop())
    assert (done.returncode, record) == (111, None)
    assert b"no vpasswd or vpasswd.cdb" in done.stderr


# ------------------------------------------------------------------------------------------------
# Login forms and default domains


@pytest.mark.parametrize("login", ["bob%example.com", "bob/example.com", "BOB@Example.COM",
                                   "bob@EXAMPLE.com"])
def test_login_forms(tree: Tree, login: str) -> None:
    done, record = tree.login(pop(login))
    assert done.returncode == 0, done.stderr
    assert_session(record, tree.bob.dir, login=login.lower())
    assert tree.syslog_lines() == [OK_LINE]


def test_bare_user_with_vpopmail_domain(tree: Tree) -> None:
    done, record = tree.login(pop("bob"), VPOPMAIL_DOMAIN="Example.com")
    assert done.returncode == 0, done.stderr
    assert_session(record, tree.bob.dir, login="bob")
    assert tree.syslog_lines() == [OK_LINE]


def test_bare_user_with_defaultdomain_file(tree: Tree) -> None:
    tree.write_etc("defaultdomain", "example.com\n")
    done, record = tree.login(pop("bob"))
    assert done.returncode == 0, done.stderr
    assert_session(record, tree.bob.dir, login="bob")


def test_vpopmail_domain_wins_over_defaultdomain(tree: Tree) -> None:
    tree.add_domain("other.test")
    tree.add_user("other.test", "bob", "other-secret")
    tree.write_etc("defaultdomain", "example.com\n")
    done, record = tree.login(pop("bob", "other-secret"), VPOPMAIL_DOMAIN="other.test")
    assert done.returncode == 0, done.stderr
    assert record["cwd"] == str(tree.domain_dir("other.test") / "bob")
    done, record = tree.login(pop("bob", PASSWORD), VPOPMAIL_DOMAIN="other.test")
    assert done.returncode == 1 and record is None


def test_alias_domain(tree: Tree) -> None:
    done, record = tree.login(pop("bob@alias.test"))
    assert done.returncode == 0, done.stderr
    assert_session(record, tree.bob.dir, login="bob@alias.test")
    # Later log lines name the real domain (vget_assign overwrites the domain).
    assert tree.syslog_lines() == [OK_LINE]


def test_ip_alias_map(tree: Tree) -> None:
    tree.write_settings(ip_alias_domains=True)
    tree.write_etc("ip_alias_map", f"192.0.2.99 other.test\n{LOCAL_IP}\texample.com\n")
    done, record = tree.login(pop("bob"))
    assert done.returncode == 0, done.stderr
    assert_session(record, tree.bob.dir, login="bob")
    # another local IP: no mapping, no default domain
    done, record = tree.login(pop("bob"), TCPLOCALIP="192.0.2.2")
    assert done.returncode == 1 and record is None


def test_ip_alias_map_needs_the_setting(tree: Tree) -> None:
    tree.write_etc("ip_alias_map", f"{LOCAL_IP} example.com\n")
    done, record = tree.login(pop("bob"))
    assert done.returncode == 1 and record is None
    assert tree.syslog_lines() == [f"vchkpw-pop3: vpopmail user not found bob@:{REMOTE_IP}"]


def test_ip_alias_map_skips_a_domain_in_locals(tree: Tree) -> None:
    tree.write_settings(ip_alias_domains=True)
    tree.add_domain("other.test")
    tree.add_user("other.test", "bob", "other-secret")
    tree.write_etc("ip_alias_map", f"{LOCAL_IP} other.test\n")
    tree.write_etc("defaultdomain", "example.com\n")
    done, record = tree.login(pop("bob", "other-secret"))
    assert done.returncode == 0 and record["cwd"] == str(tree.domain_dir("other.test") / "bob")
    tree.write_control("locals", "localhost\nother.test\n")
    done, record = tree.login(pop("bob", "other-secret"))
    assert done.returncode == 1 and record is None  # fell through to defaultdomain: example.com
    done, record = tree.login(pop("bob", PASSWORD))
    assert done.returncode == 0, done.stderr
    assert record["cwd"] == tree.bob.dir


@pytest.mark.parametrize("login", ["../x@example.com", "a b@example.com", "bob@exa_mple.com",
                                   "bob@../example.com", "..@example.com", "bob@example.com/..",
                                   "a:b@example.com", "bob\x01@example.com"])
def test_invalid_characters(tree: Tree, login: str) -> None:
    before = snapshot(tree.root)
    done, record = tree.login(pop(login))
    assert done.returncode == 1
    assert record is None
    assert tree.syslog_lines() == [f"vchkpw-pop3: invalid user/domain characters "
                                   f"{login.lower().replace(chr(1), '?')}:{REMOTE_IP}"]
    assert snapshot(tree.root) == before
    # vpopmail's parse_email names the part on stderr (stdout is qmail-popup's client)
    user, _, domain = login.lower().partition("@")
    bad_user = user in ("../x", "a b", "..", "a:b", "bob\x01")
    assert done.stderr == (f"user invalid {user}\n" if bad_user else f"domain invalid {domain}\n").encode()
    assert done.stdout == b""


def test_login_that_is_not_utf8(tree: Tree) -> None:
    done, record = tree.login(pop(b"b\xffob@example.com"))
    assert done.returncode == 1 and record is None
    (line,) = tree.syslog_lines()
    assert line.startswith("vchkpw-pop3: invalid user/domain characters b")


def test_overlong_user_name(tree: Tree) -> None:
    done, record = tree.login(pop("a" * 65 + "@example.com"))
    assert done.returncode == 1 and record is None
    long_name = "a" * 65
    assert tree.syslog_lines() == [
        f"vchkpw-pop3: invalid user/domain characters {long_name}@example.com:{REMOTE_IP}"]


def test_non_ascii_never_lowers_into_ascii(tree: Tree) -> None:
    # U+212A KELVIN SIGN lower-cases to "k" in Python; the C code lowers ASCII only.
    tree.add_user("example.com", "kim", "kim-pw")
    done, record = tree.login(pop("\u212aim@example.com", "kim-pw"))
    assert (done.returncode, record) == (1, None)
    done, record = tree.login(pop("KIM@example.com", "kim-pw"))
    assert done.returncode == 0, done.stderr


def test_explicit_lc_ctype_is_handed_on_unchanged(tree: Tree) -> None:
    done, record = tree.login(pop(), LC_CTYPE="C")
    assert done.returncode == 0, done.stderr
    assert record["env"]["LC_CTYPE"] == "C"


def test_invalid_characters_in_an_existing_domain_leave_no_trace(tree: Tree) -> None:
    # A user part that would be a path outside the domain: nothing may be created, even with the
    # right password of a user whose name it resembles.
    before = snapshot(tree.root)
    for login in ("../bob@example.com", "bob/../../x@example.com", "./bob@example.com"):
        done, record = tree.login(pop(login))
        assert done.returncode == 1 and record is None
    assert snapshot(tree.root) == before


# ------------------------------------------------------------------------------------------------
# Service detection


@pytest.mark.parametrize(
    ("port", "name", "smtp"),
    [("25", "vchkpw-smtp", True), ("110", "vchkpw-pop3", False), ("143", "vchkpw-imap", False),
     ("465", "vchkpw-smtps", True), ("587", "vchkpw-submission", True), ("993", "vchkpw-imaps", False),
     ("995", "vchkpw-pop3s", False)],
)
def test_service_by_port(tree: Tree, port: str, name: str, smtp: bool) -> None:
    timestamp = b"" if smtp else BANNER
    done, record = tree.login(pop(timestamp=timestamp), TCPLOCALPORT=port)
    assert done.returncode == 0, done.stderr
    assert tree.syslog_lines() == [f"{name}: (PLAIN) login success bob@example.com:{REMOTE_IP}"]
    if smtp:
        # SMTP AUTH: no setuid, no chdir; the environment is still set.
        assert (record["uid"], record["gid"]) == (0, 0)
        assert record["cwd"] == str(tree.root)
        assert record["env"]["USER"] == "bob" and record["env"]["HOME"] == tree.bob.dir
    else:
        assert_session(record, tree.bob.dir)


@pytest.mark.parametrize(
    ("port", "flag", "service"),
    [("110", NO_POP, "pop"), ("995", NO_POP, "pop"), ("143", NO_IMAP, "imap"), ("993", NO_IMAP, "imap"),
     ("25", NO_SMTP, "smtp"), ("465", NO_SMTP, "smtp"), ("587", NO_SMTP, "smtp")],
)
def test_service_denied_by_flag(tree: Tree, port: str, flag: int, service: str) -> None:
    tree.add_user("example.com", "carol", PASSWORD, flags=flag)
    done, record = tree.login(pop("carol@example.com"), TCPLOCALPORT=port)
    assert done.returncode == 1
    assert record is None
    name = {"25": "smtp", "110": "pop3", "143": "imap", "465": "smtps", "587": "submission",
            "993": "imaps", "995": "pop3s"}[port]
    assert tree.syslog_lines() == [f"vchkpw-{name}: {service} access denied carol@example.com:{REMOTE_IP}"]


@pytest.mark.parametrize("flag", [NO_POP, NO_IMAP, NO_SMTP, NO_WEBMAIL])
def test_flags_only_refuse_their_own_service(tree: Tree, flag: int) -> None:
    tree.add_user("example.com", "carol", PASSWORD, flags=flag)
    allowed = {NO_POP: ["143", "25"], NO_IMAP: ["110", "587"], NO_SMTP: ["110", "993"],
               NO_WEBMAIL: ["110", "143", "25"]}[flag]
    for port in allowed:
        done, record = tree.login(pop("carol@example.com"), TCPLOCALPORT=port)
        assert done.returncode == 0, (port, done.stderr)
        assert record is not None


def test_other_port_with_a_program_named_true_is_smtp(tree: Tree) -> None:
    tree.add_user("example.com", "carol", PASSWORD, flags=NO_SMTP)
    true = tree.root / "bin" / "true"
    true.parent.mkdir()
    true.symlink_to(tree.recorder)
    done, record = tree.login(pop(timestamp=b""), TCPLOCALPORT="2525", target=str(true))
    assert done.returncode == 0, done.stderr
    assert record["uid"] == 0 and record["cwd"] == str(tree.root)
    assert tree.syslog_lines() == [
        f"vchkpw-2525: (PLAIN) login success bob@example.com:{REMOTE_IP}",
        f"vchkpw-2525: smtp session assumed from the program name {true}: "
        f"no setuid bob@example.com:{REMOTE_IP}"]
    done, record = tree.login(pop("carol@example.com"), TCPLOCALPORT="2525", target=str(true))
    assert done.returncode == 1 and record is None
    assert tree.syslog_lines() == [f"vchkpw-2525: smtp access denied carol@example.com:{REMOTE_IP}"]


@pytest.mark.parametrize("name", ["record-true", "true-imap-wrapper", "truest", "true.sh"])
def test_true_somewhere_in_the_name_is_not_smtp(tree: Tree, name: str) -> None:
    """vpopmail took any argv[1] containing "true" for SMTP and skipped the setuid: a wrapper ran as root."""
    done, record = tree.login(pop(), TCPLOCALPORT="2525", target=tree.target(name))
    assert done.returncode == 0, done.stderr
    assert (record["uid"], record["euid"], record["gid"]) == (VPOPMAIL_UID, VPOPMAIL_UID, VPOPMAIL_GID)
    assert record["cwd"] == tree.bob.dir
    assert not any("no setuid" in line for line in tree.syslog_lines())


def test_other_port_with_imap_in_argv_is_imap(tree: Tree) -> None:
    tree.add_user("example.com", "carol", PASSWORD, flags=NO_IMAP)
    tree.add_user("example.com", "dave", PASSWORD, flags=NO_POP)
    imap = tree.target("imap-record")
    done, record = tree.login(pop(), TCPLOCALPORT="2143", target=imap)
    assert done.returncode == 0, done.stderr
    assert_session(record, tree.bob.dir)
    done, record = tree.login(pop("carol@example.com"), TCPLOCALPORT="2143", target=imap)
    assert done.returncode == 1 and record is None
    done, record = tree.login(pop("dave@example.com"), TCPLOCALPORT="2143", target=imap)
    assert done.returncode == 0 and record is not None
    assert tree.syslog_lines() == [
        f"vchkpw-2143: (PLAIN) login success bob@example.com:{REMOTE_IP}",
        f"vchkpw-2143: imap access denied carol@example.com:{REMOTE_IP}",
        f"vchkpw-2143: (PLAIN) login success dave@example.com:{REMOTE_IP}",
    ]


def test_other_port_otherwise_is_pop(tree: Tree) -> None:
    tree.add_user("example.com", "dave", PASSWORD, flags=NO_POP)
    done, record = tree.login(pop("dave@example.com"), TCPLOCALPORT="8110")
    assert done.returncode == 1 and record is None
    assert tree.syslog_lines() == [f"vchkpw-8110: pop access denied dave@example.com:{REMOTE_IP}"]


def test_no_port_at_all(tree: Tree) -> None:
    done, record = tree.login(pop(), TCPLOCALPORT=None)
    assert done.returncode == 0, done.stderr
    assert_session(record, tree.bob.dir)
    assert tree.syslog_lines() == [f"vchkpw-0: (PLAIN) login success bob@example.com:{REMOTE_IP}"]


@pytest.mark.parametrize("port", ["110", "143", "995", "993"])
@pytest.mark.parametrize("remote", ["127.0.0.1", "::ffff:127.0.0.1"])
def test_pop_and_imap_from_localhost_are_webmail(tree: Tree, port: str, remote: str) -> None:
    tree.add_user("example.com", "carol", PASSWORD, flags=NO_WEBMAIL)
    tree.add_user("example.com", "dave", PASSWORD, flags=NO_POP | NO_IMAP)
    done, record = tree.login(pop(), TCPLOCALPORT=port, TCPREMOTEIP=remote)
    assert done.returncode == 0, done.stderr
    assert_session(record, tree.bob.dir)
    done, record = tree.login(pop("carol@example.com"), TCPLOCALPORT=port, TCPREMOTEIP=remote)
    assert done.returncode == 1 and record is None
    done, record = tree.login(pop("dave@example.com"), TCPLOCALPORT=port, TCPREMOTEIP=remote)
    assert done.returncode == 0 and record is not None
    assert tree.syslog_lines() == [
        "vchkpw-webmail: (PLAIN) login success bob@example.com:127.0.0.1",
        "vchkpw-webmail: webmail access denied carol@example.com:127.0.0.1",
        "vchkpw-webmail: (PLAIN) login success dave@example.com:127.0.0.1",
    ]


def test_smtp_from_localhost_is_not_webmail(tree: Tree) -> None:
    tree.add_user("example.com", "carol", PASSWORD, flags=NO_WEBMAIL)
    done, record = tree.login(pop("carol@example.com", timestamp=b""), TCPLOCALPORT="25",
                              TCPREMOTEIP="127.0.0.1")
    assert done.returncode == 0, done.stderr
    assert tree.syslog_lines() == ["vchkpw-smtp: (PLAIN) login success carol@example.com:127.0.0.1"]


def test_remote_host_when_no_tcpremoteip(tree: Tree) -> None:
    done, record = tree.login(pop(password="nope"), TCPREMOTEIP=None, REMOTE_HOST="198.51.100.7")
    assert done.returncode == 1
    assert tree.syslog_lines() == ["vchkpw-pop3: password fail bob@example.com:198.51.100.7"]


# ------------------------------------------------------------------------------------------------
# Domain limits


def test_domain_limits_disable_imap(tree: Tree) -> None:
    (tree.domain_dir("example.com") / ".qmailadmin-limits").write_text("maxpopaccounts: 10\ndisable_imap\n")
    tree.add_user("example.com", "carol", PASSWORD, flags=V_OVERRIDE)
    done, record = tree.login(pop(), TCPLOCALPORT="143")
    assert done.returncode == 1 and record is None
    assert tree.syslog_lines() == [f"vchkpw-imap: imap access denied bob@example.com:{REMOTE_IP}"]
    done, record = tree.login(pop(), TCPLOCALPORT="110")
    assert done.returncode == 0 and record is not None
    done, record = tree.login(pop("carol@example.com"), TCPLOCALPORT="143")  # V_OVERRIDE
    assert done.returncode == 0, done.stderr
    assert record is not None


def test_vlimits_default_when_the_domain_has_no_limits_file(tree: Tree) -> None:
    tree.write_etc("vlimits.default", "# defaults\ndisable_pop\n")
    done, record = tree.login(pop())
    assert done.returncode == 1 and record is None
    assert tree.syslog_lines() == [f"vchkpw-pop3: pop access denied bob@example.com:{REMOTE_IP}"]
    done, record = tree.login(pop(), TCPLOCALPORT="143")
    assert done.returncode == 0 and record is not None
    # A domain limits file replaces the defaults entirely.
    (tree.domain_dir("example.com") / ".qmailadmin-limits").write_text("maxpopaccounts\t10\n")
    done, record = tree.login(pop())
    assert done.returncode == 0, done.stderr
    assert record is not None


# ------------------------------------------------------------------------------------------------
# APOP and CRAM-MD5 against the clear password


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def test_apop(tree: Tree) -> None:
    challenge = b"<1.2@host>"
    done, record = tree.login(pop(password=md5_hex(challenge + b"secret"), timestamp=challenge))
    assert done.returncode == 0, done.stderr
    assert_session(record, tree.bob.dir)
    assert tree.syslog_lines() == [f"vchkpw-pop3: (APOP) login success bob@example.com:{REMOTE_IP}"]


def test_apop_wrong_digest(tree: Tree) -> None:
    challenge = b"<1.2@host>"
    for digest in (md5_hex(challenge + b"wrong"), md5_hex(challenge + b"secret").upper(),
                   md5_hex(b"<1.3@host>" + b"secret")):
        done, record = tree.login(pop(password=digest, timestamp=challenge))
        assert done.returncode == 1 and record is None


def test_apop_without_challenge_is_refused(tree: Tree) -> None:
    # The C vchkpw computed md5("" + clear) for an empty third field: md5(password) was a password.
    done, record = tree.login(pop(password=md5_hex(b"secret"), timestamp=b""))
    assert done.returncode == 1
    assert record is None
    assert tree.syslog_lines() == [FAIL_LINE]


def test_apop_needs_clear_passwords(tree: Tree) -> None:
    challenge = b"<1.2@host>"
    tree.write_settings(clear_passwords=False)
    done, record = tree.login(pop(password=md5_hex(challenge + b"secret"), timestamp=challenge))
    assert done.returncode == 1 and record is None


def test_apop_only_for_pop(tree: Tree) -> None:
    challenge = b"<1.2@host>"
    done, record = tree.login(pop(password=md5_hex(challenge + b"secret"), timestamp=challenge),
                              TCPLOCALPORT="143")
    assert done.returncode == 1 and record is None


def test_cram_md5_on_smtp(tree: Tree) -> None:
    challenge = b"<12345.1700000000@mail.example.com>"
    digest = hmac.new(b"secret", challenge, "md5").hexdigest()
    done, record = tree.login(pop(password=digest, timestamp=challenge), TCPLOCALPORT="25")
    assert done.returncode == 0, done.stderr
    assert record is not None and record["uid"] == 0
    assert tree.syslog_lines() == [f"vchkpw-smtp: (CRAM-MD5) login success bob@example.com:{REMOTE_IP}"]
    wrong = hmac.new(b"wrong", challenge, "md5").hexdigest()
    done, record = tree.login(pop(password=wrong, timestamp=challenge), TCPLOCALPORT="25")
    assert done.returncode == 1 and record is None
    done, record = tree.login(pop(password=digest, timestamp=challenge), TCPLOCALPORT="110")
    assert done.returncode == 1 and record is None  # CRAM-MD5 is SMTP only


def test_long_apop_banner(tree: Tree) -> None:
    # vpopmail read 155 bytes and truncated long qmail-popup banners; 512 are read here.
    challenge = b"<12345.1700000000@" + b"h" * 380 + b".example.com>"
    assert len(challenge) > 400
    done, record = tree.login(pop(password=md5_hex(challenge + b"secret"), timestamp=challenge))
    assert done.returncode == 0, done.stderr
    assert_session(record, tree.bob.dir)
    assert tree.syslog_lines() == [f"vchkpw-pop3: (APOP) login success bob@example.com:{REMOTE_IP}"]


def test_plain_login_with_long_banner(tree: Tree) -> None:
    done, record = tree.login(pop(timestamp=b"<" + b"9" * 398 + b">"))
    assert done.returncode == 0, done.stderr
    assert_session(record, tree.bob.dir)


# ------------------------------------------------------------------------------------------------
# Exit codes


def _denied_user(tree: Tree) -> None:
    tree.add_user("example.com", "carol", PASSWORD, flags=NO_POP)


EXIT_CASES = [
    ("wrong password", pop(password="wrong"), 3),
    ("unknown user", pop("nobody@example.com"), 3),
    ("unknown domain", pop("bob@nowhere.test"), 3),
    ("null password", pop(password=""), 13),
    ("invalid characters", pop("a b@example.com"), 20),
    ("null user", pop(""), 12),
    ("service denied", pop("carol@example.com"), 1),
]


@pytest.mark.parametrize(("case", "fd3", "code"), EXIT_CASES, ids=[c[0] for c in EXIT_CASES])
@pytest.mark.parametrize("style", ["vpopmail", "checkpassword", None])
def test_exit_codes(tree: Tree, case: str, fd3: bytes, code: int, style: str | None) -> None:
    _denied_user(tree)
    tree.write_settings(exit_codes=style)
    done, record = tree.login(fd3)
    assert record is None
    assert done.returncode == (code if style == "vpopmail" else 1), done.stderr


@pytest.mark.parametrize("style", ["vpopmail", "checkpassword"])
def test_success_is_zero_in_both_styles(tree: Tree, style: str) -> None:
    tree.write_settings(exit_codes=style)
    done, record = tree.login(pop())
    assert done.returncode == 0 and record is not None


def test_null_user_and_password_log_lines(tree: Tree) -> None:
    tree.login(pop(""))
    tree.login(pop(password=""))
    assert tree.syslog_lines() == [f"vchkpw-pop3: null user name given :{REMOTE_IP}",
                                   f"vchkpw-pop3: null password given bob@example.com:{REMOTE_IP}"]


# ------------------------------------------------------------------------------------------------
# Misuse


@pytest.mark.parametrize(("style", "code"), [("checkpassword", 2), ("vpopmail", 11)])
@pytest.mark.parametrize(("port", "name"), [("110", "vchkpw-pop3"), (None, "vchkpw-0")])
def test_fd3_not_open(tree: Tree, style: str, code: int, port: str | None, name: str) -> None:
    """vpopmail's one line, with the log name, exactly when fd 3 cannot be read."""
    tree.write_settings(exit_codes=style)
    done = tree.run([program("vchkpw"), tree.recorder], None, tree.env(TCPLOCALPORT=port))
    assert (done.returncode, done.stdout) == (code, b"")
    assert done.stderr == (f"{name}: vchkpw is only for talking with qmail-popup and qmail-pop3d. "
                           "It is not for runnning on the command line.\n").encode()


@pytest.mark.parametrize(("style", "code"), [("checkpassword", 2), ("vpopmail", 11)])
def test_no_program_to_run(tree: Tree, style: str, code: int) -> None:
    """vpopmail authenticates and then crashes (SIGSEGV); we refuse before reading fd 3."""
    tree.write_settings(exit_codes=style)
    done = tree.run([program("vchkpw")], pop())
    assert done.returncode == code
    assert done.stderr == b"vchkpw: usage: vchkpw prog [args...]\n"
    assert tree.syslog_lines() == []


def test_fd3_longer_than_512_bytes(tree: Tree) -> None:
    data = pop(timestamp=b"<" + b"x" * 600 + b">")
    done, record = tree.login(data)
    assert done.returncode == 1
    assert record is None
    assert tree.syslog_lines() == [f"vchkpw-pop3: fd 3 refused: more than 512 bytes on fd 3 :{REMOTE_IP}"]


def test_fd3_of_exactly_512_and_513_bytes(tree: Tree) -> None:
    head = pop(timestamp=b"")[:-1]  # bob@example.com\0secret\0
    exact = head + b"<" + b"x" * (512 - len(head) - 3) + b">\0"
    assert len(exact) == 512
    done, record = tree.login(exact)
    assert done.returncode == 0, done.stderr
    assert record is not None
    over = exact[:-1] + b"x\0"
    assert len(over) == 513
    done, record = tree.login(over)
    assert done.returncode == 1 and record is None


@pytest.mark.parametrize("style", ["checkpassword", "vpopmail"])
def test_fd3_without_its_last_nul_logs_in(tree: Tree, style: str) -> None:
    """vpopmail reads each field up to a NUL or the end of the data."""
    tree.write_settings(exit_codes=style)
    done, record = tree.login(b"bob@example.com\0secret")
    assert done.returncode == 0, done.stderr
    assert_session(record, tree.bob.dir)
    assert tree.syslog_lines() == [OK_LINE]


@pytest.mark.parametrize(("data", "line", "vpopmail_code"), [
    (b"", f"vchkpw-pop3: null user name given :{REMOTE_IP}", 12),
    (b"bob@example.com", f"vchkpw-pop3: null password given bob@example.com:{REMOTE_IP}", 13),
])
@pytest.mark.parametrize("style", ["checkpassword", "vpopmail"])
def test_fd3_without_any_nul(tree: Tree, data: bytes, line: str, vpopmail_code: int, style: str) -> None:
    """As vpopmail: logged, and its 12 / 13; the checkpassword code stays 2 (misuse)."""
    tree.write_settings(exit_codes=style)
    done, record = tree.login(data)
    assert done.returncode == (vpopmail_code if style == "vpopmail" else 2)
    assert record is None
    assert tree.syslog_lines() == [line]
    assert b"vchkpw is only for talking" not in done.stderr


def test_fd3_with_trailing_data(tree: Tree) -> None:
    done, record = tree.login(pop() + b"more\0data\0")
    assert done.returncode == 0, done.stderr
    assert record is not None


def test_fd3_without_final_nul(tree: Tree) -> None:
    done, record = tree.login(b"bob@example.com\0secret\0" + BANNER)
    assert done.returncode == 0, done.stderr
    assert record is not None


def test_exec_failure_is_temporary(tree: Tree) -> None:
    done, record = tree.login(pop(), target=str(tree.root / "no-such-program"))
    assert done.returncode == 111
    assert b"no-such-program" in done.stderr


# ------------------------------------------------------------------------------------------------
# User directories


def _owned_by_vpopmail(path: Path) -> bool:
    st = path.stat()
    return (st.st_uid, st.st_gid) == (VPOPMAIL_UID, VPOPMAIL_GID)


def _maildir_ok(user_dir: Path, mode: int = 0o750) -> None:
    """A new user directory is 0750 (make_user_dir); a re-created one 0700, Maildir too (vmake_maildir)."""
    assert stat.S_IMODE(user_dir.stat().st_mode) == mode
    for path in (user_dir, user_dir / "Maildir", *(user_dir / "Maildir" / s for s in ("cur", "new", "tmp"))):
        assert path.is_dir(), path
        assert _owned_by_vpopmail(path), path
        if mode == 0o700:
            assert stat.S_IMODE(path.stat().st_mode) == 0o700, path


def _vpasswd_dir(domain_dir: Path, user: str) -> tuple[str, str]:
    """pw_dir of ``user`` in vpasswd and in vpasswd.cdb."""
    lines = (domain_dir / "vpasswd").read_text().split("\n")
    text = next(line for line in lines if line.startswith(user + ":"))
    data = Reader((domain_dir / "vpasswd.cdb").read_bytes()).get(user.encode())
    return text.split(":")[5], data.decode().split(":")[4]


def test_blank_pw_dir_is_created_at_login(tree: Tree) -> None:
    domain_dir = tree.domain_dir("example.com")
    tree.add_user("example.com", "carol", PASSWORD, blank_dir=True)
    assert _vpasswd_dir(domain_dir, "carol") == ("", "")
    done, record = tree.login(pop("carol@example.com"))
    assert done.returncode == 0, done.stderr
    user_dir = domain_dir / "carol"
    _maildir_ok(user_dir)
    assert record["cwd"] == str(user_dir) and record["env"]["HOME"] == str(user_dir)
    assert record["uid"] == 89
    assert _vpasswd_dir(domain_dir, "carol") == (str(user_dir), str(user_dir))
    assert _owned_by_vpopmail(domain_dir / "vpasswd") and _owned_by_vpopmail(domain_dir / "vpasswd.cdb")
    # bob's line is untouched
    assert _vpasswd_dir(domain_dir, "bob") == (tree.bob.dir, tree.bob.dir)
    # the second login uses the stored directory
    done, record = tree.login(pop("carol@example.com"))
    assert done.returncode == 0 and record["cwd"] == str(user_dir)


def test_blank_pw_dir_and_wrong_password_create_nothing(tree: Tree) -> None:
    tree.add_user("example.com", "carol", PASSWORD, blank_dir=True)
    before = snapshot(tree.root)
    done, record = tree.login(pop("carol@example.com", "wrong"))
    assert done.returncode == 1 and record is None
    assert snapshot(tree.root) == before


def test_blank_pw_dir_and_denied_service_create_nothing(tree: Tree) -> None:
    tree.add_user("example.com", "carol", PASSWORD, blank_dir=True, flags=NO_POP)
    before = snapshot(tree.root)
    done, record = tree.login(pop("carol@example.com"))
    assert done.returncode == 1 and record is None
    assert snapshot(tree.root) == before


def test_blank_pw_dir_on_smtp(tree: Tree) -> None:
    domain_dir = tree.domain_dir("example.com")
    tree.add_user("example.com", "carol", PASSWORD, blank_dir=True)
    done, record = tree.login(pop("carol@example.com", timestamp=b""), TCPLOCALPORT="25")
    assert done.returncode == 0, done.stderr
    _maildir_ok(domain_dir / "carol")
    assert record["env"]["HOME"] == str(domain_dir / "carol")


def test_missing_user_dir_is_recreated(tree: Tree) -> None:
    shutil.rmtree(tree.bob.dir)
    done, record = tree.login(pop())
    assert done.returncode == 0, done.stderr
    assert_session(record, tree.bob.dir)
    _maildir_ok(Path(tree.bob.dir), 0o700)


def test_vpasswd_newer_than_cdb_is_read(tree: Tree) -> None:
    domain_dir = tree.domain_dir("example.com")
    vpasswd, cdb = domain_dir / "vpasswd", domain_dir / "vpasswd.cdb"
    new_hash = ph.md5_crypt.hash("changed")
    lines = []
    for line in vpasswd.read_text().split("\n"):
        fields = line.split(":")
        if fields[0] == "bob":
            fields[1] = new_hash
        lines.append(":".join(fields))
    vpasswd.write_text("\n".join(lines))
    cdb_time = cdb.stat().st_mtime
    os.utime(vpasswd, (cdb_time + 10, cdb_time + 10))
    done, record = tree.login(pop(password="changed"))
    assert done.returncode == 0, done.stderr
    assert record is not None
    done, record = tree.login(pop())
    assert done.returncode == 1 and record is None
    # The same edit with vpasswd older than the cdb: the cdb answers.
    os.utime(vpasswd, (cdb_time - 10, cdb_time - 10))
    done, record = tree.login(pop())
    assert done.returncode == 0 and record is not None
    done, record = tree.login(pop(password="changed"))
    assert done.returncode == 1 and record is None
    # No cdb at all: vpasswd.
    cdb.unlink()
    done, record = tree.login(pop(password="changed"))
    assert done.returncode == 0 and record is not None


# ------------------------------------------------------------------------------------------------
# lastauth and roaming users


def test_lastauth_file(tree: Tree) -> None:
    lastauth = Path(tree.bob.dir) / "lastauth"
    assert not lastauth.exists()
    tree.clock = epoch("2027-01-05 12:00:00")
    done, record = tree.login(pop())
    assert done.returncode == 0, done.stderr
    assert lastauth.read_bytes() == REMOTE_IP.encode()
    assert _owned_by_vpopmail(lastauth)
    assert lastauth.stat().st_mtime == tree.clock  # the time of the login, by the programs' clock
    tree.clock += 3 * 86400 + 0.5
    done, record = tree.login(pop(), TCPREMOTEIP="198.51.100.7")
    assert lastauth.read_bytes() == b"198.51.100.7"
    assert lastauth.stat().st_mtime == int(tree.clock)  # whole seconds, as vpopmail's time_t


def test_lastauth_on_the_system_clock(tree: Tree) -> None:
    done, record = tree.login(pop())
    assert done.returncode == 0, done.stderr
    lastauth = Path(tree.bob.dir) / "lastauth"
    # the stamp is a whole second of the system clock: no later than the file's own ctime
    st = lastauth.stat()
    assert st.st_mtime == int(st.st_mtime) and 0 <= st.st_ctime - st.st_mtime < 60


def test_lastauth_symlink_is_not_followed(tree: Tree) -> None:
    outside = tree.root / "outside.txt"
    outside.write_text("precious\n")
    (Path(tree.bob.dir) / "lastauth").symlink_to(outside)
    done, record = tree.login(pop())
    assert done.returncode == 0, done.stderr
    assert outside.read_text() == "precious\n"
    assert (outside.stat().st_uid, outside.stat().st_gid) == (0, 0)


def test_no_lastauth_on_failure(tree: Tree) -> None:
    tree.login(pop(password="wrong"))
    tree.add_user("example.com", "carol", PASSWORD, flags=NO_POP)
    tree.login(pop("carol@example.com"))
    assert not (Path(tree.bob.dir) / "lastauth").exists()
    assert not (tree.domain_dir("example.com") / "carol" / "lastauth").exists()


def test_auth_logging_off(tree: Tree) -> None:
    tree.write_settings(auth_logging=False)
    done, record = tree.login(pop())
    assert done.returncode == 0, done.stderr
    assert not (Path(tree.bob.dir) / "lastauth").exists()


def _open_smtp(tree: Tree) -> list[str]:
    path = tree.etc / "open-smtp"
    return path.read_text().split("\n")[:-1] if path.exists() else []


def _tcp_rules(tree: Tree) -> dict[bytes, bytes]:
    return dict(Reader((tree.etc / "tcp.smtp.cdb").read_bytes()).items())


def test_roaming_users_open_the_relay(tree: Tree) -> None:
    tree.write_settings(roaming_users=True)
    tree.write_etc("tcp.smtp", '127.:allow,RELAYCLIENT=""\n')
    tree.clock = epoch("2027-12-31 23:59:59")
    done, record = tree.login(pop())
    assert done.returncode == 0, done.stderr
    (line,) = _open_smtp(tree)
    rule, tab, stamp = line.partition("\t")
    assert rule == f'{REMOTE_IP}:allow,RELAYCLIENT="",RBLSMTPD=""' and tab
    assert stamp == str(tree.clock)
    # tcprules' data: "D\0" for deny, nothing for allow, then "+VAR=value\0" per variable
    rules = _tcp_rules(tree)
    assert rules[REMOTE_IP.encode()] == b"+RELAYCLIENT=\0+RBLSMTPD=\0"
    assert rules[b"127."] == b"+RELAYCLIENT=\0"
    # another IP is added; the same IP again is not duplicated
    tree.login(pop(), TCPREMOTEIP="198.51.100.7")
    tree.login(pop())
    ips = sorted(line.split(":", 1)[0] for line in _open_smtp(tree))
    assert ips == ["192.0.2.10", "198.51.100.7"]
    assert b"198.51.100.7" in _tcp_rules(tree)


def test_clearopensmtp_closes_old_relays(tree: Tree) -> None:
    tree.write_settings(roaming_users=True, relay_clear_minutes=60)
    tree.write_etc("tcp.smtp", '127.:allow,RELAYCLIENT=""\n')
    tree.clock = now = epoch("2028-02-29 00:30:00")
    tree.write_etc("open-smtp", f'203.0.113.9:allow,RELAYCLIENT="",RBLSMTPD=""\t{now - 3600}\n'
                                f'203.0.113.8:allow,RELAYCLIENT="",RBLSMTPD=""\t{now - 3599}\n')
    assert tree.login(pop())[0].returncode == 0
    assert b"203.0.113.9" in _tcp_rules(tree)
    done = tree.run([program("clearopensmtp")], None, tree.env())
    assert (done.returncode, done.stdout) == (0, b"clearopensmtp: 1 relay entry removed\n"), done.stderr
    assert sorted(line.split(":", 1)[0] for line in _open_smtp(tree)) == ["192.0.2.10", "203.0.113.8"]
    rules = _tcp_rules(tree)
    assert b"203.0.113.9" not in rules and REMOTE_IP.encode() in rules and b"127." in rules
    tree.clock = now + 3600  # an hour on, the login's own entry has run out too
    done = tree.run([program("clearopensmtp")], None, tree.env())
    assert (done.returncode, done.stdout) == (0, b"clearopensmtp: 2 relay entries removed\n"), done.stderr
    assert _open_smtp(tree) == [] and b"127." in _tcp_rules(tree)


def test_roaming_users_off_by_default(tree: Tree) -> None:
    done, record = tree.login(pop())
    assert done.returncode == 0
    assert not (tree.etc / "open-smtp").exists() and not (tree.etc / "tcp.smtp.cdb").exists()


def test_smtp_logins_do_not_open_the_relay(tree: Tree) -> None:
    tree.write_settings(roaming_users=True)
    done, record = tree.login(pop(timestamp=b""), TCPLOCALPORT="25")
    assert done.returncode == 0, done.stderr
    assert _open_smtp(tree) == []
    assert not (tree.etc / "tcp.smtp.cdb").exists()


def test_no_relay_users_do_not_open_the_relay(tree: Tree) -> None:
    tree.write_settings(roaming_users=True)
    tree.add_user("example.com", "carol", PASSWORD, flags=NO_RELAY)
    done, record = tree.login(pop("carol@example.com"))
    assert done.returncode == 0, done.stderr
    assert _open_smtp(tree) == []
    (tree.domain_dir("example.com") / ".qmailadmin-limits").write_text("disable_external_relay\n")
    done, record = tree.login(pop())
    assert done.returncode == 0, done.stderr
    assert _open_smtp(tree) == []


def test_failed_logins_do_not_open_the_relay(tree: Tree) -> None:
    tree.write_settings(roaming_users=True)
    tree.login(pop(password="wrong"))
    assert _open_smtp(tree) == []


# ------------------------------------------------------------------------------------------------
# Settings


def test_settings_bad_line(tree: Tree) -> None:
    text = tree.config.read_text()
    tree.config.write_text(text + "this line has no equals sign\n")
    line = len(text.split("\n"))
    done, record = tree.login(pop())
    assert done.returncode == 111
    assert record is None
    assert f"{tree.config}:{line}:".encode() in done.stderr


@pytest.mark.parametrize(("line", "word"), [("frobnicate = yes", b"frobnicate"),
                                            ("logging = loud", b"logging"),
                                            ("auth_logging = true", b"auth_logging"),
                                            ("vpopmail_home = relative/path", b"vpopmail_home"),
                                            ("logging = y", b"twice")])
def test_settings_bad_key_or_value(tree: Tree, line: str, word: bytes) -> None:
    text = "# comment\n\n" + tree.config.read_text()
    tree.config.write_text(text + line + "\n")
    done, record = tree.login(pop())
    assert done.returncode == 111
    assert record is None
    assert f"{tree.config}:{len(text.split(chr(10)))}:".encode() in done.stderr
    assert word in done.stderr


@pytest.mark.parametrize("style", ["vpopmail", "checkpassword"])
def test_settings_errors_are_111_in_both_styles(tree: Tree, style: str) -> None:
    tree.write_settings(exit_codes=style, frobnicate="1")
    done, record = tree.login(pop())
    assert done.returncode == 111 and record is None


def test_settings_file_missing(tree: Tree) -> None:
    missing = tree.root / "nowhere.conf"
    done, record = tree.login(pop(), VPOP_CONFIG=str(missing))
    assert done.returncode == 111
    assert record is None
    assert str(missing).encode() in done.stderr


@pytest.mark.parametrize(
    ("text", "line"),
    [("localhost|0|vpopmail|S3cr3t-Pw\n", 1),
     ("# read\n\nlocalhost|0|vpopmail|S3cr3t-Pw|vpopmail\nlocalhost|port|vpopmail|S3cr3t-Pw|vpopmail\n", 4),
     ("localhost|0|vpopmail|S3cr3t|Pw|vpopmail\n", 1),
     ("localhost|99999|vpopmail|S3cr3t-Pw|vpopmail\n", 1),
     ("|0|vpopmail|S3cr3t-Pw|vpopmail\n", 1)],
)
def test_malformed_vpopmail_mysql(tree: Tree, text: str, line: int) -> None:
    tree.write_settings(store="mysql")
    path = tree.write_etc("vpopmail.mysql", text, mode=0o600)
    done, record = tree.login(pop())
    assert done.returncode == 111
    assert record is None
    assert f"{path}:{line}:".encode() in done.stderr
    logged = b"".join(tree.syslog_records())
    for secret in (b"S3cr3t", b"Pw"):
        assert secret not in done.stderr
        assert secret not in logged


def test_defaultdomain_that_is_not_text(tree: Tree) -> None:
    # An unreadable default domain is a broken installation: retry later, never "wrong password".
    tree.write_etc("defaultdomain", b"\xff\xfeexample.com\n")
    done, record = tree.login(pop("bob"))
    assert done.returncode == 111, done.stderr
    assert record is None
    assert b"Traceback" not in done.stderr
    assert done.stderr == f"vchkpw: {tree.etc}/defaultdomain: damaged: not UTF-8\n".encode()
    assert tree.syslog_lines()[-1].startswith(f"vchkpw-pop3: {tree.etc}/defaultdomain: damaged: not UTF-8")


def test_vpopmail_mysql_password_that_is_not_text(tree: Tree) -> None:
    tree.write_settings(store="mysql")
    tree.write_etc("vpopmail.mysql", b"localhost|/nonexistent.sock|vpopmail|S3cr\xffet|vpopmail\n",
                   mode=0o600)
    for style in ("checkpassword", "vpopmail"):
        tree.write_settings(exit_codes=style)
        done, record = tree.login(pop())
        assert done.returncode == 111, done.stderr
        assert record is None
        assert b"Traceback" not in done.stderr and b"S3cr" not in done.stderr
        # Refused when the file is read (vpop.credentials), with its name and line.
        assert done.stderr.startswith(f"vchkpw: {tree.etc / 'vpopmail.mysql'}:1: the password cannot be "
                                      "sent by the MySQL driver".encode())
        assert not any("S3cr" in line for line in tree.syslog_lines())


def test_vpopmail_mysql_missing(tree: Tree) -> None:
    tree.write_settings(store="mysql")
    done, record = tree.login(pop())
    assert done.returncode == 111 and record is None
    assert str(tree.etc / "vpopmail.mysql").encode() in done.stderr


# ------------------------------------------------------------------------------------------------
# A root program: PYTHON* variables change nothing


def test_python_environment_is_ignored(tree: Tree) -> None:
    fake = tree.root / "fake"
    marker = tree.root / "marker"
    code = f"open({str(marker)!r}, 'a').write(__name__ + '\\n')\n"
    for rel in ("vpop/__init__.py", "vchkpw/__init__.py", "vchkpw/main.py", "sitecustomize.py",
                "usercustomize.py", "startup.py", "encodings/__init__.py"):
        (fake / rel).parent.mkdir(parents=True, exist_ok=True)
        (fake / rel).write_text(code)
    done, record = tree.login(pop(), PYTHONPATH=str(fake), PYTHONSTARTUP=str(fake / "startup.py"),
                              PYTHONHOME=str(fake), PYTHONUSERBASE=str(fake), PYTHONINSPECT="1",
                              PYTHONWARNINGS="error", PYTHONSAFEPATH="0")
    assert done.returncode == 0, done.stderr
    assert_session(record, tree.bob.dir)
    assert not marker.exists()
    # handed on untouched to the program (which decides for itself)
    assert record["env"]["PYTHONPATH"] == str(fake)
