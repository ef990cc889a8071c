"""valias, vipmap, vmoddomlimits and vdeloldusers, installed, run as root on sandbox trees (CDB and
MySQL on the session's MariaDB).  What they write is read back independently (files, rows), and
proved to work through the installed vdelivermail and vchkpw.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import VPOPMAIL_GID, VPOPMAIL_UID, fd3_payload, program, strace_held
from tree import Tree, load_schema, mysql_rows, snapshot

CLOCK = 1_700_000_000  # Tue Nov 14 22:13:20 2023 UTC
DAY = 86400
MESSAGE = b"From: alice@example.org\nTo: info@example.com\nSubject: hi\n\nhello\n"


def run(tree: Tree, name: str, *args: str, clock: int = CLOCK) -> subprocess.CompletedProcess[bytes]:
    env = tree.env(TZ="UTC")
    env["VPOP_CLOCK"] = str(clock)
    return subprocess.run([program(name), *args], env=env, capture_output=True, timeout=60, input=b"",
                          cwd=tree.root)


def ok(done: subprocess.CompletedProcess[bytes]) -> bytes:
    assert (done.returncode, done.stderr) == (0, b""), (done.stdout, done.stderr)
    return done.stdout


def credentials(tree: Tree, db: dict[str, Any]) -> None:
    tree.write_mysql_credentials(db, tcp=True)
    os.chown(tree.etc / "vpopmail.mysql", VPOPMAIL_UID, VPOPMAIL_GID)


@pytest.fixture(params=["cdb", "mysql", "mysql-per-domain"])
def any_tree(request: pytest.FixtureRequest) -> Iterator[Tree]:
    if request.param == "cdb":
        with Tree() as tree:
            tree.add_domain("example.com", aliases=("alias.test",))
            tree.kind = "cdb"
            yield tree
        return
    db = request.getfixturevalue("mysql_db")
    load_schema(db)
    with Tree(store="mysql", many_domains=request.param == "mysql", valias=True) as tree:
        credentials(tree, db)
        tree.add_domain("example.com", aliases=("alias.test",))
        tree.kind = request.param
        tree.db = db
        yield tree


@pytest.fixture(params=["cdb", "mysql"])
def two_stores(request: pytest.FixtureRequest) -> Iterator[Tree]:
    if request.param == "cdb":
        with Tree() as t:
            t.add_domain("example.com")
            t.add_domain("other.test")
            t.kind = "cdb"
            yield t
        return
    db = request.getfixturevalue("mysql_db")
    load_schema(db)
    with Tree(store="mysql") as t:
        credentials(t, db)
        t.add_domain("example.com")
        t.add_domain("other.test")
        t.kind = "mysql"
        t.db = db
        yield t


def login(tree: Tree, address: str, password: str, **env: str) -> bool:
    done, record = tree.login(fd3_payload(address, password), **env)
    return done.returncode == 0 and record is not None


# ------------------------------------------------------------------ valias


def test_valias_insert_show_names_delete(any_tree: Tree) -> None:
    """-i adds lines (leading blanks dropped), -s shows one alias or the domain's, -n names them,
    a duplicate is refused (255), -d removes; CDB: .qmail-<alias> files 0600 of the domain's uid."""
    tree = any_tree
    assert ok(run(tree, "valias", "-i", "bob@example.com", "info@example.com")) == b""
    assert ok(run(tree, "valias", "-i", "  &carol@example.net", "info@example.com")) == b""
    assert ok(run(tree, "valias", "-i", "dave@example.org", "abuse@example.com")) == b""
    assert ok(run(tree, "valias", "-s", "info@example.com")) == \
        b"info@example.com -> bob@example.com\ninfo@example.com -> &carol@example.net\n"
    assert ok(run(tree, "valias", "example.com")) == (
        b"abuse@example.com -> dave@example.org\ninfo@example.com -> bob@example.com\n"
        b"info@example.com -> &carol@example.net\n")
    assert ok(run(tree, "valias", "-n", "example.com")) == b"abuse\ninfo\n"
    # an alias domain's aliases are the real domain's
    assert ok(run(tree, "valias", "-s", "abuse@alias.test")) == b"abuse@alias.test -> dave@example.org\n"
    if tree.kind == "cdb":
        path = tree.domain_dir("example.com") / ".qmail-info"
        assert path.read_text() == "bob@example.com\n&carol@example.net\n"
        info = path.stat()
        assert (info.st_uid, info.st_gid, info.st_mode & 0o7777) == (VPOPMAIL_UID, VPOPMAIL_GID, 0o600)
    else:
        rows = mysql_rows(tree.db, "SELECT alias, domain, valias_line FROM valias "
                          "ORDER BY alias, valias_line")
        assert rows == [("abuse", "example.com", "dave@example.org"),
                        ("info", "example.com", "&carol@example.net"),
                        ("info", "example.com", "bob@example.com")]
    before = snapshot(tree.root)
    duplicate = run(tree, "valias", "-i", "bob@example.com", "info@example.com")
    assert (duplicate.returncode, duplicate.stdout, duplicate.stderr) == \
        (255, b"", b"Error: alias info@example.com -> bob@example.com already exists.\n")
    assert snapshot(tree.root) == before
    assert ok(run(tree, "valias", "-d", "info@example.com")) == b""
    gone = run(tree, "valias", "-s", "info@example.com")
    assert (gone.returncode, gone.stdout) == (255, b"No aliases info@example.com found\n")
    assert ok(run(tree, "valias", "example.com")) == b"abuse@example.com -> dave@example.org\n"
    if tree.kind == "cdb":
        assert not (tree.domain_dir("example.com") / ".qmail-info").exists()
    again = run(tree, "valias", "-d", "info@example.com")
    assert (again.returncode, again.stdout) == (255, b"No aliases info@example.com found\n")
    assert ok(run(tree, "valias", "-d", "abuse@example.com")) == b""
    none = run(tree, "valias", "example.com")
    assert (none.returncode, none.stdout) == (255, b"No aliases found for domain example.com\n")
    names = run(tree, "valias", "-n", "example.com")
    assert (names.returncode, names.stdout) == (255, b"")


