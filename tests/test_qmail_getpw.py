"""qmail-getpw on the qmail-mysql ``mailbox`` table: the installed program, the session's MariaDB.

Every test runs the real program as qmail-lspawn would (cwd = qmail home, argv[1] = the local part)
against real directories owned by real uids (800:100, the FAQ's popuser:users; uid 800 need not exist
in /etc/passwd).  Reference: qmail-delivery.md §4 and the FAQ (seeds/004).
"""

from __future__ import annotations

import errno
import fcntl
import os
import pwd
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import VPOPMAIL_GID, VPOPMAIL_UID, program, remove_tree, shared_tmpdir
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from qmysql import (
    POPUSER_UID,
    USERS_GID,
    QmailMysqlTree,
    empty_tables,
    getpw_fields,
    sqlserver_text,
)
from syslogrecord import FACILITY_MAIL, SEVERITY

from qmail_getpw.main import TEMPORARY_ERRNOS, home_owned


@pytest.fixture
def db(qmail_db: dict[str, Any]) -> dict[str, Any]:
    empty_tables(qmail_db)
    return qmail_db


@pytest.fixture
def site(db: dict[str, Any]) -> Iterator[QmailMysqlTree]:
    with QmailMysqlTree(db) as t:
        yield t


@pytest.fixture
def faq(site: QmailMysqlTree) -> QmailMysqlTree:
    """The FAQ's example: mailbox iain and iain-sanity (800:100); alias (iain, slowlaris, ., /Maildir/)."""
    site.iain = site.home("home/mail/iain")
    site.sanity = site.home("home/mail/sanity")
    site.mailbox("iain", POPUSER_UID, USERS_GID, site.iain)
    site.mailbox("iain-sanity", POPUSER_UID, USERS_GID, site.sanity)
    site.alias("iain", "slowlaris", ".", "/Maildir/")
    return site


@pytest.fixture
def with_alias(faq: QmailMysqlTree) -> QmailMysqlTree:
    """The FAQ's site plus an ``alias`` user in mailbox whose home does not even exist."""
    faq.alias_home = str(faq.root / "home" / "mail" / "alias-not-there")
    faq.mailbox("alias", POPUSER_UID, USERS_GID, faq.alias_home)
    return faq


@pytest.fixture
def system_user() -> Iterator[pwd.struct_passwd]:
    """A real /etc/passwd user (useradd) with a home it owns in a shared tmpdir; removed afterwards."""
    base = shared_tmpdir("vpop-sysuser-")
    name = "vpt" + secrets.token_hex(3)
    home = base / name
    subprocess.run(["useradd", "--no-create-home", "--home-dir", str(home), "--shell", "/usr/sbin/nologin",
                    "--user-group", name], check=True, capture_output=True)
    try:
        entry = pwd.getpwnam(name)
        home.mkdir(mode=0o700)
        os.chown(home, entry.pw_uid, entry.pw_gid)
        yield entry
    finally:
        subprocess.run(["userdel", name], capture_output=True)
        subprocess.run(["groupdel", name], capture_output=True)  # if USERGROUPS_ENAB left it
        remove_tree(base)


@pytest.fixture
def passwd_alias() -> Iterator[pwd.struct_passwd]:
    """The system user ``alias`` (qmail's conf-users): the existing one, or one made for the test."""
    try:
        yield pwd.getpwnam("alias")
        return
    except KeyError:
        pass
    base = shared_tmpdir("vpop-alias-")
    subprocess.run(["useradd", "--no-create-home", "--home-dir", str(base / "alias"), "--shell",
                    "/usr/sbin/nologin", "--user-group", "alias"], check=True, capture_output=True)
    try:
        yield pwd.getpwnam("alias")
    finally:
        subprocess.run(["userdel", "alias"], capture_output=True)
        subprocess.run(["groupdel", "alias"], capture_output=True)
        remove_tree(base)


def ok(done: subprocess.CompletedProcess[bytes], *fields: object) -> None:
    assert (done.returncode, done.stderr) == (0, b""), done
    assert done.stdout == getpw_fields(*fields)


def fails(done: subprocess.CompletedProcess[bytes], code: int) -> None:
    """An error exit prints nothing at all (qmail-getpw never prints on error)."""
    assert (done.returncode, done.stdout, done.stderr) == (code, b"", b""), done


# ------------------------------------------------------------------------------------------------
# The FAQ's example, byte for byte


