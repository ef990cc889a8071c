"""qmail-mysql-sync: the ``virtual``, ``alias`` and ``rcpthosts`` tables rendered for a stock qmail.

The installed command runs against the session's MariaDB; what it writes (control/rcpthosts,
morercpthosts(.cdb), control/virtualdomains, users/assign, users/cdb, .qmail files) is then read by
tests/qmailfiles.py -- an independent reading of qmail's formats -- and every address of the
configuration page and the FAQ (seeds/003, seeds/004) is routed the way qmail-send, qmail-lspawn (with
the installed qmail-getpw for what users/cdb does not know) and qmail-local would route it.
"""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from qmailfiles import (
    Cdb,
    Delivery,
    LspawnExit,
    control_lines,
    parse_assign,
    parse_getpw_output,
    parse_virtualdomains,
    route,
)
from qmysql import POPUSER_UID, USERS_GID, QmailMysqlTree, empty_tables, sqlserver_text
from tree import snapshot

ME = "mail.example.net"
PREFIX = "qmysql"  # the virtual_prefix default
BOUNCE = "Sorry, no mailbox here by that name. (#5.1.1)"

VIRTUAL = [  # the configuration page's virtual table, plus its "explicit beats catch-all" row
    ("dmp", "", "diane.p", "tterson.net"),
    ("iain", "", "iain.p", "tterson.net"),
    ("iain", "legacy", "geocities", "babasse.com"),
    ("iain", "@", "", "iain.cx"),
    ("hancocaj", "", "", "ncock.net"),
    ("hancocah", "", "miss.h", "ncock.net"),
]
ALIAS = [  # the configuration page's alias table and mailing list, and the FAQ's catch-all alias
    ("dmp", "", "dmp", "nigelj.force9.co.uk"),
    ("iain", "test", "/", "home/iain/test/"),
    ("iain", "", "|", "preline procmail"),
    ("njp", "spam", ".", "/Spam/"),
    ("alias", "bogus", "iain", ""),
    ("alias", "customers", "customer1", "company1.com"),
    ("alias", "customers", "customer2", "company2.com.hk"),
    ("alias", "customers", "customer3", "company3.co.uk"),
    ("alias", "customers", "customer4", "company4.fr"),
    ("iain", "@", ".", "/Maildir/"),
]
USERS = ("dmp", "iain", "njp", "hancocaj", "hancocah", "alias")
TABLE_HOSTS = ("tterson.net", "babasse.com", "iain.cx", "ncock.net")
SITE_ASSIGN = "=postmaster:postie:900:100:/var/postie:::\n+lists-:lists:901:100:/var/lists:-::\n.\n"
SITE_VIRTUALDOMAINS = "legacy.example.org:legacy\n"


@pytest.fixture
def site(qmail_db: dict[str, Any]) -> Iterator[QmailMysqlTree]:
    """The seed's tables, mailbox users 800:100 with homes, control/me, locals, a hand-kept rcpthosts,
    the site's own users/assign and virtualdomains lines."""
    empty_tables(qmail_db)
    with QmailMysqlTree(qmail_db) as t:
        t.homes = {}
        for user in USERS:
            t.homes[user] = t.home(f"home/mail/{user}", mode=0o755)
            t.mailbox(user, POPUSER_UID, USERS_GID, t.homes[user])
        for row in VIRTUAL:
            t.virtual(*row)
        for row in ALIAS:
            t.alias(*row)
        for host in TABLE_HOSTS:
            t.rcpthost(host)
        t.write_control("me", ME + "\n")
        t.write_control("locals", ME + "\nlocalhost\n")
        t.write_control("rcpthosts", ME + "\nlocalhost\n")
        t.write_control("virtualdomains", SITE_VIRTUALDOMAINS)
        (t.qmail_home / "users" / "assign").write_text(SITE_ASSIGN)
        yield t


def sync_ok(site: QmailMysqlTree, *args: str) -> subprocess.CompletedProcess[str]:
    done = site.sync(*args)
    assert done.returncode == 0, done
    return done


def getpw_for(site: QmailMysqlTree):
    """qmail-lspawn's run of qmail-getpw: the installed program; a non-zero exit is lspawn's exit."""

    def getpw(local: str) -> tuple[str, int, int, str, str, str]:
        done = site.getpw(local)
        if done.returncode != 0:
            raise LspawnExit(done.returncode, "qmail-getpw")
        return parse_getpw_output(done.stdout)

    return getpw


