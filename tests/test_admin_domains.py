"""vadddomain, vdeldomain, vaddaliasdomain and vdominfo: the installed commands, as root, on the CDB
store and on the MySQL store (``many_domains`` on and off) against the session's real MariaDB.

What they write is read back with tests/qmailfiles.py (qmail's own readings of users/assign,
users/cdb, virtualdomains and the .qmail files, written without the project's code), and used:
a login through the installed vchkpw and a delivery through the installed vdelivermail.  The
messages and exit codes are vpopmail 5.6's (``vadddomain.c``, ``vdeldomain.c``, ``vaddaliasdomain.c``,
``vdominfo.c``, ``verror()``); shared/reference/admin-vpopmaild-dovecot24.md has them.
"""

from __future__ import annotations

import os
import random
import secrets
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from helpers import VPOPMAIL_GID, VPOPMAIL_UID, fd3_payload, program
from qmailfiles import (
    Cdb,
    LspawnExit,
    control_lines,
    lspawn_lookup,
    parse_assign,
    parse_virtualdomains,
    route,
)
from tree import Tree, faked_time_environ, load_schema, mysql_rows, snapshot

PASSWORD = "secret"
MESSAGE = b"From: alice@example.net\nTo: postmaster@example.org\nSubject: hello\n\nHello, postmaster.\n"
STORES = ["cdb", "mysql", "mysql-table-per-domain"]
MARK = ".vadddomain-unfinished"


# ------------------------------------------------------------------------------------------------
# running the commands


def run(tree: Tree, name: str, *args: str, stdin: bytes = b"", timeout: float = 60
        ) -> subprocess.CompletedProcess[str]:
    """The installed command as an operator runs it: as root, no terminal (getpass reads stdin)."""
    env = {"PATH": "/usr/bin:/bin", "VPOP_CONFIG": str(tree.config), **faked_time_environ()}
    done = subprocess.run([program(name), *args], input=stdin, env=env, capture_output=True, timeout=timeout,
                          cwd=tree.root, start_new_session=True)
    return subprocess.CompletedProcess(done.args, done.returncode, done.stdout.decode(), done.stderr.decode())


def ok(tree: Tree, name: str, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[str]:
    done = run(tree, name, *args, stdin=stdin)
    assert done.returncode == 0, (done.stdout, done.stderr)
    return done


def make_tree(request: pytest.FixtureRequest, store: str, **settings: Any) -> Tree:
    settings.setdefault("qmail_send_signal", "none")
    if store == "cdb":
        tree = Tree(**settings)
        tree.db = None
        return tree
    db = request.getfixturevalue("mysql_db")
    load_schema(db)
    tree = Tree(store="mysql", many_domains=store == "mysql", **settings)
    tree.write_mysql_credentials(db, tcp=True)  # vdelivermail, as uid 89, reads it and connects
    os.chown(tree.etc / "vpopmail.mysql", VPOPMAIL_UID, VPOPMAIL_GID)
    tree.db = db
    return tree


@pytest.fixture(params=STORES)
def site(request: pytest.FixtureRequest) -> Iterator[Tree]:
    """An empty vpopmail + qmail tree on each store; qmail_send_signal = none."""
    tree = make_tree(request, request.param)
    try:
        yield tree
    finally:
        tree.close()


@pytest.fixture
def tree(request: pytest.FixtureRequest) -> Iterator[Tree]:
    """An empty tree on the CDB store."""
    t = make_tree(request, "cdb")
    try:
        yield t
    finally:
        t.close()


# ------------------------------------------------------------------------------------------------
# reading back


def assign_text(tree: Tree) -> str:
    return (tree.qmail_home / "users" / "assign").read_text()


def assignments(tree: Tree) -> dict:
    return parse_assign(assign_text(tree))


def users_cdb(tree: Tree) -> Cdb:
    return Cdb.open(tree.qmail_home / "users" / "cdb")


def virtualdomains(tree: Tree) -> dict[str, str]:
    path = tree.qmail_home / "control" / "virtualdomains"
    return parse_virtualdomains(path.read_text()) if path.exists() else {}


def control(tree: Tree, name: str) -> list[str] | None:
    return control_lines(tree.qmail_home / "control" / name)


def no_getpw(local: str) -> tuple[str, int, int, str, str, str]:
    raise LspawnExit(100, f"qmail-getpw would be asked for {local}")


def where(tree: Tree, address: str):
    return route(address, tree.qmail_home, no_getpw)


def owner_mode(path: Path) -> tuple[int, int, int]:
    info = os.lstat(path)
    return info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)


def table(tree: Tree) -> str:
    return "vpopmail" if tree.settings().many_domains else "example_org"


def store_users(tree: Tree, domain: str = "example.org") -> list[str]:
    """The user names the store holds for ``domain``."""
    if tree.db is None:
        path = tree.domain_dir(domain) / "vpasswd"
        if not path.exists():
            return []
        return [line.split(":", 1)[0] for line in path.read_text().split("\n") if line]
    if tree.settings().many_domains:
        rows = mysql_rows(tree.db, "SELECT pw_name FROM vpopmail WHERE pw_domain = %s", (domain,))
        return [r[0] for r in rows]
    name = domain.replace(".", "_").replace("-", "_")
    if not mysql_rows(tree.db, "SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() "
                               "AND TABLE_NAME = %s", (name,)):
        return []
    return [r[0] for r in mysql_rows(tree.db, f"SELECT pw_name FROM `{name}`")]


def database(tree: Tree) -> dict[str, list]:
    """Every row of every table (MySQL sites), to prove a refused command changed none."""
    if tree.db is None:
        return {}
    names = [r[0] for r in mysql_rows(tree.db, "SELECT TABLE_NAME FROM information_schema.TABLES "
                                               "WHERE TABLE_SCHEMA = DATABASE() ORDER BY TABLE_NAME")]
    return {name: sorted(mysql_rows(tree.db, f"SELECT * FROM `{name}`"), key=repr) for name in names}


def login(tree: Tree, address: str, password: str = PASSWORD):
    return tree.login(fd3_payload(address, password, b"<1.2@pop.example.org>"))


# ------------------------------------------------------------------------------------------------
# command lines


USAGE_LINES = {
    "vadddomain": "vadddomain: usage: vadddomain [options] virtual_domain [postmaster password]\n",
    "vdeldomain": "vdeldomain: usage: [options] domain_name\n",
    "vaddaliasdomain": "vaddaliasdomain: usage: [options] real_domain alias_domain\n",
    "vdominfo": "vdominfo: usage: [options] [domain]\n",
}