def test_valias_refusals_change_nothing(any_tree: Tree) -> None:
    tree = any_tree
    ok(run(tree, "valias", "-i", "bob@example.com", "info@example.com"))
    before = snapshot(tree.root)
    cases = [
        (("-i", "bob@example.com", "info@nowhere.test"), 245, b"Error: Domain does not exist\n"),
        (("-i", "bob@example.com", "../x@example.com"), 255, b"Error: Illegal username\n"),
        (("-i", "", "info@example.com"), 255, None),
        (("-i", "   ", "info@example.com"), 255, None),
        (("-d", "example.com"), 255, None),
        (("-s", "nowhere.test"), 245, b"Error: Domain does not exist\n"),
        (("-x", "info@example.com"), 2, None),
        ((), 2, None),
    ]
    for args, code, text in cases:
        done = run(tree, "valias", *args)
        assert done.returncode == code, (args, done.stdout, done.stderr)
        if text is not None:
            assert done.stdout == text, args
    names = run(tree, "valias", "-n", "info@example.com")
    assert (names.returncode, names.stderr) == (255, b"Please enter domain name only.\n")
    assert snapshot(tree.root) == before
    assert run(tree, "valias", "--help").stdout.startswith(b"valias: usage: [options] email_address \n")


def test_valias_delivers_through_vdelivermail(any_tree: Tree) -> None:
    """An alias made by valias -i is delivered by the installed vdelivermail (MySQL, valias = yes);
    on CDB the .qmail-<alias> file holds exactly the line qmail-local runs."""
    tree = any_tree
    ok(run(tree, "vadduser", "bob@example.com", "pw"))
    maildir = tree.domain_dir("example.com") / "bob" / "Maildir"
    ok(run(tree, "valias", "-i", f"{maildir}/", "info@example.com"))
    if tree.kind == "cdb":
        assert (tree.domain_dir("example.com") / ".qmail-info").read_text() == f"{maildir}/\n"
        return
    done = tree.deliver("info@example.com", MESSAGE)
    assert (done.returncode, done.stdout) == (0, b"vdelivermail: valiases processed\n"), done.stderr
    [message] = list((maildir / "new").iterdir())
    assert message.read_bytes().endswith(MESSAGE)
    # vdelivermail names the Maildir's owner (vpopmail's maildir_to_email)
    assert b"Delivered-To: bob@example.com\n" in message.read_bytes()


