"""Private servers for tests and benchmarks (no pytest dependency, so bench/ can use them too)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
from helpers import die_with_parent, free_port, remove_tree

# Where Debian puts the server binaries; added in case the caller's PATH lacks the sbin dirs.
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def find_tool(name: str) -> str | None:
    return shutil.which(name, path=os.environ.get("PATH", "") + os.pathsep + SYSTEM_PATH)


def stop(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM, then SIGKILL to the whole process group (servers run in their own session)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()


def read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _start_mariadbd(mariadbd: str, base: Path,
                    extra: tuple[str, ...] = ()) -> tuple[subprocess.Popen[bytes], int]:
    """Start mariadbd on a random port; retry with another port if that one was taken meanwhile."""
    sock, err_log = base / "mysqld.sock", base / "mysqld.err"
    for _attempt in range(5):
        port = free_port()
        out_path = base / "mysqld.stdout"
        with open(out_path, "wb") as out:  # messages printed before --log-error is opened
            proc = subprocess.Popen(
                [
                    mariadbd, "--no-defaults", "--user=root",
                    f"--datadir={base / 'data'}", f"--socket={sock}",
                    f"--port={port}", "--bind-address=127.0.0.1", "--skip-name-resolve",
                    f"--pid-file={base / 'mysqld.pid'}", f"--log-error={err_log}", f"--tmpdir={base}",
                    "--innodb-log-file-size=8M",
                    "--innodb-flush-log-at-trx-commit=0", "--skip-innodb-doublewrite",
                    "--character-set-server=utf8mb4", "--collation-server=utf8mb4_general_ci",
                    *extra,
                ],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=die_with_parent(),
            )
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                text = read_text(err_log) + read_text(out_path)
                if "Address already in use" in text:
                    break  # next attempt, new port
                raise RuntimeError(f"mariadbd exited with {proc.returncode}:\n{text}")
            try:
                pymysql.connect(unix_socket=str(sock), user="root", password="", connect_timeout=2).close()
                return proc, port
            except pymysql.err.OperationalError:
                if time.monotonic() > deadline:
                    stop(proc, 10)
                    raise RuntimeError(f"mariadbd not ready after 60 s:\n{read_text(err_log)}") from None
                time.sleep(0.05)
    raise RuntimeError("mariadbd: could not find a free port")



@contextlib.contextmanager
def private_mariadb(extra: tuple[str, ...] = ()) -> Iterator[dict[str, Any]]:
    """A private MariaDB server (root with an empty password, socket and TCP on 127.0.0.1).

    Yields host, port, unix_socket, user ("root"), password (""), proc and base (its directory);
    stopped with SIGTERM and removed afterwards.  ``extra``: more mariadbd options.
    """
    install_db, mariadbd = find_tool("mariadb-install-db"), find_tool("mariadbd")
    if install_db is None or mariadbd is None:
        raise RuntimeError("mariadbd not found; scripts/test.sh installs the Debian packages")
    # Short path: the socket path must stay below 108 bytes.
    base = Path(tempfile.mkdtemp(prefix="mdb-", dir="/tmp"))
    try:
        done = subprocess.run(
            [
                install_db, "--no-defaults", "--auth-root-authentication-method=normal", "--skip-test-db",
                "--user=root", f"--datadir={base / 'data'}", "--innodb-log-file-size=8M",
            ],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        if done.returncode != 0:
            text = done.stdout.decode(errors="replace")
            raise RuntimeError(f"mariadb-install-db exited {done.returncode}:\n{text}")
        proc, port = _start_mariadbd(mariadbd, base, extra)
    except BaseException:
        remove_tree(base)
        raise
    try:
        yield {
            "host": "127.0.0.1",
            "port": port,
            "unix_socket": str(base / "mysqld.sock"),
            "user": "root",
            "password": "",
            "proc": proc,
            "base": base,
        }
    finally:
        stop(proc, 30)
        remove_tree(base)


def create_database(server: dict[str, Any], database: str, user: str, password: str) -> None:
    """A database and an application user with ALL on it (as @'%' and @'localhost': TCP clients
    appear as 127.0.0.1 because of --skip-name-resolve, socket clients as localhost)."""
    conn = root_connection(server)
    with conn, conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{database}`")
        for host in ("%", "localhost"):
            cur.execute("CREATE USER %s@%s IDENTIFIED BY %s", (user, host, password))
            cur.execute(f"GRANT ALL PRIVILEGES ON `{database}`.* TO %s@%s", (user, host))


def drop_database(server: dict[str, Any], database: str, user: str) -> None:
    """The database and its user gone, after killing any connection of the user's left open (it
    could hold a metadata lock and block DROP DATABASE)."""
    conn = root_connection(server)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT ID FROM information_schema.PROCESSLIST WHERE USER = %s", (user,))
        for (thread_id,) in cur.fetchall():
            with contextlib.suppress(pymysql.err.OperationalError):
                cur.execute("KILL %s", (thread_id,))
        cur.execute(f"DROP DATABASE IF EXISTS `{database}`")
        for host in ("%", "localhost"):
            cur.execute("DROP USER IF EXISTS %s@%s", (user, host))


def root_connection(server: dict[str, Any]) -> Any:
    """root over the server's unix socket, autocommit."""
    return pymysql.connect(unix_socket=server["unix_socket"], user="root", password="", autocommit=True)


@contextlib.contextmanager
def replicated_mariadb() -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """A primary and a ``read_only`` replica following it by GTID: (primary, replica).

    Two private servers (see :func:`private_mariadb`); the replica's IO and SQL threads run
    from the primary's first event, so what is created on the primary (databases, users,
    rows) reaches the replica.  :func:`wait_for_replica` waits until it has.
    """
    primary_options = ("--server-id=1", "--log-bin=primary-bin", "--binlog-format=ROW",
                       "--gtid-strict-mode=1")
    replica_options = ("--server-id=2", "--read-only=1", "--gtid-strict-mode=1", "--relay-log=replica-relay")
    with private_mariadb(primary_options) as primary, private_mariadb(replica_options) as replica:
        password = "repl-" + os.urandom(6).hex()
        conn = root_connection(primary)
        with conn, conn.cursor() as cur:
            cur.execute("CREATE USER 'repl'@'127.0.0.1' IDENTIFIED BY %s", (password,))
            cur.execute("GRANT REPLICATION SLAVE ON *.* TO 'repl'@'127.0.0.1'")
        conn = root_connection(replica)
        with conn, conn.cursor() as cur:
            cur.execute("CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=%s, MASTER_USER='repl', "
                        "MASTER_PASSWORD=%s, MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1",
                        (primary["port"], password))
            cur.execute("START SLAVE")
        wait_for_replica(primary, replica)
        yield primary, replica


def wait_for_replica(primary: dict[str, Any], replica: dict[str, Any], timeout: float = 30) -> None:
    """Until the replica has applied everything the primary has written (MASTER_GTID_WAIT)."""
    conn = root_connection(primary)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT @@gtid_binlog_pos")
        position = cur.fetchone()[0]
    conn = root_connection(replica)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT MASTER_GTID_WAIT(%s, %s)", (position, timeout))
        if cur.fetchone()[0] != 0:
            cur.execute("SHOW SLAVE STATUS")
            columns = [d[0] for d in cur.description]
            status = dict(zip(columns, cur.fetchone() or (), strict=False))
            wanted = ("Slave_IO_Running", "Slave_SQL_Running", "Last_IO_Error", "Last_SQL_Error")
            raise RuntimeError(f"replica did not reach {position} in {timeout} s: "
                               f"{ {key: status.get(key) for key in wanted} }")