def test_faq_iain(faq: QmailMysqlTree) -> None:
    done = faq.getpw("iain")
    assert done.stdout == b"iain\x00800\x00100\x00" + faq.iain.encode() + b"\x00\x00\x00"
    ok(done, "iain", 800, 100, faq.iain, "", "")
    # What the FAQ shows on a terminal (NULs invisible): iain800100/home/mail/iain
    assert done.stdout.replace(b"\0", b"") == b"iain800100" + faq.iain.encode()


def test_faq_iain_slowlaris(faq: QmailMysqlTree) -> None:
    done = faq.getpw("iain-slowlaris")
    ok(done, "iain", 800, 100, faq.iain, "-", "slowlaris")
    # The FAQ's "iain800100/home/mail/iain-slowlaris" is home, dash and ext run together.
    assert done.stdout.replace(b"\0", b"") == b"iain800100" + faq.iain.encode() + b"-slowlaris"


def test_faq_iain_sanity_prints_the_matched_user(faq: QmailMysqlTree) -> None:
    # The FAQ prints "iain" as the user for iain-sanity.  Stock qmail-getpw prints pw_name of the entry
    # it accepted, and qmail-local hands that name to every delivery program as $USER while uid, gid
    # and home are iain-sanity's: printing "iain" would tell procmail & co. that the mail belongs to
    # another account than the one whose home and uid receive it.  We print the matched name.
    done = faq.getpw("iain-sanity")
    ok(done, "iain-sanity", 800, 100, faq.sanity, "", "")
    assert done.stdout.replace(b"\0", b"") == b"iain-sanity800100" + faq.sanity.encode()


# ------------------------------------------------------------------------------------------------
# The candidate search


@pytest.mark.parametrize(("local", "fields"), [
    ("iain-sanity-slowlaris", ("iain-sanity", "sanity", "-", "slowlaris")),  # longest candidate first
    ("iain-a-b", ("iain", "iain", "-", "a-b")),
    ("iain-", ("iain", "iain", "-", "")),
    ("IAIN", ("iain", "iain", "", "")),
    ("IAIN-Foo", ("iain", "iain", "-", "Foo")),  # lower-cased copy for the lookup; ext keeps its case
    ("Iain-Sanity-X.Y", ("iain-sanity", "sanity", "-", "X.Y")),
    ("iain-SLOWLARIS", ("iain", "iain", "-", "SLOWLARIS")),
])
def test_candidates(faq: QmailMysqlTree, local: str, fields: tuple[str, str, str, str]) -> None:
    user, home, dash, ext = fields
    ok(faq.getpw(local), user, 800, 100, getattr(faq, home), dash, ext)


def test_extra_arguments_are_ignored(faq: QmailMysqlTree) -> None:
    ok(faq.getpw("iain-x", "ignored", "too"), "iain", 800, 100, faq.iain, "-", "x")


def test_candidates_of_32_characters_or_more_are_skipped(with_alias: QmailMysqlTree) -> None:
    site = with_alias
    a31, b32 = "a" * 31, "b" * 32
    site.mailbox(a31, POPUSER_UID, USERS_GID, site.home("home/mail/a31"))
    site.mailbox(b32, POPUSER_UID, USERS_GID, site.home("home/mail/b32"))
    ok(site.getpw(a31), a31, 800, 100, str(site.root / "home/mail/a31"), "", "")
    ok(site.getpw(a31 + "-ext"), a31, 800, 100, str(site.root / "home/mail/a31"), "-", "ext")
    # 32 characters: never looked up, whether whole or as a candidate before a dash.
    ok(site.getpw(b32), "alias", 800, 100, site.alias_home, "-", b32)
    ok(site.getpw(b32 + "-ext"), "alias", 800, 100, site.alias_home, "-", b32 + "-ext")
    # A long local part still finds a short candidate.
    ok(site.getpw("iain-" + "x" * 60), "iain", 800, 100, site.iain, "-", "x" * 60)


def test_the_32_limit_counts_bytes(with_alias: QmailMysqlTree) -> None:
    """GETPW_USERLEN is a byte count: 16 ü are 16 characters but 32 bytes of UTF-8, and are skipped."""
    site = with_alias
    u15, u16 = "ü" * 15, "ü" * 16
    site.mailbox(u15, POPUSER_UID, USERS_GID, site.home("home/mail/u15"))
    site.mailbox(u16, POPUSER_UID, USERS_GID, site.home("home/mail/u16"))
    ok(site.getpw(u15 + "-x"), u15, 800, 100, str(site.root / "home/mail/u15"), "-", "x")
    ok(site.getpw(u16), "alias", 800, 100, site.alias_home, "-", u16)
    ok(site.getpw(u16 + "-x"), "alias", 800, 100, site.alias_home, "-", u16 + "-x")