def test_usage_help_and_unknown_options(tree: Tree) -> None:
    """No domain: the usage on stdout and exit 2 (vpopmail exited 0, 255 for vaddaliasdomain); an
    unknown option: glibc's line on stderr, the usage, 2; --help: the usage and the differences, 0."""
    for name in ("vadddomain", "vdeldomain", "vaddaliasdomain"):
        done = run(tree, name)
        assert (done.returncode, done.stderr) == (2, ""), name
        assert done.stdout.startswith(USAGE_LINES[name])
    done = run(tree, "vaddaliasdomain", "example.org")
    assert done.returncode == 2 and done.stdout.startswith(USAGE_LINES["vaddaliasdomain"])
    for name, line in USAGE_LINES.items():
        done = run(tree, name, "-x", "example.org")
        assert done.returncode == 2, name
        assert done.stderr == f"{name}: invalid option -- 'x'\n"
        assert done.stdout.startswith(line)
        done = run(tree, name, "--help")
        assert done.returncode == 0, name
        assert done.stdout.startswith(line) and f"\n\nDifferences from vpopmail's {name}:\n" in done.stdout
    done = run(tree, "vadddomain", "-q")
    assert (done.returncode, done.stderr) == (2, "vadddomain: option requires an argument -- 'q'\n")
    done = run(tree, "vadddomain", "-i", "x", "example.org", PASSWORD)
    assert done.returncode == 2 and done.stdout.startswith("vadddomain: -i needs a number, not 'x'\n")
    assert not (tree.qmail_home / "users" / "assign").exists()
    done = run(tree, "vdominfo", "-v")  # -v prints the version and carries on (no users/assign yet)
    assert done.returncode == 255 and done.stdout.startswith("version: ")
    assert done.stdout.endswith("\nCan't get domain entries - can't read users/assign file\n")


def test_the_usage_text_is_vpopmail_s(tree: Tree) -> None:
    """vadddomain's usage, its typos and its trailing blank as vadddomain.c prints them."""
    done = run(tree, "vadddomain")
    lines = done.stdout.split("\n")
    assert lines[12:14] == ["", " [*] omit @-sign to deliver directly into user's Maildir: '-e postmaster'"]
    assert "   vadddomain -b bounce-no-mailbox example.com [password] - bounce them \n" in done.stdout
    assert "   vadddimain -b someone@somewhere.com example.com [password] - sent to another address\n" \
        in done.stdout
    assert run(tree, "vdominfo", "-x").stdout == (
        "vdominfo: usage: [options] [domain]\noptions: -v (print version number)\n"
        "         -a (display all fields, this is the default)\n         -n (display domain name)\n"
        "         -u (display uid field)\n         -g (display gid field)\n"
        "         -d (display domain directory)\n         -t (display total users)\n"
        "         -r (display real domain)\n")


# ------------------------------------------------------------------------------------------------
# vadddomain: what it writes


def test_vadddomain_lays_the_domain_out_as_vpopmail(site: Tree) -> None:
    done = ok(site, "vadddomain", "Example.ORG", PASSWORD)
    assert (done.stdout, done.stderr) == ("", "")
    domain_dir = site.domain_dir("example.org")
    # users/assign and users/cdb, read as qmail-newu and qmail-lspawn read them
    assert assign_text(site) == f"+example.org-:example.org:89:89:{domain_dir}:-::\n.\n"
    entry = assignments(site)[("+", "example.org-")]
    assert (entry.user, entry.uid, entry.gid, entry.home, entry.dash, entry.ext) == (
        "example.org", 89, 89, str(domain_dir), "-", "")
    assert lspawn_lookup(users_cdb(site), "example.org-postmaster") == (
        "example.org", 89, 89, str(domain_dir), "-", "postmaster")
    record = b"example.org\x0089\x0089\x00" + str(domain_dir).encode() + b"\x00-\x00"
    assert users_cdb(site).items() == [(b"!example.org-", record), (b"", b"-")]
    # control files, root's, 0644
    assert virtualdomains(site) == {"example.org": "example.org"}
    assert control(site, "rcpthosts") == ["example.org"]
    assert control(site, "morercpthosts") is None and control(site, "locals") is None
    for path in ("users/assign", "users/cdb", "control/virtualdomains", "control/rcpthosts"):
        assert owner_mode(site.qmail_home / path) == (0, 0, 0o644), path
    # the domain directory and its files: the domain's ids, vpopmail's modes
    assert owner_mode(domain_dir) == (89, 89, 0o750)
    qmail_default = domain_dir / ".qmail-default"
    assert qmail_default.read_text() == f"| {site.vpopmail_home}/bin/vdelivermail '' bounce-no-mailbox\n"
    assert owner_mode(qmail_default) == (89, 89, 0o600)
    assert not (domain_dir / MARK).exists()
    delivery = where(site, "nobody@example.org")
    assert (delivery.user, delivery.home, delivery.dot_qmail, delivery.ext) == (
        "example.org", str(domain_dir), ".qmail-default", "nobody")
    assert delivery.instructions == [
        ("program", f" {site.vpopmail_home}/bin/vdelivermail '' bounce-no-mailbox")]
    # the postmaster, in the store
    assert store_users(site) == ["postmaster"]
    postmaster = domain_dir / "postmaster"
    assert owner_mode(postmaster) == (89, 89, 0o750)
    assert owner_mode(postmaster / "Maildir" / "new") == (89, 89, 0o750)
    if site.db is None:
        for name in ("vpasswd", "vpasswd.cdb"):
            assert owner_mode(domain_dir / name) == (89, 89, 0o600)
        fields = (domain_dir / "vpasswd").read_text().split("\n")[0].split(":")
        assert fields[0] == "postmaster"
        assert fields[4:] == ["Postmaster", str(postmaster), "NOQUOTA", PASSWORD]
        assert fields[1].startswith("$6$")  # password_scheme sha512-crypt
        assert (site.domains / ".dir-control").read_text().split("\n")[0] == "1"  # dom_89: one domain
    else:
        rows = mysql_rows(site.db, "SELECT pw_name, pw_gecos, pw_dir, pw_shell, pw_clear_passwd "
                                   f"FROM `{table(site)}`")
        assert rows == [("postmaster", "Postmaster", str(postmaster), "NOQUOTA", PASSWORD)]
        counted = mysql_rows(site.db, "SELECT cur_users, the_dir FROM dir_control WHERE domain = 'dom_89'")
        assert counted == [(1, "")]
        assert not (domain_dir / "vpasswd").exists()
    assert ok(site, "vdominfo", "example.org").stdout == (
        f"domain: example.org\nuid:    89\ngid:    89\ndir:    {domain_dir}\nusers:  1\n")