def where(site: QmailMysqlTree, address: str) -> Delivery:
    delivery = route(address, site.qmail_home, getpw_for(site))
    assert delivery is not None, f"{address} would be treated as remote"
    return delivery


def run_program(delivery: Delivery) -> subprocess.CompletedProcess[str]:
    """Run the single |program line of a delivery the way qmail-local does: sh -c, cwd = home."""
    (kind, command), = delivery.instructions
    assert kind == "program"
    return subprocess.run(["/bin/sh", "-c", command], cwd=delivery.home, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=10,
                          env={"PATH": "/usr/bin:/bin", "HOME": delivery.home, "USER": delivery.user})


def dot_qmail(site: QmailMysqlTree, user: str, name: str) -> Path:
    return Path(site.homes[user]) / name


# ------------------------------------------------------------------------------------------------
# Every scenario of the configuration page and the FAQ


def test_faq_routing(site: QmailMysqlTree) -> None:
    # iain-legacy's file is the site's own (not in the alias table): the sync must leave it alone.
    legacy = dot_qmail(site, "iain", ".qmail-legacy")
    legacy.write_text("./Legacy/\n")
    done = sync_ok(site)
    assert done.stderr == ""
    assert done.stdout.startswith("qmail-mysql-sync: ") and "file(s) written" in done.stdout

    # diane.p@tterson.net is delivered to dmp, whose alias row forwards it off-site.
    d = where(site, "diane.p@tterson.net")
    assert (d.source, d.local, d.user, d.uid, d.gid, d.home, d.dash, d.ext) == (
        "users/cdb", f"{PREFIX}-tterson.net-diane.p", "dmp", 800, 100, site.homes["dmp"], "", "")
    assert (d.dot_qmail, d.instructions) == (".qmail", [("forward", "dmp@nigelj.force9.co.uk")])

    # iain.p@tterson.net is delivered to iain: ~iain/.qmail pipes it through preline.
    d = where(site, "iain.p@tterson.net")
    assert (d.user, d.home, d.dash, d.ext, d.dot_qmail) == ("iain", site.homes["iain"], "", "", ".qmail")
    assert d.instructions == [("program", "preline procmail")]

    # geocities@babasse.com is delivered to iain-legacy.
    d = where(site, "geocities@babasse.com")
    assert (d.user, d.dash, d.ext, d.dot_qmail) == ("iain", "-", "legacy", ".qmail-legacy")
    assert d.instructions == [("maildir", "./Legacy/")]
    assert legacy.read_text() == "./Legacy/\n"

    # xxx@iain.cx is delivered to iain-xxx for all values of xxx (ext '@'), local part's case kept.
    for local in ("xxx", "Some.One", "a-b-c"):
        d = where(site, f"{local}@iain.cx")
        assert (d.source, d.user, d.dash, d.ext) == ("users/cdb", "iain", "-", local)
        assert (d.dot_qmail, d.instructions) == (".qmail-default", [("maildir", "./Maildir/")])
    d = where(site, "test@iain.cx")  # iain-test has its own alias row
    assert (d.ext, d.dot_qmail, d.instructions) == ("test", ".qmail-test", [("maildir", "/home/iain/test/")])

    # Explicit beats catch-all: miss.h@ncock.net is hancocah's (default delivery: no .qmail).
    for address in ("miss.h@ncock.net", "Miss.H@NCOCK.net"):
        d = where(site, address)
        assert (d.user, d.home, d.dash, d.ext, d.dot_qmail) == (
            "hancocah", site.homes["hancocah"], "", "", None)
        assert d.default_delivery

    # Everything else @ncock.net goes to hancocaj (through the alias user's catch-all file).
    for local in ("xxx", "anything-else", "HANCOCAH"):
        d = where(site, f"{local}@ncock.net")
        assert (d.user, d.home, d.dash) == ("alias", site.homes["alias"], "-")
        assert d.dot_qmail == f".qmail-{PREFIX}-ncock:net-default"
        assert d.instructions == [("forward", f"hancocaj@{ME}")]
    d = where(site, f"hancocaj@{ME}")  # where the forward lands: qmail-getpw finds hancocaj
    assert (d.source, d.user, d.home, d.dash, d.ext, d.default_delivery) == (
        "qmail-getpw", "hancocaj", site.homes["hancocaj"], "", "", True)

    # No catch-all for tterson.net: bogus.p@tterson.net bounces (the program exits 100 with qmail's text).
    d = where(site, "bogus.p@tterson.net")
    assert (d.user, d.dot_qmail) == ("alias", f".qmail-{PREFIX}-tterson:net-default")
    bounced = run_program(d)
    assert (bounced.returncode, bounced.stdout.strip()) == (100, BOUNCE)
    d = where(site, "anything@babasse.com")
    assert (d.user, d.dot_qmail) == ("alias", f".qmail-{PREFIX}-babasse:com-default")
    assert run_program(d).returncode == 100

    # Local (control/locals) addresses and the alias table.
    d = where(site, f"bogus@{ME}")  # no such user: alias's .qmail-bogus sends it to iain
    assert (d.source, d.user, d.dash, d.ext, d.dot_qmail) == (
        "qmail-getpw", "alias", "-", "bogus", ".qmail-bogus")
    assert d.instructions == [("forward", "iain")]
    d = where(site, f"customers@{ME}")
    assert d.dot_qmail == ".qmail-customers"
    assert d.instructions == [("forward", "customer1@company1.com"), ("forward", "customer2@company2.com.hk"),
                              ("forward", "customer3@company3.co.uk"), ("forward", "customer4@company4.fr")]
    d = where(site, f"njp-spam@{ME}")
    assert (d.user, d.ext, d.dot_qmail, d.instructions) == (
        "njp", "spam", ".qmail-spam", [("maildir", "./Spam/")])
    d = where(site, f"iain-test@{ME}")
    assert (d.user, d.dot_qmail, d.instructions) == ("iain", ".qmail-test", [("maildir", "/home/iain/test/")])
    d = where(site, f"dmp@{ME}")
    assert d.instructions == [("forward", "dmp@nigelj.force9.co.uk")]

    # The site's own users/assign and virtualdomains lines still work.
    d = where(site, f"postmaster@{ME}")
    assert (d.source, d.user, d.uid, d.home, d.dash, d.ext) == (
        "users/cdb", "postie", 900, "/var/postie", "", "")
    d = where(site, f"lists-Announce@{ME}")
    assert (d.source, d.user, d.uid, d.dash, d.ext) == ("users/cdb", "lists", 901, "-", "Announce")
    d = where(site, "x@legacy.example.org")
    assert (d.local, d.source, d.user, d.ext) == ("legacy-x", "qmail-getpw", "alias", "legacy-x")