def test_uid_0_is_rejected(faq: QmailMysqlTree) -> None:
    faq.mailbox("iain-root", 0, 0, faq.home("home/mail/rootish", uid=0, gid=0))
    ok(faq.getpw("iain-root"), "iain", 800, 100, faq.iain, "-", "root")


def test_gid_0_is_rejected_like_uid_0(faq: QmailMysqlTree) -> None:
    """A row with gid 0 would have qmail-lspawn deliver in group root: skipped, as a uid-0 row is."""
    faq.mailbox("iain-root", 0, USERS_GID, faq.home("home/mail/rootish", uid=0))
    faq.mailbox("iain-wheel", POPUSER_UID, 0, faq.home("home/mail/wheel", gid=0))
    for local in ("iain-root", "iain-wheel"):
        ok(faq.getpw(local), "iain", 800, 100, faq.iain, "-", local[5:])
    ok(faq.getpw("iain-wheel-x"), "iain", 800, 100, faq.iain, "-", "wheel-x")


@pytest.mark.parametrize(("uid", "gid"), [(0, USERS_GID), (POPUSER_UID, 0), (0, 0)])
def test_alias_with_uid_or_gid_0_is_113(faq: QmailMysqlTree, uid: int, gid: int) -> None:
    """Stock prints a uid-0 alias and qmail-lspawn refuses it: 113, "Not allowed to perform deliveries
    as root."  We give that answer ourselves, and the same for gid 0, which qmail-lspawn would take."""
    faq.mailbox("alias", uid, gid, faq.home("home/mail/alias", uid=uid, gid=gid))
    fails(faq.getpw("nobody"), 113)
    ok(faq.getpw("iain-x"), "iain", 800, 100, faq.iain, "-", "x")  # found users are not affected


def test_home_owned_by_another_uid_is_rejected(faq: QmailMysqlTree) -> None:
    faq.mailbox("iain-other", POPUSER_UID, USERS_GID, faq.home("home/mail/other", uid=801))
    ok(faq.getpw("iain-other"), "iain", 800, 100, faq.iain, "-", "other")
    ok(faq.getpw("iain-other-x"), "iain", 800, 100, faq.iain, "-", "other-x")


def test_missing_home_is_rejected(faq: QmailMysqlTree) -> None:
    faq.mailbox("iain-gone", POPUSER_UID, USERS_GID, str(faq.root / "home/mail/gone"))
    ok(faq.getpw("iain-gone"), "iain", 800, 100, faq.iain, "-", "gone")
    faq.mailbox("iain-blank", POPUSER_UID, USERS_GID, "")
    ok(faq.getpw("iain-blank"), "iain", 800, 100, faq.iain, "-", "blank")


def test_home_check_follows_symlinks_like_stat(faq: QmailMysqlTree) -> None:
    # stat(2), not lstat: a root-owned symlink to a directory owned by 800 is accepted.
    link = faq.root / "home/mail/link"
    link.symlink_to(faq.sanity)
    faq.mailbox("iain-link", POPUSER_UID, USERS_GID, str(link))
    ok(faq.getpw("iain-link"), "iain-link", 800, 100, str(link), "", "")


# ------------------------------------------------------------------------------------------------
# The alias fallback


def test_no_match_goes_to_alias_with_the_whole_local_part(with_alias: QmailMysqlTree) -> None:
    site = with_alias
    # No uid or home checks for alias: its home does not exist here.
    assert not os.path.exists(site.alias_home)
    ok(site.getpw("nobody"), "alias", 800, 100, site.alias_home, "-", "nobody")
    ok(site.getpw("No.Body-Here"), "alias", 800, 100, site.alias_home, "-", "No.Body-Here")
    ok(site.getpw("-iain"), "alias", 800, 100, site.alias_home, "-", "-iain")


def test_alias_from_passwd(faq: QmailMysqlTree, passwd_alias: pwd.struct_passwd) -> None:
    a = passwd_alias
    ok(faq.getpw("nobody"), a.pw_name, a.pw_uid, a.pw_gid, a.pw_dir, "-", "nobody")


