"""Input that crashed the programs in a fuzzing run ("internal error", a user deferred for ever).

Numbers are read as bounded ASCII digits; a damaged file is a damaged file: 111 with a message
that names it (and never quotes a password).  Real vchkpw and vdelivermail runs, real files and
a real MariaDB row.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import VPOPMAIL_GID, VPOPMAIL_UID, fd3_payload
from tree import REMOTE_IP, Tree, load_schema, mysql_rows
from vpop.config import parse_settings
from vpop.errors import ConfigError
from vpop.files import write_cdb

PASSWORD = "secret"
MESSAGE = b"Subject: t\n\nx\n"


@pytest.fixture
def tree() -> Iterator[Tree]:
    with Tree(logging="y") as t:
        t.domain_path = t.add_domain("example.com")
        t.bob = t.add_user("example.com", "bob", PASSWORD)
        yield t


def login(tree: Tree, **env: str):
    return tree.login(fd3_payload("bob@example.com", PASSWORD, b"<1.2@pop.example.com>"), **env)


@pytest.mark.parametrize("port", ["²", "١١٠", "1" * 5000, "-110", "110 ", "65536", "0x6e"])
def test_a_local_port_that_is_not_a_port_is_port_0(tree: Tree, port: str) -> None:
    done, record = login(tree, TCPLOCALPORT=port)
    assert done.returncode == 0 and record is not None, done.stderr
    assert tree.syslog_lines() == [f"vchkpw-0: (PLAIN) login success bob@example.com:{REMOTE_IP}"]


def _vpasswd_line(tree: Tree, hash_field: bytes) -> bytes:
    return b"bob:" + hash_field + f":1:0:Bob:{tree.bob.dir}:NOQUOTA:secret".encode()


@pytest.mark.parametrize("hash_field", [b"$1$abcdefgh$\x00rest", b"$1$abcdefgh$\xff\xfe",
                                        b"{PLAIN}se\x00cret"])
@pytest.mark.parametrize("where", ["vpasswd", "vpasswd.cdb"])
def test_a_damaged_password_field_is_111_naming_the_file(tree: Tree, hash_field: bytes, where: str) -> None:
    vpasswd, cdb = tree.domain_path / "vpasswd", tree.domain_path / "vpasswd.cdb"
    line = _vpasswd_line(tree, hash_field)
    vpasswd.write_bytes(line + b"\n")
    if where == "vpasswd":
        cdb.unlink()
    else:
        write_cdb(str(cdb), [(b"bob", line[4:])])
        os.utime(vpasswd, (1, 1))  # the cdb is the newer: it is what is read
    done, record = login(tree)
    assert done.returncode == 111 and record is None
    assert f"{vpasswd}: damaged entry for bob".encode() in done.stderr, done.stderr
    (logged,) = tree.syslog_lines()
    assert f"{vpasswd}: damaged entry for bob" in logged and "internal error" not in logged
    assert b"secret" not in done.stderr and "secret" not in logged
    # mail for the same user is not held up by its password field
    assert tree.deliver("bob@example.com", MESSAGE).returncode == 0


@pytest.mark.parametrize("size", [0, 100, 2047])
def test_a_short_vpasswd_cdb_is_111_naming_it(tree: Tree, size: int) -> None:
    cdb = tree.domain_path / "vpasswd.cdb"
    cdb.write_bytes(b"\x01" * size)
    done, record = login(tree)
    assert done.returncode == 111 and record is None
    assert f"cannot read {cdb}: ".encode() in done.stderr and b"internal error" not in done.stderr
    done = tree.deliver("bob@example.com", MESSAGE)
    assert done.returncode == 111 and str(cdb).encode() in done.stdout


def test_a_short_users_cdb_is_111_naming_it(tree: Tree) -> None:
    users_cdb = tree.qmail_home / "users" / "cdb"
    users_cdb.write_bytes(b"\x00" * 1000)
    done, record = login(tree)
    assert done.returncode == 111 and record is None
    assert f"cannot read {users_cdb}: damaged cdb".encode() in done.stderr


@pytest.mark.parametrize("uid", [b"99999999999999999999", b"4294967295", b"\xc2\xb2", b"-1", b""])
def test_a_bad_uid_in_users_assign_is_111_naming_the_file(tree: Tree, uid: bytes) -> None:
    (tree.qmail_home / "users" / "cdb").unlink()
    assign = tree.qmail_home / "users" / "assign"
    assign.write_bytes(b"+example.com-:example.com:" + uid + b":89:" + str(tree.domain_path).encode()
                       + b":-::\n.\n")
    done, record = login(tree)
    assert done.returncode == 111 and record is None
    assert f"{assign}: damaged entry for example.com".encode() in done.stderr, done.stderr
    assert b"internal error" not in done.stderr


@pytest.mark.parametrize("value", ["²", "1" * 5000, "-1", "1e3", "0x10", "1_000", "1000000000"])
def test_a_setting_that_is_not_a_bounded_number_names_file_and_line(value: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_settings(f"# comment\nrelay_clear_minutes = {value}\n", "/etc/vpop/vpop.conf")
    assert info.value.message.startswith("/etc/vpop/vpop.conf:2: bad value for 'relay_clear_minutes'")


# ------------------------------------------------------------------------------------------------
# A pw_dir outside the domains


@pytest.fixture
def sql_tree(mysql_db: dict[str, Any]) -> Iterator[Tree]:
    load_schema(mysql_db)
    with Tree(store="mysql", logging="y") as t:
        os.chown(t.write_mysql_credentials(mysql_db, tcp=True), VPOPMAIL_UID, VPOPMAIL_GID)
        t.db = mysql_db
        t.domain_path = t.add_domain("example.com")
        t.bob = t.add_user("example.com", "bob", PASSWORD)
        yield t


@pytest.mark.parametrize("bad", ["{root}/elsewhere/bob", "{domains}/../elsewhere/bob", "relative/bob",
                                 "{domains}x/bob"])
def test_a_row_pointing_outside_the_domains_gets_no_mail(sql_tree: Tree, bad: str) -> None:
    tree = sql_tree
    outside = tree.root / "elsewhere" / "bob"
    (outside / "Maildir").mkdir(parents=True)
    for sub in ("cur", "new", "tmp"):
        (outside / "Maildir" / sub).mkdir()
    os.chown(outside.parent, VPOPMAIL_UID, VPOPMAIL_GID)
    pw_dir = bad.format(root=tree.root, domains=tree.domains)
    mysql_rows(tree.db, "UPDATE vpopmail SET pw_dir = %s WHERE pw_name = 'bob'", (pw_dir,))
    done = tree.deliver("bob@example.com", MESSAGE)
    assert done.returncode == 111
    assert f"user directory {pw_dir} is outside {tree.domains}".encode() in done.stdout, done.stdout
    assert list((outside / "Maildir" / "new").iterdir()) == []
    done, record = login(tree)
    assert done.returncode == 111 and record is None
    assert any("is outside" in line for line in tree.syslog_lines())


def test_user_dir_roots_lets_a_site_use_other_places(sql_tree: Tree) -> None:
    tree = sql_tree
    other = tree.root / "mail2"
    for path in (other, other / "bob", other / "bob" / "Maildir",
                 *(other / "bob" / "Maildir" / sub for sub in ("cur", "new", "tmp"))):
        path.mkdir()
        os.chown(path, VPOPMAIL_UID, VPOPMAIL_GID)  # made by the site: re-creation is only below a domain
    mysql_rows(tree.db, "UPDATE vpopmail SET pw_dir = %s WHERE pw_name = 'bob'", (str(other / "bob"),))
    tree.write_settings(user_dir_roots=f"/nonexistent {other}")
    done = tree.deliver("bob@example.com", MESSAGE)
    assert done.returncode == 0, done.stdout
    assert len(list(Path(other, "bob", "Maildir", "new").iterdir())) == 1
    done, record = login(tree)
    assert done.returncode == 0 and record["cwd"] == str(other / "bob")
