"""vlookupd under load: 16 clients at once for 2,000 logins through the installed vchkpw.

Every answer is checked (a wrong password every tenth login, refused; the others exec'd as the
user in its directory); the database's ``Threads_connected`` is sampled all along and never goes
beyond the daemon's workers (one connection each) plus the sampling connection; the daemon's
resident memory after the run is what it was after the first logins.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pymysql
from helpers import fd3_payload
from lookupd import Daemon
from tree import Tree, load_schema

CLIENTS = 16
LOGINS = 2000
WORKERS = 4
USERS = 40


def threads_connected(conn: Any) -> int:
    with conn.cursor() as cur:
        cur.execute("SHOW GLOBAL STATUS LIKE 'Threads_connected'")
        return int(cur.fetchone()[1])


def test_sixteen_clients_two_thousand_logins(mysql_db: dict[str, Any], mariadb: dict[str, Any]) -> None:
    load_schema(mysql_db)
    with Tree(store="mysql", mysql=mysql_db, logging="e") as tree:
        tree.add_domain("example.com")
        homes = {f"u{n}": tree.add_user("example.com", f"u{n}", f"pw{n}").dir for n in range(USERS)}
        monitor = pymysql.connect(unix_socket=mariadb["unix_socket"], user="root", autocommit=True)
        before = threads_connected(monitor)  # this connection included
        with Daemon(tree, workers=WORKERS) as daemon:
            deadline = time.monotonic() + 10  # each worker connects as it starts
            while threads_connected(monitor) < before + WORKERS and time.monotonic() < deadline:
                time.sleep(0.05)
            assert threads_connected(monitor) == before + WORKERS  # the pool

            def login(n: int) -> tuple[int, int, str | None]:
                name = f"u{n % USERS}"
                password = "wrong" if n % 10 == 9 else f"pw{n % USERS}"
                done, record = tree.login(fd3_payload(f"{name}@example.com", password))
                return n, done.returncode, None if record is None else record["cwd"]

            samples: list[int] = []
            running = threading.Event()
            running.set()

            def sample() -> None:
                while running.is_set():
                    samples.append(threads_connected(monitor))
                    time.sleep(0.05)

            sampler = threading.Thread(target=sample)
            sampler.start()
            try:
                with ThreadPoolExecutor(CLIENTS) as pool:
                    warm = list(pool.map(login, range(200)))
                    rss_warm = daemon.rss_kib()
                    rest = list(pool.map(login, range(200, LOGINS)))
            finally:
                running.clear()
                sampler.join()
            rss_end = daemon.rss_kib()
            stats = daemon.stats()
        monitor.close()
    results = warm + rest
    assert len(results) == LOGINS
    for n, code, cwd in results:
        if n % 10 == 9:
            assert (code, cwd) == (1, None), n
        else:
            assert (code, cwd) == (0, homes[f"u{n % USERS}"]), n
    assert samples and max(samples) == before + WORKERS and min(samples) == before + WORKERS
    assert rss_end - rss_warm < 2048, (rss_warm, rss_end)  # KiB: flat (caches and buffers are bounded)
    assert stats["ok"] >= LOGINS * 9 // 10 and stats["refused"] == LOGINS // 10
    assert stats["internal"] == 0 and stats["temp"] == 0 and stats["denied"] == 0
    assert stats["cache_hits"] > 0