def test_no_alias_user_is_116(faq: QmailMysqlTree) -> None:
    with pytest.raises(KeyError):  # precondition: no system "alias" user (the next test covers one)
        pwd.getpwnam("alias")
    fails(faq.getpw("nobody-here"), 116)


def test_no_alias_user_and_system_users_off_is_116(faq: QmailMysqlTree, passwd_alias: pwd.struct_passwd
                                                   ) -> None:
    faq.write_settings(getpw_system_users=False)
    fails(faq.getpw("nobody-here"), 116)


def test_no_argument_is_100_and_silent(faq: QmailMysqlTree) -> None:
    fails(faq.getpw(), 100)


# ------------------------------------------------------------------------------------------------
# Local parts that are not UTF-8: qmail-lspawn passes the bytes a remote RCPT TO made


def stock_getpw(local: bytes, users: dict[bytes, tuple[int, int, bytes]], alias: tuple[int, int, bytes]
                ) -> bytes:
    """Stock qmail-getpw's stdout for ``local`` (qmail-delivery.md §4), on bytes as the C program works.

    ``users`` holds the accepted entries by exact name (uid != 0, home owned); every other name
    is unknown.  Candidates: the whole string, then every prefix ending before a '-', longest first;
    32 bytes or more are skipped; only A-Z are lower-cased; no match -> alias, dash '-', the whole local.
    """
    for pos in range(len(local), 0, -1):
        if pos != len(local) and local[pos:pos + 1] != b"-":
            continue
        candidate = bytes(c + 32 if 65 <= c <= 90 else c for c in local[:pos])
        if len(candidate) >= 32 or candidate not in users:
            continue
        uid, gid, home = users[candidate]
        if pos == len(local):
            return getpw_fields(candidate, uid, gid, home, b"", b"")
        return getpw_fields(candidate, uid, gid, home, b"-", local[pos + 1:])
    uid, gid, home = alias
    return getpw_fields(b"alias", uid, gid, home, b"-", local)


@pytest.fixture
def bytes_site(with_alias: QmailMysqlTree) -> QmailMysqlTree:
    """The FAQ's site plus joe and zoë (UTF-8 in the table); ``users`` maps names (bytes) to entries."""
    site = with_alias
    site.joe = site.home("home/mail/joe")
    site.zoe = site.home("home/mail/zoe")
    site.mailbox("joe", POPUSER_UID, USERS_GID, site.joe)
    site.mailbox("zoë", POPUSER_UID, USERS_GID, site.zoe)
    site.users = {name.encode(): (POPUSER_UID, USERS_GID, home.encode()) for name, home in (
        ("iain", site.iain), ("iain-sanity", site.sanity), ("joe", site.joe), ("zoë", site.zoe))}
    site.alias_entry = (POPUSER_UID, USERS_GID, site.alias_home.encode())
    return site


@pytest.mark.parametrize("local", [
    b"j\xf6e",  # jöe in Latin-1
    b"J\xd6E",
    b"\xff",
    b"\x80-iain",
    b"iain\xff",
    b"iain\xff-x",  # neither candidate is UTF-8
    b"iain-\xff\xfe",  # iain, ext as received
    b"IAIN-Sanity-\xc3",  # a UTF-8 lead byte alone
    b"zo\xc3",  # zoë cut inside its ë
    b"zo\xeb",  # zoë in Latin-1
    b"\xed\xa0\x80",  # a UTF-16 surrogate in UTF-8 form (CESU-8): not UTF-8
    b"\xc0\xaf",  # an overlong '/'
    b"iain-" + b"\xe9" * 40,
    b"\xe9" * 16 + b"-iain",
    b"zo\xc3\xab-\xff",  # zoë (UTF-8) with a non-UTF-8 ext
    b"ZO\xc3\xab-\xe9t\xe9",
])
@pytest.mark.parametrize("system_users", [True, False])
def test_local_parts_that_are_not_utf8(bytes_site: QmailMysqlTree, local: bytes, system_users: bool) -> None:
    """Bytes that are not UTF-8 match no row: stock qmail-getpw's answer, byte for byte (it was a
    traceback and exit 1, which qmail-lspawn reports as permanent: the mail bounced)."""
    bytes_site.write_settings(getpw_system_users=system_users)
    done = bytes_site.getpw(local)
    assert (done.returncode, done.stderr) == (0, b""), done
    assert done.stdout == stock_getpw(local, bytes_site.users, bytes_site.alias_entry)