def test_valias_cdb_dots_and_planted_links(tmp_path: Path) -> None:
    """A dot in the alias is ':' in the file name (qmail's rule); the alias name 'default' is refused;
    a link planted as .qmail-<alias> is never followed (refused, its target untouched)."""
    with Tree() as tree:
        tree.add_domain("example.com")
        ok(run(tree, "valias", "-i", "bob@example.com", "first.last@example.com"))
        assert (tree.domain_dir("example.com") / ".qmail-first:last").read_text() == "bob@example.com\n"
        assert ok(run(tree, "valias", "example.com")) == b"first.last@example.com -> bob@example.com\n"
        refused = run(tree, "valias", "-i", "bob@example.com", "default@example.com")
        assert refused.returncode == 255
        target = tree.root / "target"
        target.write_text("root's file\n")
        (tree.domain_dir("example.com") / ".qmail-evil").symlink_to(target)
        planted = run(tree, "valias", "-i", "bob@example.com", "evil@example.com")
        assert planted.returncode == 111, planted.stdout
        assert target.read_text() == "root's file\n"


# ------------------------------------------------------------------ vipmap


def test_vipmap_login_through_a_mapped_ip(two_stores: Tree) -> None:
    tree = two_stores
    tree.write_settings(ip_alias_domains=True)
    ok(run(tree, "vadduser", "bob@example.com", "pw"))
    assert not login(tree, "bob", "pw")
    assert ok(run(tree, "vipmap", "-a", "192.0.2.1", "example.com")) == b""
    ok(run(tree, "vipmap", "-a", "192.0.2.50", "other.test"))
    assert ok(run(tree, "vipmap", "-p")) == b"192.0.2.1 example.com\n192.0.2.50 other.test\n"
    assert ok(run(tree, "vipmap", "-p")) == b"192.0.2.1 example.com\n192.0.2.50 other.test\n"
    if tree.kind == "cdb":
        path = tree.etc / "ip_alias_map"
        assert path.read_text() == "192.0.2.1 example.com\n192.0.2.50 other.test\n"
    else:
        assert mysql_rows(tree.db, "SELECT ip_addr, domain FROM ip_alias_map ORDER BY ip_addr") == \
            [("192.0.2.1", "example.com"), ("192.0.2.50", "other.test")]
    assert login(tree, "bob", "pw")  # TCPLOCALIP 192.0.2.1 -> example.com
    # the same IP mapped again: one domain per IP (the new one)
    ok(run(tree, "vipmap", "-a", "192.0.2.1", "other.test"))
    assert ok(run(tree, "vipmap", "-p")) == b"192.0.2.1 other.test\n192.0.2.50 other.test\n"
    assert not login(tree, "bob", "pw")
    ok(run(tree, "vipmap", "-a", "192.0.2.1", "example.com"))
    ok(run(tree, "vipmap", "-d", "192.0.2.1", "example.com"))
    assert ok(run(tree, "vipmap", "-p")) == b"192.0.2.50 other.test\n"
    assert not login(tree, "bob", "pw")
    before = snapshot(tree.root)
    for args, code in ((("-a", "192.0.2.300", "example.com"), 255), (("-a", "nonsense", "example.com"), 255),
                       (("-a", "192.0.2.7", "nowhere.test"), 245), (("-a", "192.0.2.7"), 2),
                       (("-d", "192.0.2.1", "example.com"), 255), ((), 2), (("-z",), 2)):
        done = run(tree, "vipmap", *args)
        assert done.returncode == code, (args, done.stdout, done.stderr)
    assert run(tree, "vipmap", "-a", "192.0.2.300", "example.com").stdout == \
        b"Error: invalid IP address 192.0.2.300\n"
    assert snapshot(tree.root) == before