@pytest.mark.parametrize("store", STORES)
def test_end_to_end_add_login_deliver_delete(request: pytest.FixtureRequest, store: str) -> None:
    """vadddomain -> a login of postmaster through vchkpw -> a delivery through vdelivermail ->
    vdeldomain -> the login is refused and qmail's files no longer know the domain."""
    site = make_tree(request, store)
    try:
        ok(site, "vadddomain", "example.org", PASSWORD)
        postmaster = site.domain_dir("example.org") / "postmaster"
        done, record = login(site, "postmaster@example.org")
        assert done.returncode == 0, done.stderr
        assert record is not None and record["cwd"] == str(postmaster)
        assert (record["uid"], record["gid"]) == (89, 89)
        done = site.deliver("postmaster@example.org", MESSAGE)
        assert done.returncode == 0, done.stdout + done.stderr
        delivered = list((postmaster / "Maildir" / "new").iterdir())
        assert len(delivered) == 1 and delivered[0].read_bytes().endswith(b"\n\nHello, postmaster.\n")

        done = ok(site, "vdeldomain", "example.org")
        assert (done.stdout, done.stderr) == ("", "")
        done, record = login(site, "postmaster@example.org")
        assert (done.returncode, record) == (1, None)
        assert where(site, "postmaster@example.org") is None  # not a virtual domain: qmail-send sends it away
        assert control(site, "rcpthosts") == [] and virtualdomains(site) == {}  # qmail-smtpd refuses it
        assert assignments(site) == {} and lspawn_lookup(users_cdb(site), "example.org-postmaster") is None
        assert not site.domain_dir("example.org").exists()
        assert store_users(site) == []
        done = site.deliver("postmaster@example.org", MESSAGE, domain_dir=site.domains)
        assert done.returncode == 111 and b"example.org is not in users/assign" in done.stdout + done.stderr
    finally:
        site.close()


def test_password_prompt_and_random_passwords(tree: Tree) -> None:
    """No password on the command line: vgetpasswd's prompts (twice, again on a mismatch); -r[len]:
    ``Random password: <pw>`` from the secrets module, 12 characters by default."""
    done = ok(tree, "vadddomain", "example.org", stdin=b"one\ntwo\nsecret\nsecret\n")
    assert done.stdout == "Passwords do not match, try again\n"
    assert done.stderr.count("Please enter password for postmaster: ") == 2
    assert done.stderr.count("enter password again: ") == 2
    assert login(tree, "postmaster@example.org")[0].returncode == 0
    done = ok(tree, "vadddomain", "-r", "example.net")
    assert done.stdout.startswith("Random password: ") and done.stdout.endswith("\n")
    password = done.stdout.removeprefix("Random password: ").strip()
    assert len(password) == 12 and password.isalnum()
    assert login(tree, "postmaster@example.net", password)[0].returncode == 0
    done = ok(tree, "vadddomain", "-r20", "example.com")
    password = done.stdout.removeprefix("Random password: ").strip()
    assert len(password) == 20 and login(tree, "postmaster@example.com", password)[0].returncode == 0


def test_options_q_e_u_d_i_g(tree: Tree) -> None:
    done = ok(tree, "vadddomain", "-q", "10M", "-e", "catch@example.net", "example.org", PASSWORD)
    assert done.stdout == ""
    domain_dir = tree.domain_dir("example.org")
    assert (domain_dir / ".qmail-default").read_text() == (
        f"| {tree.vpopmail_home}/bin/vdelivermail '' catch@example.net\n")
    assert (domain_dir / "vpasswd").read_text().split(":")[6] == "10485760S"
    ok(tree, "vadddomain", "-e", "postmaster", "example.net", PASSWORD)
    assert (tree.domain_dir("example.net") / ".qmail-default").read_text() == (
        f"| {tree.vpopmail_home}/bin/vdelivermail '' {tree.domain_dir('example.net')}/postmaster\n")
    for target in ("delete", "bounce-no-mailbox", "/var/mail/catchall/"):
        name = f"{target.strip('/').replace('/', '-')}.test"
        ok(tree, "vadddomain", "-e", target, name, PASSWORD)
        assert (tree.domain_dir(name) / ".qmail-default").read_text() == (
            f"| {tree.vpopmail_home}/bin/vdelivermail '' {target}\n")
    # -d: the domain goes under <dir>/domains; -i/-g: its ids (-u: those and the home of a passwd user)
    other = tree.root / "elsewhere"
    other.mkdir()
    ok(tree, "vadddomain", "-d", str(other), "-i", "4242", "-g", "4343", "example.com", PASSWORD)
    found = assignments(tree)[("+", "example.com-")]
    assert (found.uid, found.gid, found.home) == (4242, 4343, f"{other}/domains/example.com")
    assert owner_mode(other / "domains") == (4242, 4343, 0o750)
    assert owner_mode(other / "domains" / "example.com" / "postmaster") == (4242, 4343, 0o750)
    assert (other / "domains" / ".dir-control").exists()  # dom_4242's count lives with its domains
    done = run(tree, "vadddomain", "-u", "vpopmail", "-d", str(tree.vpopmail_home), "example.info", PASSWORD)
    assert done.returncode == 0, done.stdout
    found = assignments(tree)[("+", "example.info-")]
    assert (found.uid, found.gid) == (VPOPMAIL_UID, VPOPMAIL_GID)


# ------------------------------------------------------------------------------------------------
# refusals change nothing