# Pieces that make candidates: names in the table, their case and accent variants, breaks, bytes that
# are not UTF-8, and runs that bring a candidate near the 32-byte limit.
PIECES = st.one_of(
    st.sampled_from([b"joe", b"JOE", b"iain", b"IAIN", b"sanity", b"zo\xc3\xab", b"ZO\xc3\xab", b"ZO\xc3\x8b",
                     b"j\xc3\xb6e", b"j\xf6e", b"-", b"-", b"--", b"\xff", b"\xc3", b"\x80", b"e", b" ", b".",
                     b"a" * 27, b"\xe9" * 13, b"alias"]),
    st.binary(min_size=1, max_size=4).filter(lambda b: b"\0" not in b),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(PIECES, min_size=1, max_size=6).map(b"".join))
def test_fuzzed_local_parts_get_the_stock_answer(bytes_site: QmailMysqlTree, local: bytes) -> None:
    """Any local part (no NUL: argv cannot carry one): exit 0 and stock qmail-getpw's bytes."""
    bytes_site.write_settings(getpw_system_users=False)  # the table alone: /etc/passwd is the host's
    done = bytes_site.getpw(local)
    assert (done.returncode, done.stderr) == (0, b""), done
    assert done.stdout == stock_getpw(local, bytes_site.users, bytes_site.alias_entry)


# ------------------------------------------------------------------------------------------------
# Names are compared exactly: not through the table's collation (utf8mb4_general_ci)


@pytest.mark.parametrize(("local", "user"), [
    ("JOE", "joe"),  # A-Z are lower-cased, as stock qmail-getpw does
    ("Joe-Box", "joe"),
    ("zoë", "zoë"),
    ("ZOë-x", "zoë"),
    ("jöe", None),  # the collation takes these for joe
    ("JÖE", None),
    ("jóe-x", None),
    ("joe ", None),  # PAD SPACE: 'joe ' = 'joe'
    ("joe  -x", None),
    ("ZOË", None),  # Ë is not A-Z: not lower-cased
    ("zoe", None),  # the collation takes it for zoë
    ("zoe-x", None),
])
def test_names_match_exactly(bytes_site: QmailMysqlTree, local: str, user: str | None) -> None:
    raw = local.encode()
    done = bytes_site.getpw(raw)
    assert done.stdout == stock_getpw(raw, bytes_site.users, bytes_site.alias_entry), done
    name = done.stdout.split(b"\0", 1)[0].decode()
    assert name == (user or "alias")


def test_row_in_ascii_mixed_case_answers_with_its_own_name(with_alias: QmailMysqlTree) -> None:
    """A row stored as Carol: found for carol and CAROL (ASCII case, as the patch's ci collation did),
    printed as stored (stock prints pw_name); not found for cärol."""
    home = with_alias.home("home/mail/carol")
    with_alias.mailbox("Carol", POPUSER_UID, USERS_GID, home)
    ok(with_alias.getpw("carol-x"), "Carol", 800, 100, home, "-", "x")
    ok(with_alias.getpw("CAROL"), "Carol", 800, 100, home, "", "")
    ok(with_alias.getpw("c\u00e4rol"), "alias", 800, 100, with_alias.alias_home, "-", "c\u00e4rol")


# ------------------------------------------------------------------------------------------------
# Whatever goes wrong unforeseen: 111 and nothing printed, never Python's exit 1 (a bounce)


def test_unforeseen_error_is_111_and_logged(with_alias: QmailMysqlTree) -> None:
    # A home with a NUL in it cannot even be given to stat(2): Python raises ValueError.
    with_alias.mailbox("iain-nul", POPUSER_UID, USERS_GID, with_alias.iain + "\0/x")
    with_alias.syslog_records()
    fails(with_alias.getpw("iain-nul"), 111)
    fails(closed_stderr(with_alias, "iain-nul-ext"), 111)
    records = with_alias.syslog_parsed()
    assert len(records) == 2, records
    for record in records:
        assert (record.tag, record.facility, record.severity) == ("qmail-getpw", FACILITY_MAIL,
                                                                  SEVERITY["err"])
        assert record.message.startswith("internal error ValueError at "), record
        assert "/qmail_getpw/main.py:" in record.message and record.message.endswith(", deferred"), record
        assert "iain-nul" not in record.message  # the place, not the data
    ok(with_alias.getpw("iain-x"), "iain", 800, 100, with_alias.iain, "-", "x")  # other names unaffected