def test_files_written(site: QmailMysqlTree) -> None:
    sync_ok(site)
    h = site.homes
    expected = {
        f"{h['dmp']}/.qmail": "dmp@nigelj.force9.co.uk\n",
        f"{h['iain']}/.qmail-test": "/home/iain/test/\n",
        f"{h['iain']}/.qmail": "|preline procmail\n",
        f"{h['iain']}/.qmail-default": "./Maildir/\n",
        f"{h['njp']}/.qmail-spam": "./Spam/\n",
        f"{h['alias']}/.qmail-bogus": "iain\n",
        f"{h['alias']}/.qmail-customers": "customer1@company1.com\ncustomer2@company2.com.hk\n"
                                          "customer3@company3.co.uk\ncustomer4@company4.fr\n",
        f"{h['alias']}/.qmail-{PREFIX}-ncock:net-default": f"&hancocaj@{ME}\n",
        f"{h['alias']}/.qmail-{PREFIX}-tterson:net-default":
            '|echo "Sorry, no mailbox here by that name. (#5.1.1)"; exit 100\n',
        f"{h['alias']}/.qmail-{PREFIX}-babasse:com-default":
            '|echo "Sorry, no mailbox here by that name. (#5.1.1)"; exit 100\n',
    }
    found = {str(p): p.read_text() for user in USERS for p in Path(h[user]).glob(".qmail*")}
    assert found == expected
    for path in expected:
        st = os.stat(path)
        # qmail-local refuses a group- or world-writable .qmail (conf-patrn); the owner is the user.
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (800, 100, 0o644), path

    control = site.qmail_home / "control"
    assert parse_virtualdomains((control / "virtualdomains").read_text()) == {
        "legacy.example.org": "legacy",
        **{host: f"{PREFIX}-{host}" for host in TABLE_HOSTS},
    }
    assert (control / "virtualdomains").read_text().startswith(SITE_VIRTUALDOMAINS)
    assert control_lines(control / "rcpthosts") == sorted([*TABLE_HOSTS, ME, "localhost"])
    assert control_lines(control / "rcpthosts.manual") == [ME, "localhost"]
    assert not (control / "morercpthosts").exists()