def test_bad_input_gets_vpopmail_s_message_and_changes_nothing(site: Tree) -> None:
    ok(site, "vadddomain", "example.org", PASSWORD)
    cases: list[tuple[Sequence[str], bytes, int, str]] = [
        (["vadddomain", "a/b.org", PASSWORD], b"", 244, "Error: Invalid domain name\n"),
        (["vadddomain", "../x.org", PASSWORD], b"", 244, "Error: Invalid domain name\n"),
        (["vadddomain", "a..b.org", PASSWORD], b"", 244, "Error: Invalid domain name\n"),
        (["vadddomain", "a b.org", PASSWORD], b"", 244, "Error: Invalid domain name\n"),
        (["vadddomain", ".example.net", PASSWORD], b"", 244, "Error: Invalid domain name\n"),
        (["vadddomain", "-x.net", PASSWORD], b"", 2, None),  # an option vadddomain does not know
        (["vadddomain", "--", "-x.net", PASSWORD], b"", 244, "Error: Invalid domain name\n"),
        (["vadddomain", "example.net-", PASSWORD], b"", 244, "Error: Invalid domain name\n"),
        (["vadddomain", "example.n", PASSWORD], b"", 244, "Error: Invalid domain name\n"),
        (["vadddomain", "localhost", PASSWORD], b"", 244, "Error: Invalid domain name\n"),
        (["vadddomain", "ex\u00e4mple.net", PASSWORD], b"", 244, "Error: Invalid domain name\n"),
        (["vadddomain", "a" * 93 + ".net", PASSWORD], b"", 230, "Error: domain name too long (max=96)\n"),
        (["vadddomain", "EXAMPLE.org", PASSWORD], b"", 243, "Error: Domain already exists\n"),
        (["vadddomain", "example.org"], b"", 243, "Error: Domain already exists\n"),  # before the prompt
        (["vadddomain", "-r", "example.net", PASSWORD], b"", 255,
         "Error: don't use -r option when giving password on command line\n"),
        (["vadddomain", "-r200", "example.net"], b"", 229, "Error: password too long (max=128)\n"),
        (["vadddomain", "example.net", "p" * 129], b"", 229,
         "Error: (vadduser) password too long (max=128)\n"),
        (["vadddomain", "-q", "1" * 21, "example.net", PASSWORD], b"", 227,
         "Error: quota too long (max=20)\n"),
        (["vadddomain", "-e", "x;reboot", "example.net", PASSWORD], b"", 255, None),
        (["vadddomain", "-e", "a b@example.org", "example.net", PASSWORD], b"", 255, None),
        (["vadddomain", "-u", "no-such-user-here", "example.net", PASSWORD], b"", 255,
         "Error: user no-such-user-here not found in /etc/passwd\n"),
        (["vadddomain", "-i", "0", "example.net", PASSWORD], b"", 255, None),
        (["vadddomain", "example.net"], b"", 255, "Error: No password entered\n"),
        (["vadddomain", "example.net", PASSWORD, "extra"], b"", 2, None),
        (["vdeldomain", "unknown.org"], b"", 245, "Error: Domain does not exist\n"),
        (["vdeldomain", "../example.org"], b"", 245, "Error: Domain does not exist\n"),
        (["vdeldomain", "example.org", "extra"], b"", 2, None),
        (["vaddaliasdomain", "x.org", "y.org"], b"", 255,
         "Error: Neither 'x.org' or 'y.org'  exist, unable to create alias.\n"),
        (["vaddaliasdomain", "example.org", "EXAMPLE.ORG"], b"", 255, None),
        (["vaddaliasdomain", "example.org", "bad/name.org"], b"", 244, "Error: Invalid domain name\n"),
        (["vaddaliasdomain", "localhost", "example.org"], b"", 244, "Error: Invalid domain name\n"),
        (["vdominfo", "unknown.org"], b"", 245, "Invalid domain name\n"),
        (["vdominfo", "a/b"], b"", 245, "Invalid domain name\n"),
    ]
    before_files, before_rows = snapshot(site.root), database(site)
    for argv, stdin, code, stdout in cases:
        done = run(site, *argv, stdin=stdin)
        assert done.returncode == code, (argv, done.stdout, done.stderr)
        if stdout is not None:
            assert done.stdout == stdout, argv
        assert snapshot(site.root) == before_files, argv
        assert database(site) == before_rows, argv
    done = run(site, "vaddaliasdomain", "example.org", "EXAMPLE.ORG")
    assert done.stdout.startswith("Error: real domain and alias domain are the same!\n"
                                  + USAGE_LINES["vaddaliasdomain"])
    ok(site, "vadddomain", "example.net", PASSWORD)
    before_files, before_rows = snapshot(site.root), database(site)
    done = run(site, "vaddaliasdomain", "example.org", "example.net")
    assert (done.returncode, done.stdout) == (
        255, "Error: Both domains already exist, unable to create alias.\n")
    assert (snapshot(site.root), database(site)) == (before_files, before_rows)


def test_a_virtualdomains_line_elsewhere_and_leftover_rows_are_refused(site: Tree) -> None:
    from vpop.assign import write_users_cdb

    site.write_control("virtualdomains", "example.org:someone-else\n")
    before = snapshot(site.root)
    done = run(site, "vadddomain", "example.org", PASSWORD)
    assert done.returncode == 255
    assert done.stdout == ("Error: control/virtualdomains routes example.org elsewhere "
                           "(example.org:someone-else): remove that line first\n")
    assert snapshot(site.root) == before
    if site.db is not None:  # users of a removed domain still in the store: not inherited silently
        (site.qmail_home / "control" / "virtualdomains").unlink()
        ok(site, "vadddomain", "example.org", PASSWORD)
        (site.qmail_home / "users" / "assign").write_text(".\n")  # "removed" by hand: the rows stay
        write_users_cdb(str(site.qmail_home))
        import shutil

        shutil.rmtree(site.domain_dir("example.org"))
        site.write_control("virtualdomains", "")
        done = run(site, "vadddomain", "example.org", PASSWORD)
        assert done.returncode == 255 and f"Error: table {table(site)} already holds users of example.org" \
            in done.stdout


# ------------------------------------------------------------------------------------------------
# alias domains


def test_alias_domains(site: Tree) -> None:
    ok(site, "vadddomain", "example.org", PASSWORD)
    domain_dir = site.domain_dir("example.org")
    done = ok(site, "vaddaliasdomain", "alias.test", "EXAMPLE.org")  # either order, any case
    assert (done.stdout, done.stderr) == ("", "")
    assert assignments(site)[("+", "alias.test-")].home == str(domain_dir)
    assert f"+alias.test-:example.org:89:89:{domain_dir}:-::\n" in assign_text(site)
    assert virtualdomains(site) == {"alias.test": "alias.test", "example.org": "example.org"}
    assert control(site, "rcpthosts") == ["alias.test", "example.org"]
    assert lspawn_lookup(users_cdb(site), "alias.test-postmaster") == (
        "example.org", 89, 89, str(domain_dir), "-", "postmaster")
    assert login(site, "postmaster@alias.test")[0].returncode == 0
    assert site.deliver("postmaster@alias.test", MESSAGE).returncode == 0
    ok(site, "vaddaliasdomain", "example.org", "second.test")
    assert ok(site, "vdominfo").stdout == "".join(
        f"domain: {name}\nuid:    89\ngid:    89\ndir:    {domain_dir}\nusers:  1\n\n"
        for name in ("alias.test (alias of example.org)", "example.org",
                     "second.test (alias of example.org)"))
    block = f"domain: example.org\nuid:    89\ngid:    89\ndir:    {domain_dir}\nusers:  1\n"
    assert ok(site, "vdominfo", "alias.test").stdout == block + "alias: alias.test\nalias: second.test\n"

    # without -f: vpopmail's warning, exit 0, nothing changed
    before, rows = snapshot(site.root), database(site)
    done = ok(site, "vdeldomain", "example.org")
    assert done.stdout == ("Warning: Alias domains exist:\n   alias.test\n   second.test\n"
                           "   use -f to force delete of domain and all aliases\n")
    assert (snapshot(site.root), database(site)) == (before, rows)
    # an alias alone
    assert ok(site, "vdeldomain", "second.test").stdout == ""
    assert ("+", "second.test-") not in assignments(site) and "second.test" not in virtualdomains(site)
    assert control(site, "rcpthosts") == ["alias.test", "example.org"]
    assert login(site, "postmaster@second.test")[0].returncode == 1
    assert login(site, "postmaster@example.org")[0].returncode == 0
    # -f: the domain and every alias
    done = ok(site, "vdeldomain", "-f", "example.org")
    assert done.stdout == "Warning: Alias domains deleted:\n   alias.test\n"
    assert assignments(site) == {} and virtualdomains(site) == {} and control(site, "rcpthosts") == []
    assert not domain_dir.exists()
    assert login(site, "postmaster@alias.test")[0].returncode == 1


# ------------------------------------------------------------------------------------------------
# qmail's files: sorted places, rcpthosts' 50 lines, locals


