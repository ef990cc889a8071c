"""Where a side-by-side run with vpopmail 5.4.33 found us different: matched, or named and held.

Real vchkpw and vdelivermail processes, real fds, files and rows.  The README's list "Where we
differ from the C programs" and ``shared/reference/differences.md`` name each kept difference.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import VPOPMAIL_GID, VPOPMAIL_UID, fd3_payload
from tree import Tree, load_schema, mysql_rows

PASSWORD = "secret"
MESSAGE = b"Subject: t\n\nhello\n"


@pytest.fixture
def tree() -> Iterator[Tree]:
    with Tree(logging="y") as t:
        t.domain_path = t.add_domain("example.com")
        t.bob = t.add_user("example.com", "bob", PASSWORD)
        yield t


def login(tree: Tree, **env: str | None):
    return tree.login(fd3_payload("bob@example.com", PASSWORD, b"<1.2@pop.example.com>"), **env)


def test_the_session_variables_come_in_vpopmail_s_order(tree: Tree) -> None:
    done, record = login(tree)
    assert done.returncode == 0, done.stderr
    names = [name for name in record["env"] if name in ("USER", "HOME", "SHELL", "VPOPUSER")]
    assert names == ["USER", "HOME", "SHELL", "VPOPUSER"]
    assert list(record["env"])[-4:] == names, "new variables are appended, as setenv(3) does"


def test_an_inherited_user_keeps_its_place_as_setenv_does(tree: Tree) -> None:
    from helpers import program

    env = {"USER": "root", **tree.env(), "HOME": "/root"}  # USER first, HOME last, as inherited
    out = tree.record_path()
    done = tree.run([program("vchkpw"), tree.recorder, str(out)],
                    fd3_payload("bob@example.com", PASSWORD, b"<1.2@pop.example.com>"), env)
    assert done.returncode == 0, done.stderr
    from tree import read_record

    record = read_record(out)
    inherited = [name for name in env if name in record["env"]]
    assert list(record["env"])[:len(inherited)] == inherited, "replaced in place, not moved"
    assert list(record["env"])[len(inherited):] == ["SHELL", "VPOPUSER"], "new ones appended in order"
    assert (record["env"]["USER"], record["env"]["HOME"]) == ("bob", tree.bob.dir)


def test_rpline_unset_builds_the_return_path_from_sender(tree: Tree) -> None:
    """vpopmail writes the text "(null)" before Delivered-To when RPLINE is unset (printf of NULL)
    and forwards with qmail-inject's default sender; we build Return-Path from SENDER."""
    done = tree.deliver("bob@example.com", MESSAGE, env={"RPLINE": None}, sender="carol@example.org")
    assert (done.returncode, done.stdout) == (0, b"")
    (path,) = Path(tree.bob.dir, "Maildir", "new").iterdir()
    assert path.read_bytes() == (b"Return-Path: <carol@example.org>\nDelivered-To: bob@example.com\n"
                                 + MESSAGE)
    assert b"(null)" not in path.read_bytes()


def test_a_blank_pw_dir_on_the_cdb_store_is_created_not_bounced(tree: Tree) -> None:
    """vpopmail's CDB build bounces ("Auto re-creation of maildir failed. (#5.9.9)"); we deliver."""
    tree.add_user("example.com", "carol", PASSWORD, blank_dir=True)
    done = tree.deliver("carol@example.com", MESSAGE)
    assert (done.returncode, done.stdout) == (0, b"")
    assert len(list((tree.domain_path / "carol" / "Maildir" / "new").iterdir())) == 1


# ------------------------------------------------------------------------------------------------
# vpopmail's dir_control table on the MySQL store


@pytest.fixture
def sql_tree(mysql_db: dict[str, Any]) -> Iterator[Tree]:
    load_schema(mysql_db)
    with Tree(store="mysql") as t:
        os.chown(t.write_mysql_credentials(mysql_db, tcp=True), VPOPMAIL_UID, VPOPMAIL_GID)
        t.db = mysql_db
        t.domain_path = t.add_domain("example.com")
        yield t


def dir_control(tree: Tree) -> tuple[Any, ...]:
    (row,) = mysql_rows(tree.db, "SELECT cur_users, level_cur, level_index0, level_index1, level_index2, "
                                 "the_dir FROM dir_control WHERE domain = 'example.com'")
    return row


def test_mysql_keeps_the_hashing_state_in_dir_control(sql_tree: Tree) -> None:
    tree = sql_tree
    for n in range(1, 4):
        record = tree.add_user("example.com", f"user{n}", PASSWORD)
        assert record.dir == str(tree.domain_path / f"user{n}")
        assert dir_control(tree) == (n, 0, 0, 0, 0, "")
    assert not (tree.domain_path / ".dir-control").exists(), "no file state beside the table"
    mysql_rows(tree.db, "UPDATE dir_control SET cur_users = 99 WHERE domain = 'example.com'")
    record = tree.add_user("example.com", "hundredth", PASSWORD)
    assert record.dir == str(tree.domain_path / "0" / "hundredth")
    assert dir_control(tree) == (100, 1, 0, 0, 0, "0")
    # a blank pw_dir filled at delivery advances the same row
    tree.add_user("example.com", "carol", PASSWORD, blank_dir=True)
    done = tree.deliver("carol@example.com", MESSAGE)
    assert (done.returncode, done.stdout) == (0, b"")
    (pw_dir,) = mysql_rows(tree.db, "SELECT pw_dir FROM vpopmail WHERE pw_name = 'carol'")[0]
    assert pw_dir == str(tree.domain_path / "0" / "carol") and dir_control(tree)[0] == 101


def test_dir_control_is_created_when_missing(sql_tree: Tree) -> None:
    tree = sql_tree
    mysql_rows(tree.db, "DROP TABLE dir_control")
    tree.add_user("example.com", "carol", PASSWORD, blank_dir=True)
    done = tree.deliver("carol@example.com", MESSAGE)
    assert (done.returncode, done.stdout) == (0, b"")
    assert dir_control(tree)[0] == 1


def test_a_freed_path_is_used_first_and_counted(sql_tree: Tree) -> None:
    tree = sql_tree
    tree.add_user("example.com", "first", PASSWORD)
    (tree.domain_path / ".dir_control_free").write_text("# freed by vdeluser\nZ\n")
    record = tree.add_user("example.com", "second", PASSWORD)
    assert record.dir == str(tree.domain_path / "Z" / "second")
    assert dir_control(tree)[0] == 2
    assert (tree.domain_path / ".dir_control_free").read_text() == "# freed by vdeluser\n"


def test_concurrent_new_users_get_distinct_counts(sql_tree: Tree) -> None:
    from concurrent.futures import ThreadPoolExecutor

    tree = sql_tree
    for n in range(12):
        tree.add_user("example.com", f"blank{n}", PASSWORD, blank_dir=True)
    with ThreadPoolExecutor(4) as pool:
        runs = [pool.submit(tree.deliver, f"blank{n}@example.com", MESSAGE) for n in range(12)]
        assert all(run.result().returncode == 0 for run in runs)
    assert dir_control(tree)[0] == 12