def test_users_assign_and_cdb(site: QmailMysqlTree) -> None:
    sync_ok(site)
    users = site.qmail_home / "users"
    text = (users / "assign").read_text()
    assert text.startswith(SITE_ASSIGN[:-2])  # the site's lines first, kept as they were
    assignments = parse_assign(text)
    i, a, j, k = (site.homes[u] for u in ("iain", "alias", "hancocah", "dmp"))
    ours = {key: value for key, value in assignments.items() if key[1].startswith(PREFIX + "-")}
    got = {(kind, local): (e.user, e.uid, e.gid, e.home, e.dash, e.ext) for (kind, local), e in ours.items()}
    assert got == {
        ("=", f"{PREFIX}-tterson.net-diane.p"): ("dmp", 800, 100, k, "", ""),
        ("=", f"{PREFIX}-tterson.net-iain.p"): ("iain", 800, 100, i, "", ""),
        ("+", f"{PREFIX}-tterson.net-"): ("alias", 800, 100, a, "-", f"{PREFIX}-tterson.net-"),
        ("=", f"{PREFIX}-babasse.com-geocities"): ("iain", 800, 100, i, "-", "legacy"),
        ("+", f"{PREFIX}-babasse.com-"): ("alias", 800, 100, a, "-", f"{PREFIX}-babasse.com-"),
        ("+", f"{PREFIX}-iain.cx-"): ("iain", 800, 100, i, "-", ""),
        ("=", f"{PREFIX}-ncock.net-miss.h"): ("hancocah", 800, 100, j, "", ""),
        ("+", f"{PREFIX}-ncock.net-"): ("alias", 800, 100, a, "-", f"{PREFIX}-ncock.net-"),
    }
    # users/cdb holds exactly what qmail-newu makes of users/assign (read with our own cdb reader).
    cdb = Cdb.open(users / "cdb")
    records = cdb.items()
    wanted = [(e.cdb_key(), e.cdb_data()) for e in assignments.values()]
    assert sorted(r for r in records if r[0] != b"") == sorted(wanted)
    assert len(records) == len(wanted) + 1
    assert set(cdb.get(b"") or b"") == {ord("-")}  # the wildchars record: the last char of each + key
    for key, data in wanted:
        assert cdb.get_all(key) == [data]


def test_rcpthosts_over_the_limit(site: QmailMysqlTree) -> None:
    hosts = [f"host{n:03d}.example" for n in range(60)]
    for host in hosts:
        site.rcpthost(host.upper() if host.endswith("7.example") else host)
    sync_ok(site)
    control = site.qmail_home / "control"
    everything = sorted([*hosts, *TABLE_HOSTS, ME, "localhost"])
    first = control_lines(control / "rcpthosts")
    more = control_lines(control / "morercpthosts")
    assert first is not None and more is not None
    assert len(first) == 50 and sorted(first + more) == everything and not set(first) & set(more)
    cdb = Cdb.open(control / "morercpthosts.cdb")
    assert sorted(cdb.items()) == sorted((host.encode(), b"") for host in more)
    st = os.stat(control / "morercpthosts.cdb")
    assert stat.S_IMODE(st.st_mode) == 0o644
    # Back under the limit: morercpthosts empties, and its cdb with it.
    site.sql("DELETE FROM rcpthosts WHERE host LIKE 'host%%'")
    sync_ok(site)
    assert control_lines(control / "rcpthosts") == sorted([*TABLE_HOSTS, ME, "localhost"])
    assert control_lines(control / "morercpthosts") == []
    assert Cdb.open(control / "morercpthosts.cdb").items() == []