def test_lines_go_where_vpopmail_s_update_file_puts_them(tree: Tree) -> None:
    """Before the first line whose key (the last two labels first) sorts after the new one's."""
    tree.write_control("rcpthosts", "aaa.com\nmail.zzz.com\nccc.com\n")  # keys: aaa.com ccc.com zzz.com.mail
    tree.write_control("virtualdomains", "aaa.com:aaa.com\nccc.com:ccc.com\n")
    done = ok(tree, "vadddomain", "sub.bbb.com", PASSWORD)
    assert control(tree, "rcpthosts") == ["aaa.com", "sub.bbb.com", "ccc.com", "mail.zzz.com"]
    assert done.stderr == (f"NOTICE: Out of order entries found in {tree.qmail_home}/control/rcpthosts\n"
                           "   Sorting...\n\n")
    assert (tree.qmail_home / "control" / "virtualdomains").read_text() == (
        "aaa.com:aaa.com\nsub.bbb.com:sub.bbb.com\nccc.com:ccc.com\n")
    ok(tree, "vadddomain", "bbb.com", PASSWORD)
    ok(tree, "vadddomain", "aaa.org", PASSWORD)
    assert [line.split(":")[0] for line in assign_text(tree).split("\n")] == [
        "+aaa.org-", "+bbb.com-", "+sub.bbb.com-", ".", ""]
    assert control(tree, "rcpthosts") == ["aaa.com", "aaa.org", "bbb.com", "sub.bbb.com", "ccc.com",
                                          "mail.zzz.com"]


def test_no_second_copy_and_no_file_made_empty(tree: Tree) -> None:
    """A name already in rcpthosts/virtualdomains is not added again (vpopmail's update_file added a
    second line); a vdeldomain on a site without rcpthosts does not create an empty one (vpopmail's
    remove_lines did: qmail-smtpd then refuses every recipient)."""
    tree.write_control("rcpthosts", "example.org\n")
    tree.write_control("virtualdomains", "example.org:example.org\n")
    ok(tree, "vadddomain", "example.org", PASSWORD)
    assert (tree.qmail_home / "control" / "rcpthosts").read_text() == "example.org\n"
    assert (tree.qmail_home / "control" / "virtualdomains").read_text() == "example.org:example.org\n"
    assert assign_text(tree).count("+example.org-:") == 1
    for name in ("rcpthosts", "rcpthosts.lock"):
        (tree.qmail_home / "control" / name).unlink(missing_ok=True)
    ok(tree, "vdeldomain", "example.org")
    assert not (tree.qmail_home / "control" / "rcpthosts").exists()
    assert virtualdomains(tree) == {}


def test_a_domain_leaves_locals_and_a_missing_locals_stays_missing(tree: Tree) -> None:
    tree.write_control("locals", "localhost\nexample.org\n")
    ok(tree, "vadddomain", "example.org", PASSWORD)
    assert control(tree, "locals") == ["localhost"]
    for name in ("locals", "locals.lock"):
        (tree.qmail_home / "control" / name).unlink()
    ok(tree, "vaddaliasdomain", "example.org", "alias.test")
    ok(tree, "vdeldomain", "-f", "example.org")
    assert not (tree.qmail_home / "control" / "locals").exists()  # vpopmail made it, empty
    assert not (tree.qmail_home / "control" / "locals.lock").exists()


def test_rcpthosts_gives_way_to_morercpthosts_at_50_lines(tree: Tree) -> None:
    hosts = [f"h{n:02}.example" for n in range(50)]
    tree.write_control("rcpthosts", "".join(h + "\n" for h in hosts))
    more = tree.qmail_home / "control" / "morercpthosts"
    more_cdb = tree.qmail_home / "control" / "morercpthosts.cdb"
    ok(tree, "vadddomain", "new.example", PASSWORD)
    assert control(tree, "rcpthosts") == hosts
    assert control(tree, "morercpthosts") == ["new.example"]
    assert Cdb.open(more_cdb).items() == [(b"new.example", b"")]  # qmail-newmrh's records
    assert owner_mode(more) == owner_mode(more_cdb) == (0, 0, 0o644)
    ok(tree, "vadddomain", "-O", "abc.example", PASSWORD)  # bulk: no morercpthosts.cdb yet
    assert control(tree, "morercpthosts") == ["abc.example", "new.example"]
    assert Cdb.open(more_cdb).items() == [(b"new.example", b"")]
    ok(tree, "vaddaliasdomain", "new.example", "Third.Example")
    assert Cdb.open(more_cdb).items() == [(b"abc.example", b""), (b"new.example", b""),
                                          (b"third.example", b"")]
    more.write_text(more.read_text() + "# a comment\nMixed.Example  \n\n")  # as qmail-newmrh reads it
    ok(tree, "vdeldomain", "-f", "new.example")
    assert (more.read_text(), control(tree, "morercpthosts")) == (
        "abc.example\n# a comment\nMixed.Example  \n\n", ["abc.example", "Mixed.Example"])
    assert Cdb.open(more_cdb).items() == [(b"abc.example", b""), (b"mixed.example", b"")]
    more.write_text("abc.example\n")
    ok(tree, "vdeldomain", "abc.example")
    assert not more.exists() and not more_cdb.exists()  # empty: both go, as vpopmail's del_control
    assert control(tree, "rcpthosts") == hosts
    # a domain in rcpthosts, its alias in morercpthosts: both names go (vpopmail looked in
    # morercpthosts only when rcpthosts had none of them)
    tree.write_control("rcpthosts", "".join(h + "\n" for h in hosts[:49]))
    ok(tree, "vadddomain", "real.example", PASSWORD)
    ok(tree, "vaddaliasdomain", "real.example", "alias.example")
    assert control(tree, "rcpthosts")[-1] == "real.example"
    assert control(tree, "morercpthosts") == ["alias.example"]
    ok(tree, "vdeldomain", "-f", "real.example")
    assert control(tree, "rcpthosts") == hosts[:49] and not more.exists() and not more_cdb.exists()


# ------------------------------------------------------------------------------------------------
# hashed domain directories, the MySQL rows


def dir_control(serial: int) -> str:
    return f"{serial}\n0\n3\n0 0 0\n61 61 61\n0 2 4\n0 0 0\n\n"