LONG_V6 = "2001:db8:1234:5678::25"  # 22 characters: more than vpopmail's char(18)


def test_vipmap_ipv6(two_stores: Tree) -> None:
    """IPv6 addresses map and log in (TCPLOCALIP); an IPv4-mapped one is its IPv4 address, as
    vchkpw looks it up.  On MySQL the table comes from vpopmail's schema (ip_addr char(18)): a
    longer address is refused with the ALTER TABLE that widens it, and nothing changes; after it,
    the address maps."""
    tree = two_stores
    tree.write_settings(ip_alias_domains=True)
    ok(run(tree, "vadduser", "bob@example.com", "pw"))
    ok(run(tree, "vipmap", "-a", "2001:db8::25", "example.com"))
    ok(run(tree, "vipmap", "-a", "::ffff:192.0.2.7", "other.test"))
    assert ok(run(tree, "vipmap", "-p")).split(b"\n")[:2] in (
        [b"192.0.2.7 other.test", b"2001:db8::25 example.com"],
        [b"2001:db8::25 example.com", b"192.0.2.7 other.test"])
    assert login(tree, "bob", "pw", TCPLOCALIP="2001:db8::25")
    assert not login(tree, "bob", "pw", TCPLOCALIP="2001:db8::26")
    if tree.kind == "mysql":
        before = snapshot(tree.root), mysql_rows(tree.db, "SELECT * FROM ip_alias_map ORDER BY ip_addr")
        done = run(tree, "vipmap", "-a", LONG_V6, "example.com")
        assert (done.returncode, done.stdout) == (255, (
            f"Error: {LONG_V6} does not fit ip_alias_map.ip_addr, which is char(18); widen it first: "
            "ALTER TABLE ip_alias_map MODIFY ip_addr char(45) NOT NULL\n").encode())
        assert (snapshot(tree.root), mysql_rows(tree.db, "SELECT * FROM ip_alias_map ORDER BY ip_addr")) == \
            before
        mysql_rows(tree.db, "ALTER TABLE ip_alias_map MODIFY ip_addr char(45) NOT NULL")
    ok(run(tree, "vipmap", "-a", LONG_V6, "example.com"))
    assert f"{LONG_V6} example.com".encode() in ok(run(tree, "vipmap", "-p")).split(b"\n")
    assert login(tree, "bob", "pw", TCPLOCALIP=LONG_V6)
    ok(run(tree, "vipmap", "-d", LONG_V6, "example.com"))
    assert not login(tree, "bob", "pw", TCPLOCALIP=LONG_V6)
    too_long = run(tree, "vipmap", "-a", "0000:0000:0000:0000:0000:0000:0000:0000:1", "example.com")
    assert (too_long.returncode, too_long.stdout[:25]) == (255, b"Error: invalid IP address")


def test_vipmap_makes_a_wide_table(mysql_tree: Tree) -> None:
    """Without an ip_alias_map table vipmap makes one whose ip_addr takes IPv6 (char(45))."""
    tree = mysql_tree
    mysql_rows(tree.db, "DROP TABLE ip_alias_map")
    ok(run(tree, "vipmap", "-a", LONG_V6, "example.com"))
    assert mysql_rows(tree.db, "SELECT ip_addr, domain FROM ip_alias_map") == [(LONG_V6, "example.com")]
    width = mysql_rows(tree.db, "SELECT CHARACTER_MAXIMUM_LENGTH FROM information_schema.COLUMNS WHERE "
                       "TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'ip_alias_map' "
                       "AND COLUMN_NAME = 'ip_addr'")
    assert width == [(45,)]