def test_manual_rcpthosts_are_merged(site: QmailMysqlTree) -> None:
    control = site.qmail_home / "control"
    (control / "rcpthosts.manual").write_text("# kept by hand\nhand.example\nNCOCK.NET\n")
    sync_ok(site)
    assert control_lines(control / "rcpthosts") == sorted([*TABLE_HOSTS, "hand.example"])
    (control / "rcpthosts.manual").write_text("hand.example\nother.example\n")
    sync_ok(site)
    assert control_lines(control / "rcpthosts") == sorted([*TABLE_HOSTS, "hand.example", "other.example"])


# ------------------------------------------------------------------------------------------------
# Misconfigured rows: reported with table and key, never written


def test_misconfigured_rows_are_reported_and_skipped(site: QmailMysqlTree) -> None:
    site.virtual("", "", "x", "blank-user.example")
    site.virtual("ghost", "", "g", "ghost.example")
    site.alias("", "orphan", "x", "y.example")
    site.alias("iain", "empty", "", "")  # the FAQ's "empty dot-qmail file" row
    site.alias("iain", "dot", ".", "")  # a '.' with nothing after it
    site.alias("ghost", "list", "a", "b.example")
    done = sync_ok(site)
    problems = done.stderr.splitlines()
    assert all(line.startswith("qmail-mysql-sync: ") for line in problems), problems
    expected = [
        ("virtual", "x@blank-user.example", "blank username"),
        ("virtual", "g@ghost.example", "ghost"),
        ("alias", "/orphan", "blank username"),
        ("alias", "iain/empty", "no delivery"),
        ("alias", "iain/dot", "no delivery"),
        ("alias", "ghost/list", "ghost"),
    ]
    for table, key, why in expected:
        hits = [line for line in problems if f"{table} " in line and key in line and why in line]
        assert hits, (key, problems)
    assert len(problems) == len(expected), problems
    vd = parse_virtualdomains((site.qmail_home / "control" / "virtualdomains").read_text())
    assert "blank-user.example" not in vd and "ghost.example" not in vd
    assert "blank-user" not in (site.qmail_home / "users" / "assign").read_text()
    assert not dot_qmail(site, "iain", ".qmail-empty").exists()
    assert not dot_qmail(site, "iain", ".qmail-dot").exists()
    assert not list(site.root.rglob(".qmail-orphan")) and not list(site.root.rglob(".qmail-list"))
    # The good rows were written all the same.
    assert where(site, "iain.p@tterson.net").user == "iain"


def test_rows_cannot_forge_assign_lines_or_program_lines(site: QmailMysqlTree) -> None:
    # Text from the tables must not add users/assign fields or lines, nor .qmail lines.
    site.virtual("iain", "x:\n=postmaster:iain:800:100:/tmp:::", "forged", "forge.example")
    site.virtual("iain", "y\n|touch /tmp/pwned", "", "forge2.example")
    site.alias("iain", "cr", "someone", "example.org\r|touch /tmp/pwned")
    site.alias("iain", "nl", "|", "true\n|touch /tmp/pwned")
    done = sync_ok(site)
    problems = done.stderr.splitlines()
    for key in ("forged@forge.example", "@forge2.example", "iain/cr", "iain/nl"):
        assert [line for line in problems if key in line], (key, problems)
    assign = (site.qmail_home / "users" / "assign").read_text()
    assert "=postmaster:iain" not in assign and "forge" not in assign
    written = [p.read_text() for p in site.root.rglob(".qmail*") if p.is_file()]
    assert not any("pwned" in text for text in written)
    assert where(site, "iain.p@tterson.net").user == "iain"  # the good rows still are


def test_usernames_are_not_matched_through_the_collation(site: QmailMysqlTree) -> None:
    """utf8mb4_general_ci takes ïain and IÄIN for iain: their rows must not write into iain's home nor
    route to iain (users/assign)."""
    site.alias("\u00efain", "folded", "someone", "example.org")
    site.alias("I\u00c4IN", "upper", "someone", "example.org")
    site.virtual("\u00efain", "", "folded", "folded.example")
    done = sync_ok(site)
    problems = done.stderr.splitlines()
    for key in ("alias \u00efain/folded", "alias I\u00c4IN/upper", "virtual folded@folded.example"):
        hits = [line for line in problems if key in line and "neither in mailbox nor in passwd" in line]
        assert hits, (key, problems)
    assert not dot_qmail(site, "iain", ".qmail-folded").exists()
    assert not dot_qmail(site, "iain", ".qmail-upper").exists()
    assert "folded" not in (site.qmail_home / "users" / "assign").read_text()
    assert where(site, "iain.p@tterson.net").user == "iain"  # the row spelt right still is