def test_the_hundredth_domain_goes_into_a_hash_directory(site: Tree) -> None:
    """vpopmail's ``dom_<uid>`` counter: domains 1-99 in domains/, from the 100th on in domains/0/ ..."""
    if site.db is None:
        site.domains.chmod(0o750)
        os.chown(site.domains, 89, 89)
        (site.domains / ".dir-control").write_text(dir_control(99))
        os.chown(site.domains / ".dir-control", 89, 89)
    else:
        mysql_rows(site.db, "INSERT INTO dir_control VALUES ('dom_89', 99, 0, 3, 0, 0, 0, 61, 61, 61, "
                            "0, 2, 4, 0, 0, 0, '')")
    ok(site, "vadddomain", "example.org", PASSWORD)
    domain_dir = site.domains / "0" / "example.org"
    assert assignments(site)[("+", "example.org-")].home == str(domain_dir)
    assert owner_mode(site.domains / "0") == owner_mode(domain_dir) == (89, 89, 0o750)
    assert login(site, "postmaster@example.org")[0].returncode == 0
    assert where(site, "x@example.org").home == str(domain_dir)
    if site.db is None:
        assert (site.domains / ".dir-control").read_text().split("\n")[:8] == [
            "100", "1", "3", "0 0 0", "61 61 61", "0 2 4", "0 0 0", "0"]
    else:
        assert mysql_rows(site.db, "SELECT cur_users, the_dir FROM dir_control WHERE domain = 'dom_89'") == [
            (100, "0")]
    ok(site, "vdeldomain", "example.org")
    assert not domain_dir.exists() and (site.domains / "0").is_dir()
    if site.db is None:
        assert (site.domains / ".dir-control").read_text().split("\n")[0] == "99"
    else:
        assert mysql_rows(site.db, "SELECT cur_users FROM dir_control WHERE domain = 'dom_89'") == [(99,)]


@pytest.mark.parametrize("store", ["mysql", "mysql-table-per-domain"])
def test_vdeldomain_takes_the_domain_s_rows_and_only_those(request: pytest.FixtureRequest,
                                                           store: str) -> None:
    site = make_tree(request, store)
    try:
        ok(site, "vadddomain", "example.org", PASSWORD)
        ok(site, "vadddomain", "other.org", PASSWORD)
        site.add_user("example.org", "bob", PASSWORD)
        for domain in ("example.org", "other.org"):
            # REPLACE: vadddomain wrote the postmaster's lastauth row (0.0.0.0) already, as vpopmail's does
            mysql_rows(site.db, "REPLACE INTO lastauth VALUES ('postmaster', %s, '192.0.2.1', 1)", (domain,))
            mysql_rows(site.db, "INSERT INTO valias VALUES ('info', %s, 'postmaster@example.net')", (domain,))
            mysql_rows(site.db, "INSERT INTO limits (domain, maxpopaccounts) VALUES (%s, 10)", (domain,))
        assert {r[0] for r in mysql_rows(site.db, "SELECT domain FROM dir_control")} == {
            "dom_89", "example.org", "other.org"}
        if store == "mysql-table-per-domain":
            assert sorted(store_users(site, "example.org")) == ["bob", "postmaster"]
        ok(site, "vdeldomain", "example.org")
        for name in ("lastauth", "valias", "limits"):
            assert [r[0] for r in mysql_rows(site.db, f"SELECT domain FROM {name}")] == ["other.org"], name
        left = sorted(r[0] for r in mysql_rows(site.db, "SELECT domain FROM dir_control"))
        assert left == ["dom_89", "other.org"]
        assert mysql_rows(site.db, "SELECT cur_users FROM dir_control WHERE domain = 'dom_89'") == [(1,)]
        assert store_users(site, "example.org") == [] and store_users(site, "other.org") == ["postmaster"]
        tables = {r[0] for r in mysql_rows(site.db, "SELECT TABLE_NAME FROM information_schema.TABLES "
                                                    "WHERE TABLE_SCHEMA = DATABASE()")}
        if store == "mysql-table-per-domain":
            assert "example_org" not in tables and "other_org" in tables
        assert login(site, "postmaster@other.org")[0].returncode == 0
    finally:
        site.close()


def test_a_postmaster_that_cannot_be_made_takes_the_domain_away(request: pytest.FixtureRequest) -> None:
    site = make_tree(request, "mysql")
    try:
        mysql_rows(site.db, "DROP TABLE vpopmail")
        mysql_rows(site.db, "CREATE TABLE vpopmail (pw_name char(2) NOT NULL, pw_domain char(96) NOT NULL, "
                            "PRIMARY KEY (pw_name, pw_domain))")  # no room for a postmaster
        done = run(site, "vadddomain", "example.org", PASSWORD)
        assert done.returncode == 111 and done.stdout.startswith("Error: (vadduser) database "), done.stdout
        assert assign_text(site) == ".\n" and virtualdomains(site) == {} and control(site, "rcpthosts") == []
        assert not site.domain_dir("example.org").exists()
        assert mysql_rows(site.db, "SELECT cur_users FROM dir_control WHERE domain = 'dom_89'") == [(0,)]
    finally:
        site.close()


# ------------------------------------------------------------------------------------------------
# vdominfo


def test_vdominfo_fields(tree: Tree) -> None:
    ok(tree, "vadddomain", "example.org", PASSWORD)
    ok(tree, "vadddomain", "-i", "4242", "-g", "4343", "example.net", PASSWORD)
    ok(tree, "vaddaliasdomain", "example.org", "alias.test")
    tree.add_user("example.org", "bob", PASSWORD)
    org, net = tree.domain_dir("example.org"), tree.domain_dir("example.net")
    assert ok(tree, "vdominfo", "-n").stdout == (
        "alias.test (alias of example.org)\n\nexample.net\n\nexample.org\n\n")
    assert ok(tree, "vdominfo", "-u", "-g", "-d", "-t", "-r", "example.net").stdout == (
        f"4242\n4343\n{net}\n1\nexample.net\n")
    assert ok(tree, "vdominfo", "-t", "-n", "example.org").stdout == "example.org\n2\nalias: alias.test\n"
    assert ok(tree, "vdominfo", "-r", "alias.test").stdout == "example.org\nalias: alias.test\n"
    assert ok(tree, "vdominfo", "-n", "-a", "example.net").stdout == (
        f"domain: example.net\nuid:    4242\ngid:    4343\ndir:    {net}\nusers:  1\n")
    assert ok(tree, "vdominfo", "-a", "-d", "example.org").stdout == f"{org}\nalias: alias.test\n"


def test_vdominfo_only_reads(tree: Tree) -> None:
    """vpopmail's vdominfo wrote each domain's hashing state back (close_big_dir): ours writes nothing."""
    from vpop import admin

    admin.add_domain(tree.settings(), "example.org", 89, 89)  # no postmaster, no .dir-control
    before = snapshot(tree.root)
    assert ok(tree, "vdominfo").stdout.endswith("users:  0\n\n")
    assert ok(tree, "vdominfo", "-t", "example.org").stdout == "0\n"
    assert snapshot(tree.root) == before and not (tree.domain_dir("example.org") / ".dir-control").exists()


def test_vdominfo_without_users_assign(tree: Tree) -> None:
    text = "Can't get domain entries - can't read users/assign file\n"
    done = run(tree, "vdominfo")
    assert (done.returncode, done.stdout) == (255, text)
    done = run(tree, "vdominfo", "example.org")
    assert (done.returncode, done.stdout) == (219, text)
    done = run(tree, "vdeldomain", "example.org")
    assert (done.returncode, done.stdout) == (219, "Error: " + text)
    (tree.qmail_home / "users" / "assign").write_text(".\n")
    assert ok(tree, "vdominfo").stdout == ""  # vpopmail: "What now - Success"