# ------------------------------------------------------------------ vmoddomlimits

PERMS = (("pop account", "ALLOW_CREATE DENY_MODIFY  DENY_DELETE  "),
         ("alias", "DENY_CREATE  DENY_MODIFY  DENY_DELETE  "),
         ("forward", ""), ("autoresponder", ""), ("mailinglist", ""),
         ("mailinglist users", "DENY_CREATE  ALLOW_MODIFY ALLOW_DELETE "),
         ("mailinglist moderators", ""), ("quota", ""), ("default quota", ""))
SHOW_POP = ("Domain: example.com\n--\nMax Pop Accounts: 10\nMax Aliases: -1\nMax Forwards: -1\n"
            "Max Autoresponders: -1\nMax Mailinglists: -1\nGID Flags:\n  NO_POP\n  NO_RELAY\n"
            "Flags (for commandline): pr\nFlags for non postmaster accounts:\n"
            + "".join(f"  {(label + ':').ljust(24)}{perm or 'ALLOW_CREATE ALLOW_MODIFY ALLOW_DELETE '}\n"
                      for label, perm in PERMS)
            + "Domain Quota: 100 MB\nDefault User Quota: 10485760 bytes\nMax Domain Messages: 0\n"
            "Default Max Messages per User: 0\n")


@pytest.fixture(params=["cdb", "mysql-file", "mysql-table"])
def limits_tree(request: pytest.FixtureRequest) -> Iterator[Tree]:
    if request.param == "cdb":
        with Tree() as t:
            t.add_domain("example.com")
            t.kind = "cdb"
            yield t
        return
    db = request.getfixturevalue("mysql_db")
    load_schema(db)
    with Tree(store="mysql", mysql_limits=request.param == "mysql-table") as t:
        credentials(t, db)
        t.add_domain("example.com")
        t.kind = request.param
        t.db = db
        yield t


def test_vmoddomlimits_disables_pop_for_vchkpw(limits_tree: Tree) -> None:
    tree = limits_tree
    ok(run(tree, "vadduser", "bob@example.com", "pw"))
    assert login(tree, "bob@example.com", "pw")
    assert ok(run(tree, "vmoddomlimits", "-g", "pr", "-P", "10", "-Q", "100", "-q", "10M", "-p", "md",
                  "-a", "a", "-u", "c", "example.com")) == b""
    assert ok(run(tree, "vmoddomlimits", "-S", "example.com")).decode() == SHOW_POP
    tree.syslog_lines()
    assert not login(tree, "bob@example.com", "pw")
    assert tree.syslog_lines()[-1] == "vchkpw-pop3: pop access denied bob@example.com:192.0.2.10"
    assert login(tree, "bob@example.com", "pw", TCPLOCALPORT="143")  # IMAP stays open
    limits = tree.domain_dir("example.com") / ".qmailadmin-limits"
    if tree.kind == "mysql-table":
        assert not limits.exists()
        [row] = mysql_rows(tree.db, "SELECT maxpopaccounts, diskquota, defaultquota, disable_pop, "
                           "disable_relay, disable_imap, perm_account, perm_alias, perm_maillist FROM limits "
                           "WHERE domain = 'example.com'")
        assert row == (10, 100, 10485760, 1, 1, 0, 6, 7, 8)
    else:
        assert limits.read_text() == (
            "maxpopaccounts: 10\nmaxaliases: -1\nmaxforwards: -1\nmaxautoresponders: -1\n"
            "maxmailinglists: -1\n"
            "quota: 100\nmaxmsgcount: 0\ndefault_quota: 10485760\ndefault_maxmsgcount: 0\n"
            "disable_pop\ndisable_external_relay\nperm_account: 6\nperm_alias: 7\nperm_forward: 0\n"
            "perm_autoresponder: 0\nperm_maillist: 8\nperm_quota: 0\nperm_defaultquota: 0\n")
        info = limits.stat()
        assert (info.st_uid, info.st_gid, info.st_mode & 0o7777) == (VPOPMAIL_UID, VPOPMAIL_GID, 0o600)
    # a change keeps the rest; -g replaces the flags
    ok(run(tree, "vmoddomlimits", "-g", "i", "example.com"))
    assert login(tree, "bob@example.com", "pw")
    assert not login(tree, "bob@example.com", "pw", TCPLOCALPORT="143")
    assert "Max Pop Accounts: 10\n" in ok(run(tree, "vmoddomlimits", "-S", "example.com")).decode()
    # vadduser takes the default user quota from them
    ok(run(tree, "vadduser", "carol@example.com", "pw"))
    assert ok(run(tree, "vuserinfo", "-q", "carol@example.com")) == b"10485760S\n"
    assert ok(run(tree, "vmoddomlimits", "-D", "example.com")) == b"Limits deleted\n"
    assert not limits.exists()
    assert login(tree, "bob@example.com", "pw", TCPLOCALPORT="143")
    if tree.kind == "mysql-table":
        assert mysql_rows(tree.db, "SELECT domain FROM limits") == []