def test_bad_row_in_a_list_leaves_the_rest(site: QmailMysqlTree) -> None:
    site.alias("alias", "customers", "", "")
    done = sync_ok(site)
    assert "alias alias/customers" in done.stderr
    assert len(where(site, f"customers@{ME}").instructions) == 4


# ------------------------------------------------------------------------------------------------
# --dry-run, idempotence, removal


def test_dry_run_writes_nothing(site: QmailMysqlTree) -> None:
    before = snapshot(site.root)
    done = sync_ok(site, "--dry-run")
    assert snapshot(site.root) == before
    out = done.stdout
    h = site.homes
    for path in (site.qmail_home / "control/virtualdomains", site.qmail_home / "users/assign",
                 site.qmail_home / "control/rcpthosts.manual", f"{h['dmp']}/.qmail",
                 f"{h['alias']}/.qmail-customers", f"{h['alias']}/.qmail-{PREFIX}-ncock:net-default"):
        assert f"would write {path}\n" in out, path
    assert f"+={PREFIX}-tterson.net-diane.p:dmp:800:100:{h['dmp']}:::\n" in out  # a unified diff
    assert f"+{SITE_VIRTUALDOMAINS}" not in out  # unchanged lines are context, not additions
    assert "file(s) written" not in out
    # After a real run, a dry run after a change shows the change and only it.
    sync_ok(site)
    site.sql("DELETE FROM alias WHERE username = 'njp'")
    before = snapshot(site.root)
    done = sync_ok(site, "-n")
    assert snapshot(site.root) == before
    assert f"would remove {h['njp']}/.qmail-spam\n" in done.stdout
    assert "would write" in done.stdout  # the list of files it manages
    assert dot_qmail(site, "njp", ".qmail-spam").exists()


def test_second_run_changes_nothing(site: QmailMysqlTree) -> None:
    sync_ok(site)
    before = snapshot(site.root)
    done = sync_ok(site)
    assert done.stdout == "qmail-mysql-sync: nothing to change\n"
    assert snapshot(site.root) == before
    done = sync_ok(site, "--dry-run")
    assert done.stdout == "qmail-mysql-sync: nothing to change\n"


def test_removed_rows_remove_their_files(site: QmailMysqlTree) -> None:
    sync_ok(site)
    spam = dot_qmail(site, "njp", ".qmail-spam")
    ncock = dot_qmail(site, "alias", f".qmail-{PREFIX}-ncock:net-default")
    assert spam.exists() and ncock.exists()
    site.sql("DELETE FROM alias WHERE username = 'njp' AND alias = 'spam'")
    site.sql("DELETE FROM virtual WHERE virtual_host = 'ncock.net'")
    site.sql("DELETE FROM alias WHERE alias = 'customers' AND alias_username = 'customer2'")
    sync_ok(site)
    assert not spam.exists() and not ncock.exists()
    assert dot_qmail(site, "alias", ".qmail-customers").read_text().count("\n") == 3
    assert "ncock.net" not in parse_virtualdomains((site.qmail_home / "control/virtualdomains").read_text())
    assert "ncock" not in (site.qmail_home / "users/assign").read_text()
    assert route("miss.h@ncock.net", site.qmail_home, getpw_for(site)) is None  # no longer ours: remote
    # A file the site wrote itself is never removed.
    own = dot_qmail(site, "njp", ".qmail-own")
    own.write_text("./Own/\n")
    sync_ok(site)
    assert own.exists()


def test_dead_database_changes_nothing(site: QmailMysqlTree, dead_mysql: dict[str, Any]) -> None:
    sync_ok(site)
    site.write_sqlserver(sqlserver_text(dead_mysql))
    before = snapshot(site.root)
    done = site.sync()
    assert done.returncode == 111 and done.stdout == ""
    assert "qmail-mysql-sync: " in done.stderr
    assert snapshot(site.root) == before