# ------------------------------------------------------------------------------------------------
# qmail-send is told


HUP_RECORDER = """
import os, signal, sys, time
log = sys.argv[1]
def hup(number, frame):
    with open(log, "a") as handle:
        handle.write("HUP\\n")
signal.signal(signal.SIGHUP, hup)
print("ready", flush=True)
while True:
    time.sleep(1)
"""


def start_recorder(argv0: str, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    """A real process named ``argv0`` (as ``ps`` shows it) that writes a line for every SIGHUP."""
    proc = subprocess.Popen([argv0, "-c", HUP_RECORDER, str(log), *extra], executable="/usr/bin/python3",
                            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    return proc


def hups(log: Path, expected: int, wait: float = 5) -> int:
    """The HUPs recorded, once ``expected`` arrived (or after ``wait`` seconds)."""
    deadline = time.monotonic() + wait
    while True:
        count = log.read_text().count("HUP") if log.exists() else 0
        if count >= expected or time.monotonic() > deadline:
            return count
        time.sleep(0.02)


def test_qmail_send_gets_a_hup(tree: Tree) -> None:
    name = f"qs-{secrets.token_hex(4)}"
    log, decoy_log = tree.root / "hups", tree.root / "decoy-hups"
    send = start_recorder(name, log)
    decoys = [start_recorder("supervise", decoy_log, name), start_recorder(f"x{name}", decoy_log)]
    try:
        tree.write_settings(qmail_send_signal=name)  # the processes named so, as vpopmail's signal_process
        ok(tree, "vadddomain", "example.org", PASSWORD)
        assert hups(log, 1) == 1
        ok(tree, "vaddaliasdomain", "example.org", "alias.test")
        assert hups(log, 2) == 2
        ok(tree, "vadddomain", "-O", "example.net", PASSWORD)  # bulk: the last one tells qmail-send
        ok(tree, "vdeldomain", "-f", "example.org")
        assert hups(log, 3) == 3
        tree.write_settings(qmail_send_signal="none")
        ok(tree, "vdeldomain", "example.net")
        assert hups(log, 4, wait=0.5) == 3
        pidfile = tree.root / "qmail-send.pid"
        pidfile.write_text(f"{send.pid}\n")
        tree.write_settings(qmail_send_signal=pidfile)
        ok(tree, "vadddomain", "example.org", PASSWORD)
        assert hups(log, 4) == 4
        pidfile.unlink()
        done = ok(tree, "vdeldomain", "example.org")
        assert done.stderr == f"Warning: qmail-send not told: {pidfile}: no such file\n"
        assert hups(log, 5, wait=0.5) == 4
        assert not decoy_log.exists() and all(decoy.poll() is None for decoy in decoys)
    finally:
        for proc in (send, *decoys):
            proc.kill()
            proc.wait()


def test_the_setting_is_checked() -> None:
    from vpop.config import parse_settings
    from vpop.errors import ConfigError

    assert parse_settings("", "x").qmail_send_signal == "qmail-send"
    for value in ("none", "/run/qmail-send.pid", "qmail-send"):
        assert parse_settings(f"qmail_send_signal = {value}\n", "x").qmail_send_signal == value
    for value in ("qmail send", "run/pid", "q;x"):
        with pytest.raises(ConfigError, match="qmail_send_signal"):
            parse_settings(f"qmail_send_signal = {value}\n", "x")


# ------------------------------------------------------------------------------------------------
# faults: kill -9, stale files, links


def whole(tree: Tree) -> set[str]:
    """Every qmail file parses as qmail reads it (none is half-written); the domains users/assign has."""
    entries = assignments(tree) if (tree.qmail_home / "users" / "assign").exists() else {}
    cdb = users_cdb(tree) if (tree.qmail_home / "users" / "cdb").exists() else None
    if cdb is not None:
        cdb.items()
    assert set(virtualdomains(tree)) <= {"example.org"}
    assert set(control(tree, "rcpthosts") or []) <= {"example.org"}
    names = {local[:-1] for (_kind, local) in entries}
    for name in names:  # a domain half-deleted has lost files, but none is half-written
        home = Path(entries[("+", name + "-")].home)
        if (home / ".qmail-default").exists():
            assert (home / ".qmail-default").read_text().endswith(" bounce-no-mailbox\n")
        if tree.db is None and (home / "vpasswd").exists():
            for line in (home / "vpasswd").read_text().split("\n"):
                assert line == "" or line.count(":") == 7
    return names


def complete(tree: Tree) -> None:
    assert whole(tree) == {"example.org"}
    assert lspawn_lookup(users_cdb(tree), "example.org-x") is not None
    assert virtualdomains(tree) == {"example.org": "example.org"}
    assert control(tree, "rcpthosts") == ["example.org"]
    assert not (tree.domain_dir("example.org") / MARK).exists()
    assert store_users(tree) == ["postmaster"]


def gone(tree: Tree) -> None:
    assert whole(tree) == set()
    assert virtualdomains(tree) == {} and control(tree, "rcpthosts") == []
    assert not tree.domain_dir("example.org").exists() and store_users(tree) == []


def killed(tree: Tree, delay: float, *args: str) -> None:
    """The installed command, killed with SIGKILL after ``delay`` seconds (if still running)."""
    env = {"PATH": "/usr/bin:/bin", "VPOP_CONFIG": str(tree.config), **faked_time_environ()}
    proc = subprocess.Popen([program(args[0]), *args[1:]], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.mark.parametrize("store", ["cdb", "mysql"])
def test_kill_9_leaves_whole_files_and_a_second_run_finishes(request: pytest.FixtureRequest,
                                                             store: str) -> None:
    site = make_tree(request, store)
    try:
        started = time.monotonic()
        ok(site, "vadddomain", "example.org", PASSWORD)
        add_time = time.monotonic() - started
        started = time.monotonic()
        ok(site, "vdeldomain", "example.org")
        del_time = time.monotonic() - started
        rng = random.Random(4242)
        for _ in range(20):
            # most of a vadddomain's time is the interpreter's start and the postmaster's hash: the
            # kills fall in its first half (before, inside and after the domain's own steps)
            killed(site, rng.uniform(0.0, 0.5) * add_time, "vadddomain", "example.org", PASSWORD)
            whole(site)
            done = run(site, "vadddomain", "example.org", PASSWORD)
            assert done.returncode in (0, 243), done.stdout + done.stderr
            complete(site)
            killed(site, rng.uniform(0.0, 1.0) * del_time, "vdeldomain", "example.org")
            whole(site)
            done = run(site, "vdeldomain", "example.org")
            assert done.returncode in (0, 245), done.stdout + done.stderr
            gone(site)
        ok(site, "vadddomain", "example.org", PASSWORD)
        assert login(site, "postmaster@example.org")[0].returncode == 0
    finally:
        site.close()


def test_a_vadddomain_killed_after_its_commit_is_finished_by_the_next(site: Tree) -> None:
    """The mark a vadddomain leaves until its postmaster is made (here: a domain made by the library,
    which makes none, given the mark by hand): the next vadddomain makes the postmaster."""
    from vpop import admin

    admin.add_domain(site.settings(), "example.org", 89, 89)
    (site.domain_dir("example.org") / MARK).touch()
    assert login(site, "postmaster@example.org")[0].returncode == 1
    ok(site, "vadddomain", "example.org", PASSWORD)
    assert not (site.domain_dir("example.org") / MARK).exists()
    assert login(site, "postmaster@example.org")[0].returncode == 0
    assert run(site, "vadddomain", "example.org", PASSWORD).returncode == 243


def test_a_users_cdb_older_than_users_assign_is_compiled_again(tree: Tree) -> None:
    ok(tree, "vadddomain", "example.net", PASSWORD)
    stale = (tree.qmail_home / "users" / "cdb").read_bytes()
    ok(tree, "vadddomain", "example.org", PASSWORD)
    cdb = tree.qmail_home / "users" / "cdb"
    cdb.write_bytes(stale)  # killed between the rename of users/assign and that of users/cdb
    os.utime(cdb, ns=(1, 1))
    assert lspawn_lookup(users_cdb(tree), "example.org-x") is None
    ok(tree, "vaddaliasdomain", "example.net", "alias.test")
    assert lspawn_lookup(users_cdb(tree), "example.org-x") is not None
    assert lspawn_lookup(users_cdb(tree), "alias.test-x") is not None


def as_vpopmail(*argv: str | Path) -> None:
    subprocess.run([str(arg) for arg in argv], check=True, user=VPOPMAIL_UID, group=VPOPMAIL_GID,
                   extra_groups=[VPOPMAIL_GID], timeout=30)


def test_root_never_follows_what_uid_89_plants(tree: Tree) -> None:
    """~vpopmail/domains is uid 89's: a link planted where the domain or its hash directory goes is
    refused, never followed (vpopmail's r_mkdir and r_chown followed it)."""
    ok(tree, "vadddomain", "example.net", PASSWORD)  # domains/ is 89's now
    target = tree.root / "target"
    target.mkdir()
    as_vpopmail("ln", "-s", target, tree.domains / "example.org")
    before = snapshot(tree.root)
    done = run(tree, "vadddomain", "example.org", PASSWORD)
    assert done.returncode == 242 and done.stdout.startswith("Error: Could not make domain dir")
    assert list(target.iterdir()) == [] and snapshot(tree.root) == before
    (tree.domains / "example.org").unlink()
    (tree.domains / ".dir-control").write_text(dir_control(99))
    os.chown(tree.domains / ".dir-control", 89, 89)
    as_vpopmail("ln", "-s", target, tree.domains / "0")
    done = run(tree, "vadddomain", "example.org", PASSWORD)
    assert done.returncode == 242 and done.stdout.startswith("Error: Could not make domain dir")
    assert list(target.iterdir()) == [] and ("+", "example.org-") not in assignments(tree)
    assert (tree.domains / ".dir-control").read_text().split("\n")[0] == "99"  # the count given back


def test_an_existing_directory_is_used_only_when_a_killed_vadddomain_left_it(tree: Tree) -> None:
    shell = tree.domains / "example.org"
    shell.mkdir()
    (shell / ".qmail-default").write_text("| half\n")
    (shell / "vpasswd").write_text("")
    (shell / ".qmail-default.tmp.4242").write_text("| ha")
    ok(tree, "vadddomain", "example.org", PASSWORD)
    assert sorted(p.name for p in shell.iterdir()) == [
        ".dir-control", ".dir-control.lock", ".qmail-default", ".vpasswd.lock", "postmaster", "vpasswd",
        "vpasswd.cdb"]
    old = tree.domains / "example.net"
    (old / "bob" / "Maildir" / "new").mkdir(parents=True)
    (old / "bob" / "Maildir" / "new" / "1.msg").write_text("old mail\n")
    before = snapshot(tree.root)
    done = run(tree, "vadddomain", "example.net", PASSWORD)
    assert (done.returncode, done.stdout) == (
        242, f"Error: Could not make domain dir ({old} exists and holds bob)\n")
    assert snapshot(tree.root) == before


def test_vdeldomain_removes_only_a_directory_named_after_the_domain(tree: Tree) -> None:
    from vpop.assign import write_users_cdb

    ok(tree, "vadddomain", "example.org", PASSWORD)
    assign = tree.qmail_home / "users" / "assign"
    for bad in ("/", str(tree.root), f"{tree.domains}/../domains/example.org", "domains/example.org"):
        assign.write_text(f"+example.org-:example.org:89:89:{bad}:-::\n.\n")
        write_users_cdb(str(tree.qmail_home))  # as qmail-newu would, after the edit
        before = snapshot(tree.root)
        done = run(tree, "vdeldomain", "example.org")
        assert done.returncode == 255 and done.stdout.startswith(f"Error: refusing to remove {bad!r}")
        assert snapshot(tree.root) == before


def test_the_demo_uses_the_installed_vadddomain() -> None:
    """README's quick start: scripts/demo.py creates its domain with vadddomain, as an operator."""
    demo = Path(__file__).resolve().parent.parent / "scripts" / "demo.py"
    done = subprocess.run([sys.executable, "-I", str(demo)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "$ vadddomain example.com" in done.stdout and done.stdout.rstrip().endswith("demo OK")


def test_one_process_sees_users_cdb_change_at_once(tmp_path: Path) -> None:
    """vpop.assign remembers what it found in users/cdb by the file's identity (vlookupd asks it for
    every login): a domain added, moved or removed by qmail-newu is seen on the next lookup."""
    from vpop import assign

    qmail = tmp_path / "qmail"
    (qmail / "users").mkdir(parents=True)

    def newu(*lines: str) -> None:
        (qmail / "users" / "assign").write_text("".join(lines) + ".\n")
        assign.write_users_cdb(str(qmail))

    newu("+one.test-:one.test:89:89:/d/one.test:-::\n")
    assert assign.lookup(str(qmail), "one.test").dir == "/d/one.test"
    assert assign.lookup(str(qmail), "two.test") is None
    newu("+one.test-:one.test:89:89:/e/one.test:-::\n", "+two.test-:two.test:89:89:/d/two.test:-::\n")
    assert assign.lookup(str(qmail), "one.test").dir == "/e/one.test"
    assert assign.lookup(str(qmail), "two.test").dir == "/d/two.test"
    found = assign.lookup(str(qmail), "two.test")
    found.dir = "/changed/by/the/caller"
    assert assign.lookup(str(qmail), "two.test").dir == "/d/two.test"  # a fresh record each time
    newu("+two.test-:two.test:89:89:/d/two.test:-::\n")
    assert assign.lookup(str(qmail), "one.test") is None