def test_vmoddomlimits_default_file(limits_tree: Tree) -> None:
    tree = limits_tree
    ok(run(tree, "vmoddomlimits", "-d", "-g", "p", "-P", "5"))
    path = tree.etc / "vlimits.default"
    assert path.read_text().startswith("maxpopaccounts: 5\nmaxaliases: -1\n")
    assert "\ndisable_pop\n" in path.read_text()
    shown = ok(run(tree, "vmoddomlimits", "-d", "-S")).decode()
    assert shown.startswith(f"Default limits: {tree.etc}/vlimits.default\n--\nMax Pop Accounts: 5\n")
    ok(run(tree, "vadduser", "bob@example.com", "pw"))
    assert not login(tree, "bob@example.com", "pw")  # the domain has no limits of its own
    refused = run(tree, "vmoddomlimits", "-d", "-D")
    assert refused.returncode == 255 and refused.stdout.startswith(b"Default limits must not be deleted.")


def test_vmoddomlimits_refusals_change_nothing(limits_tree: Tree) -> None:
    tree = limits_tree
    ok(run(tree, "vmoddomlimits", "-P", "3", "example.com"))
    before = snapshot(tree.root)
    for args, code, text in (
            (("-P", "3", "nowhere.test"), 245, b"Error: Domain does not exist\n"),
            (("-P", "many", "example.com"), 255, b"Error: invalid number many\n"),
            (("-Q", "-5", "example.com"), 255, b"Error: invalid number -5\n"),
            (("-g", "pq", "example.com"), 255, None),
            (("-q", "lots", "example.com"), 255, None),
            (("-P", "3"), 2, None),
            (("-k", "example.com"), 2, None)):
        done = run(tree, "vmoddomlimits", *args)
        assert done.returncode == code, (args, done.stdout, done.stderr)
        if text is not None:
            assert done.stdout == text
    assert snapshot(tree.root) == before


# ------------------------------------------------------------------ vdeloldusers