# ------------------------------------------------------------------------------------------------
# System users (/etc/passwd)


def test_system_user_found_when_not_in_mailbox(with_alias: QmailMysqlTree, system_user: pwd.struct_passwd
                                               ) -> None:
    u = system_user
    ok(with_alias.getpw(u.pw_name), u.pw_name, u.pw_uid, u.pw_gid, u.pw_dir, "", "")
    ok(with_alias.getpw(u.pw_name.upper() + "-Box"), u.pw_name, u.pw_uid, u.pw_gid, u.pw_dir, "-", "Box")


def test_system_user_not_found_when_system_users_off(with_alias: QmailMysqlTree,
                                                     system_user: pwd.struct_passwd) -> None:
    with_alias.write_settings(getpw_system_users=False)
    u = system_user
    ok(with_alias.getpw(u.pw_name), "alias", 800, 100, with_alias.alias_home, "-", u.pw_name)


def test_mailbox_row_beats_passwd(with_alias: QmailMysqlTree, system_user: pwd.struct_passwd) -> None:
    home = with_alias.home("home/mail/shadow")
    with_alias.mailbox(system_user.pw_name, POPUSER_UID, USERS_GID, home)
    ok(with_alias.getpw(system_user.pw_name), system_user.pw_name, 800, 100, home, "", "")


def test_system_user_with_foreign_home_is_rejected(with_alias: QmailMysqlTree,
                                                   system_user: pwd.struct_passwd) -> None:
    os.chown(system_user.pw_dir, 0, 0)
    ok(with_alias.getpw(system_user.pw_name), "alias", 800, 100, with_alias.alias_home, "-",
       system_user.pw_name)


# ------------------------------------------------------------------------------------------------
# The database cannot answer: 111 and nothing on stdout, never a guess


@pytest.mark.parametrize("tcp", [False, True])
def test_dead_database_is_111_with_empty_stdout(with_alias: QmailMysqlTree, dead_mysql: dict[str, Any],
                                                system_user: pwd.struct_passwd, tcp: bool) -> None:
    with_alias.write_sqlserver(sqlserver_text(dead_mysql, tcp=tcp))
    # iain would be found; nobody-here would fall to alias; the system user is in /etc/passwd.
    for local in ("iain", "iain-slowlaris", "nobody-here", system_user.pw_name):
        fails(with_alias.getpw(local), 111)


def test_missing_mailbox_table_is_111(with_alias: QmailMysqlTree) -> None:
    ok(with_alias.getpw("iain"), "iain", 800, 100, with_alias.iain, "", "")
    with_alias.sql("DROP TABLE mailbox")
    for local in ("iain", "nobody-here"):
        fails(with_alias.getpw(local), 111)


def test_wrong_database_password_is_111(with_alias: QmailMysqlTree, db: dict[str, Any]) -> None:
    with_alias.write_sqlserver(sqlserver_text({**db, "password": "not-" + db["password"]}))
    fails(with_alias.getpw("iain"), 111)


@pytest.mark.parametrize("text", [
    None,  # no control/sqlserver at all
    "server localhost\nlogin x\ndb y\nport 3306\nsocket /run/x.sock\n",
    "server localhost\nlogin x\npassword y\n",
    "server localhost\nuser x\npassword y\ndb z\n",
])
def test_sqlserver_problems_are_111(with_alias: QmailMysqlTree, text: str | None) -> None:
    if text is None:
        with_alias.sqlserver.unlink()
    else:
        with_alias.write_sqlserver(text)
    fails(with_alias.getpw("iain"), 111)
    fails(with_alias.getpw("nobody-here"), 111)


def test_bad_settings_file_is_111(with_alias: QmailMysqlTree) -> None:
    with_alias.config.write_text(with_alias.config.read_text() + "no_such_setting = 1\n")
    fails(with_alias.getpw("iain"), 111)


# ------------------------------------------------------------------------------------------------
# How qmail-lspawn runs it: as qmailp, stdin = its command pipe, stderr closed