def test_usage(site: QmailMysqlTree) -> None:
    done = site.sync("--bogus")
    assert (done.returncode, done.stdout) == (2, "")
    assert "usage: qmail-mysql-sync [--dry-run]" in done.stderr


# ------------------------------------------------------------------------------------------------
# Names: dots, case, '@' on explicit rows; homes that cannot take a file


def test_alias_names_as_qmail_local_spells_them(site: QmailMysqlTree) -> None:
    site.alias("alias", "john.doe", "john", "elsewhere.example")
    site.alias("alias", "Sales", "boss", "")
    site.alias("IAIN", "Work", ".", "/Work/")
    site.virtual("iain", "@", "geo", "explicit.example")
    sync_ok(site)
    d = where(site, f"John.Doe@{ME}")
    assert (d.ext, d.dot_qmail, d.instructions) == ("John.Doe", ".qmail-john:doe",
                                                    [("forward", "john@elsewhere.example")])
    assert where(site, f"SALES@{ME}").dot_qmail == ".qmail-sales"
    d = where(site, f"iain-work@{ME}")
    assert (d.user, d.dot_qmail, d.instructions) == ("iain", ".qmail-work", [("maildir", "./Work/")])
    d = where(site, "geo@explicit.example")  # '@' on an explicit row: username-virtual_username
    assert (d.source, d.user, d.dash, d.ext) == ("users/cdb", "iain", "-", "geo")
    assert where(site, "other@explicit.example").user == "alias"  # and no catch-all there: bounce
    assert run_program(where(site, "other@explicit.example")).returncode == 100


def test_home_that_cannot_take_a_file(site: QmailMysqlTree) -> None:
    gone = str(site.root / "home/mail/gone")
    site.mailbox("gone", POPUSER_UID, USERS_GID, gone)
    site.alias("gone", "x", "someone", "example.org")
    site.alias("gone", "", "someone", "example.org")
    # A row whose home belongs to root: root must not write there on the row's word.
    site.mailbox("rooted", POPUSER_UID, USERS_GID, site.home("home/mail/rooted", uid=0, gid=0))
    site.alias("rooted", "", "someone", "example.org")
    done = site.sync()
    assert done.returncode == 0, done
    problems = done.stderr.splitlines()
    assert len([line for line in problems if "alias gone/" in line and gone in line]) == 2, problems
    assert len([line for line in problems if "alias rooted/" in line and "not owned" in line]) == 1, problems
    assert not os.path.exists(gone)
    assert os.listdir(site.root / "home/mail/rooted") == []
    # Everything else was written, and the run is complete: a second run has nothing more to do.
    assert where(site, "diane.p@tterson.net").instructions == [("forward", "dmp@nigelj.force9.co.uk")]
    done = site.sync()
    assert done.stdout == "qmail-mysql-sync: nothing to change\n", done


def test_home_that_is_a_link_is_not_written_through(site: QmailMysqlTree) -> None:
    """Root writes .qmail files through the home's descriptor: a home that is a link (uid 89 can
    swap one in a directory it owns) is refused, whatever the link points at."""
    target = site.home("elsewhere/target", uid=POPUSER_UID, gid=USERS_GID)
    linked = site.root / "home/mail/linked"
    linked.symlink_to(target)
    site.mailbox("linked", POPUSER_UID, USERS_GID, str(linked))
    site.alias("linked", "x", "someone", "example.org")
    done = site.sync()
    assert done.returncode == 0, done
    assert [line for line in done.stderr.splitlines() if "alias linked/" in line and "not owned" in line], \
        done.stderr
    assert os.listdir(target) == []


def test_dry_run_without_users_directory(site: QmailMysqlTree) -> None:
    users = site.qmail_home / "users"
    (users / "assign").unlink()
    users.rmdir()
    done = sync_ok(site, "--dry-run")
    assert "would write" in done.stdout
    assert not users.exists()
    sync_ok(site)
    assert parse_assign((users / "assign").read_text())
    assert Cdb.open(users / "cdb").get(b"!" + f"{PREFIX}-tterson.net-diane.p".encode() + b"\0")