def test_vdeloldusers_by_the_programs_clock(any_tree: Tree) -> None:
    """Users whose last auth (or creation, never logged in) is older than -a days by VPOP_CLOCK are
    listed (-V), deleted only with -D; postmaster is skipped; a recent login keeps a user."""
    tree = any_tree
    for user in ("postmaster", "bob", "carol"):
        ok(run(tree, "vadduser", f"{user}@example.com", "pw"))  # lastauth 0.0.0.0 at CLOCK
    tree.clock = CLOCK + 100 * DAY
    assert login(tree, "bob@example.com", "pw")
    later = CLOCK + 200 * DAY
    listed = run(tree, "vdeloldusers", "-V", "-a", "150", "-d", "example.com", clock=later)
    assert ok(listed) == (b"carol@example.com\nskipping postmaster@example.com\n"
                          b" ** no users were deleted  **\n ** use -D to delete users **\n")
    assert ok(run(tree, "vuserinfo", "-n", "carol@example.com")) == b"carol\n"
    assert ok(run(tree, "vdeloldusers", "-a", "250", "-e", clock=later)) == b"no old users found\n"
    assert ok(run(tree, "vdeloldusers", "-D", "-a", "150", "-e", clock=later)) == b""
    gone = run(tree, "vuserinfo", "carol@example.com")
    assert (gone.returncode, gone.stdout) == (255, b"no such user carol@example.com\n")
    assert not (tree.domain_dir("example.com") / "carol").exists()
    assert login(tree, "bob@example.com", "pw")
    assert ok(run(tree, "vdeloldusers", "-a", "150", "-d", "example.com", clock=later)) == \
        b"no old users found\n"
    before = snapshot(tree.root)
    for args, code in ((("-a", "x", "-e"), 255), (("-a", "10"), 255), (("-d", "nowhere.test"), 245),
                       ((), 2), (("-q",), 2)):
        done = run(tree, "vdeloldusers", *args, clock=later)
        assert done.returncode == code, (args, done.stdout)
    assert snapshot(tree.root) == before


# ------------------------------------------------------------------ valias -i on MySQL: no race


@pytest.fixture
def mysql_tree(mysql_db: dict[str, Any]) -> Iterator[Tree]:
    load_schema(mysql_db)
    with Tree(store="mysql", valias=True) as tree:
        credentials(tree, mysql_db)
        tree.add_domain("example.com")
        tree.db = mysql_db
        yield tree


def valias_rows(tree: Tree) -> list[tuple[Any, ...]]:
    return mysql_rows(tree.db, "SELECT alias, domain, valias_line FROM valias ORDER BY valias_line")


def test_sixteen_concurrent_valias_inserts_of_one_line(mysql_tree: Tree) -> None:
    tree = mysql_tree
    env = tree.env()
    procs = [subprocess.Popen([program("valias"), "-i", "bob@example.org", "info@example.com"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(16)]
    results = [(proc.communicate(timeout=120), proc.returncode) for proc in procs]
    assert sorted(code for _, code in results) == [0] + [255] * 15, results
    assert {err for (_, err), code in results if code} == {
        b"Error: alias info@example.com -> bob@example.org already exists.\n"}
    assert valias_rows(tree) == [("info", "example.com", "bob@example.org")]


def test_valias_insert_waits_for_one_between_its_check_and_its_insert(mysql_tree: Tree) -> None:
    """A valias -i held (strace's SIGSTOP) right after it sent its duplicate check: a second one of
    the same line waits for it (vpopmail, and a check-then-insert, would add the line twice)."""
    import signal
    import time

    tree = mysql_tree
    env = tree.env()
    argv = [program("valias"), "-i", "bob@example.org", "info@example.com"]
    log = tree.root / "sends.log"
    subprocess.run(["strace", "-qq", "-o", str(log), "-s", "200", "-e", "trace=sendto", *argv], env=env,
                   check=True, capture_output=True, timeout=60)
    ok(run(tree, "valias", "-d", "info@example.com"))
    sends = log.read_text().splitlines()
    check = next(number for number, line in enumerate(sends, 1) if "FROM valias WHERE alias" in line)
    held, child = strace_held(argv, env, "sendto", check, log)
    second = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        time.sleep(1)
        assert second.poll() is None  # it waits on the first one's lock
    finally:
        os.kill(child, signal.SIGCONT)
    first_out = held.communicate(timeout=60)
    second_out = second.communicate(timeout=60)
    assert (held.returncode, second.returncode) == (0, 255), (first_out, second_out)
    assert second_out[1] == b"Error: alias info@example.com -> bob@example.org already exists.\n"
    assert valias_rows(tree) == [("info", "example.com", "bob@example.org")]
    # the same line in another case is another line (the column's collation would fold it)
    ok(run(tree, "valias", "-i", "Bob@example.org", "info@example.com"))
    assert len(valias_rows(tree)) == 2