def test_runs_as_an_unprivileged_uid(with_alias: QmailMysqlTree, db: dict[str, Any]) -> None:
    """As qmailp (here uid 89): control/sqlserver 0640 root:89 is readable through the group.

    Over TCP: the session's MariaDB socket is in a directory only root may enter.
    """
    with_alias.write_sqlserver(sqlserver_text(db, tcp=True), mode=0o640, gid=VPOPMAIL_GID)
    ok(with_alias.getpw("iain-slowlaris", user=VPOPMAIL_UID, group=VPOPMAIL_GID), "iain", 800, 100,
       with_alias.iain, "-", "slowlaris")
    # Not readable by that uid (the FAQ's "make sure control/sqlserver is readable by the qmail users").
    with_alias.write_sqlserver(with_alias.sqlserver.read_text(), mode=0o600)
    fails(with_alias.getpw("iain", user=VPOPMAIL_UID, group=VPOPMAIL_GID), 111)


def test_stdin_pipe_is_never_read(with_alias: QmailMysqlTree) -> None:
    """stdin is qmail-lspawn's command pipe: data stays in it, and an open writer does not block us."""
    r, w = os.pipe()
    try:
        os.write(w, b"qmail-lspawn's next command\0")
        done = with_alias.getpw("iain-slowlaris", stdin=r, timeout=15)  # w stays open: no EOF ever
        ok(done, "iain", 800, 100, with_alias.iain, "-", "slowlaris")
        fcntl.fcntl(r, fcntl.F_SETFL, os.O_NONBLOCK)
        assert os.read(r, 100) == b"qmail-lspawn's next command\0"
        done = with_alias.getpw("nobody", stdin=r, timeout=15)  # the alias path too, on an empty pipe
        ok(done, "alias", 800, 100, with_alias.alias_home, "-", "nobody")
    finally:
        os.close(r)
        os.close(w)


def closed_stderr(site: QmailMysqlTree, local: str, check: str = "") -> subprocess.CompletedProcess[bytes]:
    """Run qmail-getpw with fd 2 closed, as under qmail-start; ``check`` runs first in the same shell."""
    script = f'exec 2>&-; {check} exec "$0" "$@"'
    return subprocess.run(["/bin/sh", "-c", script, program("qmail-getpw"), local], stdin=subprocess.DEVNULL,
                          capture_output=True, env=site.program_env(), cwd=site.qmail_home, timeout=20)


def test_closed_stderr(with_alias: QmailMysqlTree, dead_mysql: dict[str, Any]) -> None:
    # Prove the shell really closes fd 2 before the exec: a write to it fails.
    probe = closed_stderr(with_alias, "iain", check='if [ -e /proc/$$/fd/2 ]; then exit 7; fi;')
    assert probe.returncode == 0
    ok(closed_stderr(with_alias, "iain-slowlaris"), "iain", 800, 100, with_alias.iain, "-", "slowlaris")
    ok(closed_stderr(with_alias, "nobody"), "alias", 800, 100, with_alias.alias_home, "-", "nobody")
    # With a warning to give (world-readable file) and with the database down.
    os.chmod(with_alias.sqlserver, 0o644)
    ok(closed_stderr(with_alias, "iain"), "iain", 800, 100, with_alias.iain, "", "")
    with_alias.write_sqlserver(sqlserver_text(dead_mysql), mode=0o644)
    fails(closed_stderr(with_alias, "iain"), 111)


# ------------------------------------------------------------------------------------------------
# control/sqlserver readable by every user: one warning per run; or refused


def test_world_readable_sqlserver_warns_once_per_run(with_alias: QmailMysqlTree) -> None:
    site = with_alias
    ok(site.getpw("iain"), "iain", 800, 100, site.iain, "", "")
    assert site.syslog_records() == []  # 0640: nothing to say
    os.chmod(site.sqlserver, 0o644)
    for local in ("iain", "iain-slowlaris"):
        assert site.getpw(local).returncode == 0
        (record,) = site.syslog_parsed()
        assert record.tag == "qmail-getpw"
        text = record.message
        assert str(site.sqlserver) in text and "chmod 640" in text and "chgrp" in text
        assert (record.facility, record.severity) == (FACILITY_MAIL, SEVERITY["warning"])


def test_world_readable_sqlserver_refused(with_alias: QmailMysqlTree) -> None:
    with_alias.write_settings(sqlserver_world_readable="refuse")
    ok(with_alias.getpw("iain"), "iain", 800, 100, with_alias.iain, "", "")  # 0640 is fine
    os.chmod(with_alias.sqlserver, 0o644)
    fails(with_alias.getpw("iain"), 111)
    fails(with_alias.getpw("nobody"), 111)
    records = with_alias.syslog_parsed()  # refused, but not in silence: stderr is closed under qmail-lspawn
    assert len(records) == 2, records
    for record in records:
        assert (record.facility, record.severity) == (FACILITY_MAIL, SEVERITY["err"]), record
        assert str(with_alias.sqlserver) in record.message and "refused" in record.message, record
    os.chmod(with_alias.sqlserver, 0o604)  # "other" may read: still refused
    fails(with_alias.getpw("iain"), 111)