def test_alias_user_home_not_usable(site: QmailMysqlTree) -> None:
    os.chown(site.homes["alias"], 0, 0)
    done = sync_ok(site)
    for host in ("babasse.com", "ncock.net", "tterson.net"):
        assert [line for line in done.stderr.splitlines() if f"virtual {host}:" in line and "'alias'" in line]
    assert os.listdir(site.homes["alias"]) == []
    # The explicit rows and the '@' catch-all do not need the alias user.
    assert where(site, "miss.h@ncock.net").user == "hancocah"
    assert where(site, "x@iain.cx").ext == "x"


def test_host_the_site_already_routes(site: QmailMysqlTree) -> None:
    control = site.qmail_home / "control"
    (control / "virtualdomains").write_text(SITE_VIRTUALDOMAINS + "iain.cx:iainsown\n")
    done = sync_ok(site)
    assert [line for line in done.stderr.splitlines() if "iain.cx" in line and "left alone" in line]
    vd = parse_virtualdomains((control / "virtualdomains").read_text())
    assert vd["iain.cx"] == "iainsown" and vd["ncock.net"] == f"{PREFIX}-ncock.net"
    assert where(site, "x@iain.cx").local == "iainsown-x"


# ------------------------------------------------------------------------------------------------
# tests/qmailfiles.py against the examples of qmail's own documentation (qmail-delivery.md)


def test_qmailfiles_follows_qmail_documentation(tmp_path: Path) -> None:
    from cdblib import Writer
    from qmailfiles import dot_qmail_candidates, lspawn_lookup, rewrite

    assign = parse_assign("=joe:joe:507:100:/home/joe:::\n+joe-:joe:507:100:/home/joe:-::\n"
                          "+:alias:7790:2108:/var/qmail/alias:-::\n=joe:first:1:1:/x:::\n.\n")
    assert assign[("=", "joe")].user == "joe"  # the first line of a key wins
    with open(tmp_path / "cdb", "wb") as handle:
        writer = Writer(handle)
        for entry in assign.values():
            writer.put(entry.cdb_key(), entry.cdb_data())
        writer.put(b"", b"-")
        writer.finalize()
    cdb = Cdb.open(tmp_path / "cdb")
    # qmail-users.9: joe-direct -> user joe, dash '-', ext 'direct'.
    assert lspawn_lookup(cdb, "joe-Direct") == ("joe", 507, 100, "/home/joe", "-", "Direct")
    assert lspawn_lookup(cdb, "JOE") == ("joe", 507, 100, "/home/joe", "", "")
    assert lspawn_lookup(cdb, "fred") == ("alias", 7790, 2108, "/var/qmail/alias", "-", "fred")
    with pytest.raises(ValueError):
        parse_assign("=joe:joe:507:100:/home/joe:::\n")  # no final '.'
    with pytest.raises(ValueError):
        parse_assign("=joe:joe:507:100:/home/joe::\n.\n")  # six colons
    vd = parse_virtualdomains("example.com:example.com\n.sub.example.org:sub\nfree@example.net:free\n"
                              "example.net:\n")
    assert rewrite("Bob@Example.COM", [], vd) == "example.com-Bob"
    assert rewrite("u@a.sub.example.org", [], vd) == "sub-u"
    assert rewrite("free@example.net", [], vd) == "free-free"
    assert rewrite("other@example.net", [], vd) is None  # empty prepend: not virtual
    assert rewrite("bob@example.com", ["EXAMPLE.com"], vd) == "bob"  # locals win
    assert dot_qmail_candidates("-", "a-b-c") == [".qmail-a-b-c", ".qmail-a-b-default", ".qmail-a-default",
                                                  ".qmail-default"]
    assert dot_qmail_candidates("", "") == [".qmail", ".qmaildefault"]
    assert dot_qmail_candidates("-", "A.B") == [".qmail-a:b", ".qmail-default"]


def test_world_readable_sqlserver_warns(site: QmailMysqlTree) -> None:
    site.syslog_records()
    sync_ok(site)
    assert site.syslog_records() == []  # 0640: nothing to say
    os.chmod(site.sqlserver, 0o644)
    sync_ok(site)
    (record,) = site.syslog_parsed()
    assert record.tag == "qmail-mysql-sync" and str(site.sqlserver) in record.message
    assert "chmod 640" in record.message
