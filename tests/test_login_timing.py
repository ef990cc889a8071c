"""An unknown user or domain costs what a wrong password costs (no name probing by timing).

Measured as the CPU time of the real vchkpw processes (``RUSAGE_CHILDREN``), which counts work
done rather than wall time: bcrypt at cost 12 is a quarter of a second of CPU on any machine,
an unknown user without the dummy check a few milliseconds (margins of 40% and more, never a
close call).  The database's share is counted on the server instead (connections, queries).
``make bench`` has the medians.
"""

from __future__ import annotations

import resource
import statistics
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from helpers import fd3_payload
from tree import Tree, load_schema
from vpop.passwords import make_hash

RUNS = 3


def cpu_seconds(action: Callable[[], Any]) -> float:
    """Median CPU time (user + system) of the child processes ``action`` runs and waits for."""
    samples = []
    for _ in range(RUNS):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        action()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        samples.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(samples)


def refused(tree: Tree, login: str, password: str = "wrong") -> Callable[[], None]:
    def run() -> None:
        done, record = tree.login(fd3_payload(login, password, b"<1.2@pop.example.com>"))
        assert done.returncode == 1 and record is None, done.stderr
    return run


@pytest.fixture
def bcrypt_tree() -> Iterator[Tree]:
    with Tree(password_scheme="bcrypt") as t:
        t.add_domain("example.com")
        t.add_user("example.com", "bob", "secret", passwd=make_hash("secret", "bcrypt"))
        yield t


def test_unknown_names_cost_a_bcrypt_check(bcrypt_tree: Tree) -> None:
    wrong = cpu_seconds(refused(bcrypt_tree, "bob@example.com"))
    assert wrong > 0.1, f"bcrypt cost 12 took {wrong:.3f} s of CPU: not the hash this test needs"
    for login in ("nobody@example.com", "bob@unknown.example"):
        unknown = cpu_seconds(refused(bcrypt_tree, login))
        assert unknown > 0.6 * wrong, f"{login}: {unknown:.3f} s against {wrong:.3f} s for a wrong password"


def test_a_refusal_without_a_password_spends_nothing(bcrypt_tree: Tree) -> None:
    """No password, nothing to compare: the null-password refusal stays cheap."""
    wrong = cpu_seconds(refused(bcrypt_tree, "bob@example.com"))

    def null_password() -> None:
        done, _ = bcrypt_tree.login(fd3_payload("nobody@example.com", "", b""))
        assert done.returncode == 1
    assert cpu_seconds(null_password) < 0.5 * wrong


@pytest.fixture
def mysql_tree(mysql_db: dict[str, Any]) -> Iterator[Tree]:
    load_schema(mysql_db)
    with Tree(store="mysql", mysql=mysql_db, password_scheme="md5-crypt") as t:
        t.add_domain("example.com")
        t.add_user("example.com", "bob", "secret", hash_method="md5")
        yield t


def server_counts(db: dict[str, Any]) -> tuple[int, int]:
    """The server's (Connections, Com_select) counters, read as root."""
    import pymysql

    conn = pymysql.connect(autocommit=True, **db["root"])
    with conn, conn.cursor() as cur:
        cur.execute("SHOW GLOBAL STATUS WHERE Variable_name IN ('Connections', 'Com_select')")
        found = dict(cur.fetchall())
    return int(found["Connections"]), int(found["Com_select"])


def test_an_unknown_domain_on_mysql_costs_a_database_lookup(mysql_tree: Tree,
                                                            mysql_db: dict[str, Any]) -> None:
    """Counted on the server, not timed: an unknown domain (not in users/assign) connects and asks
    one query, as an unknown user does (the reading of our own counters is one connection)."""
    def cost(login: str) -> tuple[int, int]:
        before = server_counts(mysql_db)
        refused(mysql_tree, login)()
        after = server_counts(mysql_db)
        return after[0] - before[0] - 1, after[1] - before[1]

    assert cost("nobody@example.com") == cost("bob@unknown.example") == (1, 1)