# ------------------------------------------------------------------------------------------------
# home_owned: the stat test, unit-tested where a real subprocess cannot reach it.
#
# A *temporary* stat failure (EIO, ESTALE, ...) must give exit 115 (QLX_NFS) instead of rejecting the
# candidate; no such errno can be produced on demand on a local filesystem, so that branch of resolve()
# (HomeCheckFailed -> 115) is covered by code review.  What can be produced is checked here.


def test_home_owned(tmp_path: Path) -> None:
    owned = tmp_path / "owned"
    owned.mkdir()
    os.chown(owned, POPUSER_UID, USERS_GID)
    assert home_owned(POPUSER_UID, str(owned)) is True
    assert home_owned(POPUSER_UID + 1, str(owned)) is False
    root_home = tmp_path / "root"
    root_home.mkdir()
    assert home_owned(0, str(root_home)) is False  # uid 0 is never accepted, even when it owns the home
    assert home_owned(POPUSER_UID, str(owned), 0) is False  # nor gid 0
    assert home_owned(POPUSER_UID, os.fsencode(owned), USERS_GID) is True  # a home as bytes
    assert home_owned(POPUSER_UID, str(tmp_path / "missing")) is False  # ENOENT
    afile = tmp_path / "file"
    afile.write_text("")
    assert home_owned(POPUSER_UID, str(afile / "below")) is False  # ENOTDIR
    assert home_owned(POPUSER_UID, str(tmp_path / ("x" * 300))) is False  # ENAMETOOLONG


def test_home_owned_eloop_is_not_temporary(tmp_path: Path) -> None:
    loop_a, loop_b = tmp_path / "a", tmp_path / "b"
    loop_a.symlink_to(loop_b)
    loop_b.symlink_to(loop_a)
    with pytest.raises(OSError) as info:
        os.stat(loop_a)
    assert info.value.errno == errno.ELOOP
    assert errno.ELOOP not in TEMPORARY_ERRNOS
    assert home_owned(POPUSER_UID, str(loop_a)) is False  # rejected, not 115


def test_temporary_errno_list_is_error_temp() -> None:
    # error_temp.c's list; ENOENT, ENOTDIR, EACCES, ELOOP and ENAMETOOLONG reject the candidate instead.
    for name in ("EINTR", "ENOMEM", "ETXTBSY", "EIO", "ETIMEDOUT", "EAGAIN", "EDEADLK", "EBUSY", "ENFILE",
                 "EMFILE", "EFBIG", "ENOSPC", "ENETDOWN", "ENETUNREACH", "ENETRESET", "ECONNABORTED",
                 "ECONNRESET", "ECONNREFUSED", "ENOBUFS", "ESTALE", "ENOLCK", "EHOSTDOWN", "EHOSTUNREACH",
                 "EDQUOT", "EUSERS", "ETOOMANYREFS"):
        assert getattr(errno, name) in TEMPORARY_ERRNOS, name
    for name in ("ENOENT", "ENOTDIR", "EACCES", "ELOOP", "ENAMETOOLONG", "EPERM"):
        assert getattr(errno, name) not in TEMPORARY_ERRNOS, name


def test_eacces_on_the_way_to_home_rejects_as_unprivileged_uid(with_alias: QmailMysqlTree,
                                                               db: dict[str, Any]) -> None:
    """A home under a directory qmailp cannot search: stat fails with EACCES, the candidate is rejected."""
    site = with_alias
    locked = site.root / "locked"
    locked.mkdir(mode=0o700)
    home = locked / "home"
    home.mkdir()
    os.chown(home, POPUSER_UID, USERS_GID)
    site.mailbox("iain-locked", POPUSER_UID, USERS_GID, str(home))
    site.write_sqlserver(sqlserver_text(db, tcp=True), mode=0o640, gid=VPOPMAIL_GID)
    ok(site.getpw("iain-locked"), "iain-locked", 800, 100, str(home), "", "")  # root may search
    ok(site.getpw("iain-locked", user=VPOPMAIL_UID, group=VPOPMAIL_GID), "iain", 800, 100, site.iain, "-",
       "locked")
    shutil.rmtree(locked)
