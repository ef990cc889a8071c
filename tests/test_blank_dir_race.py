"""Two first deliveries (or a delivery and a login) to a user whose ``pw_dir`` is blank, at once.

At a hashed-directory boundary the two pick different directories (the 99th user goes in the
domain directory, the 100th in ``0/``).  Writing ``pw_dir`` is compare-and-set, so the loser
delivers into the winner's directory and removes its own: no message may lie in a directory
that nothing points to.  Real vdelivermail and vchkpw processes, started together, as uid 89
(deliveries) and root (logins); CDB files and a real MariaDB.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from helpers import VPOPMAIL_GID, VPOPMAIL_UID, fd3_payload
from tree import Tree, load_schema, mysql_rows

ROUNDS = 8
CONTROL_AT_98 = "98\n0\n3\n0 0 0\n61 61 61\n0 2 4\n0 0 0\n\n"


@pytest.fixture(params=["cdb", "mysql"])
def tree(request: pytest.FixtureRequest) -> Iterator[Tree]:
    if request.param == "mysql":
        db = request.getfixturevalue("mysql_db")
        load_schema(db)
        with Tree(store="mysql") as t:
            # uid 89 delivers: it reads the credentials and reaches the server over TCP
            os.chown(t.write_mysql_credentials(db, tcp=True), VPOPMAIL_UID, VPOPMAIL_GID)
            t.db = db
            t.domain_path = t.add_domain("example.com")
            yield t
    else:
        with Tree() as t:
            t.db = None
            t.domain_path = t.add_domain("example.com")
            yield t


def at_98(tree: Tree) -> None:
    """The domain's hashing state after its 98th user: the next two go to the domain dir and 0/."""
    if tree.db is not None:  # vpopmail's dir_control table on the MySQL store
        mysql_rows(tree.db, "REPLACE INTO dir_control (domain, cur_users, level_cur, level_max, "
                   "level_start0, level_start1, level_start2, level_end0, level_end1, level_end2, "
                   "level_mod0, level_mod1, level_mod2, level_index0, level_index1, level_index2, the_dir) "
                   "VALUES "
                   "('example.com', 98, 0, 3, 0, 0, 0, 61, 61, 61, 0, 2, 4, 0, 0, 0, '')")
    else:
        (tree.domain_path / ".dir-control").write_text(CONTROL_AT_98)


def stored_dir(tree: Tree, name: str) -> str:
    if tree.db is not None:
        [(pw_dir,)] = mysql_rows(tree.db, "SELECT pw_dir FROM vpopmail WHERE pw_name = %s", (name,))
        return pw_dir
    [line] = [e for e in (tree.domain_path / "vpasswd").read_text().splitlines() if e.startswith(name + ":")]
    return line.split(":")[5]


def messages(user_dir: Path) -> list[bytes]:
    new = user_dir / "Maildir" / "new"
    return sorted(p.read_bytes().split(b"\n\n", 1)[1] for p in new.iterdir()) if new.is_dir() else []


def candidates(tree: Tree, name: str) -> list[Path]:
    return [path for path in (tree.domain_path / name, tree.domain_path / "0" / name) if path.exists()]


def test_concurrent_first_deliveries_lose_nothing(tree: Tree) -> None:
    with ThreadPoolExecutor(2) as pool:
        for n in range(ROUNDS):
            name = f"race{n}"
            tree.add_user("example.com", name, "secret", blank_dir=True)
            at_98(tree)
            bodies = [f"first {n}\n".encode(), f"second {n}\n".encode()]
            runs = [pool.submit(tree.deliver, f"{name}@example.com", b"Subject: race\n\n" + body)
                    for body in bodies]
            for run in runs:
                done = run.result()
                assert (done.returncode, done.stdout) == (0, b""), done.stdout
            winner = Path(stored_dir(tree, name))
            assert candidates(tree, name) == [winner], f"round {n}: a directory nothing points to"
            assert messages(winner) == sorted(bodies), f"round {n}"


def test_a_login_and_a_delivery_agree_on_the_directory(tree: Tree) -> None:
    with ThreadPoolExecutor(2) as pool:
        for n in range(ROUNDS):
            name = f"both{n}"
            tree.add_user("example.com", name, "secret", blank_dir=True)
            at_98(tree)
            login = pool.submit(tree.login, fd3_payload(f"{name}@example.com", "secret", b"<1.2@x>"))
            delivery = pool.submit(tree.deliver, f"{name}@example.com", b"Subject: race\n\nbody\n")
            (done, record), delivered = login.result(), delivery.result()
            assert done.returncode == 0 and record is not None, done.stderr
            assert delivered.returncode == 0, delivered.stdout
            winner = Path(stored_dir(tree, name))
            assert record["cwd"] == str(winner), f"round {n}: the session is in another directory"
            assert candidates(tree, name) == [winner], f"round {n}"
            assert messages(winner) == [b"body\n"]


def test_the_winner_is_kept_when_the_row_is_already_filled(tree: Tree) -> None:
    """The compare-and-set itself: a filled pw_dir is never overwritten by a later first delivery."""
    from vpop.assign import lookup
    from vpop.config import load_settings
    from vpop.stores import open_store

    record = tree.add_user("example.com", "carol", "secret", blank_dir=True)
    os.environ["VPOP_CONFIG"] = str(tree.config)
    try:
        store = open_store(load_settings())
        domain = lookup(str(tree.qmail_home), "example.com")
        first = str(tree.domain_path / "carol")
        assert store.set_user_dir(record, domain, first) == first
        record.dir = ""
        assert store.set_user_dir(record, domain, str(tree.domain_path / "0" / "carol")) == first
        assert record.dir == first and stored_dir(tree, "carol") == first
        store.close()
    finally:
        del os.environ["VPOP_CONFIG"]
