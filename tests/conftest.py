"""Session-wide test infrastructure: a private MariaDB server, private Dovecot 2.3 instances, shared dirs.

No fixture here skips: a missing tool fails the test loudly (scripts/test.sh installs everything).
See /work/shared/reference/test-infrastructure.md for why each option is there.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pymysql
import pytest
from helpers import die_with_parent, free_port, remove_tree, shared_tmpdir
from servers import create_database, drop_database, private_mariadb, read_text
from servers import stop as stop_server

# Where Debian puts the server binaries; added in case the test run's PATH lacks the sbin dirs.
_SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _tool(name: str) -> str:
    path = shutil.which(name, path=os.environ.get("PATH", "") + os.pathsep + _SYSTEM_PATH)
    if path is None:
        pytest.fail(f"{name} not found; scripts/test.sh installs the Debian packages", pytrace=False)
    return path


# --------------------------------------------------------------------------------------------------
# MariaDB


@pytest.fixture(scope="session")
def mariadb() -> Iterator[dict[str, Any]]:
    """A private MariaDB server for the session (see servers.private_mariadb)."""
    _tool("mariadbd")
    with private_mariadb() as info:
        yield info


def _root_connect(mariadb: Mapping[str, Any]) -> pymysql.connections.Connection:
    return pymysql.connect(unix_socket=mariadb["unix_socket"], user="root", password="", autocommit=True)


@pytest.fixture
def mysql_db(mariadb: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A fresh database ``t_<hex>`` and an application user ``vpop_<hex>`` with ALL on it.

    The user exists as @'%' and @'localhost' (TCP clients appear as 127.0.0.1 because of
    --skip-name-resolve; socket clients as localhost).  Yields database, user, password, host, port,
    unix_socket and root (connection kwargs for root over the socket).  Both are dropped afterwards,
    after killing any connection the test left open.
    """
    suffix = secrets.token_hex(4)
    database, user, password = f"t_{suffix}", f"vpop_{suffix}", secrets.token_hex(12)
    root_kwargs = {"unix_socket": mariadb["unix_socket"], "user": "root", "password": ""}
    create_database(mariadb, database, user, password)
    try:
        yield {
            "database": database,
            "user": user,
            "password": password,
            "host": mariadb["host"],
            "port": mariadb["port"],
            "unix_socket": mariadb["unix_socket"],
            "root": root_kwargs,
        }
    finally:
        drop_database(mariadb, database, user)


@pytest.fixture
def dead_mysql() -> Iterator[dict[str, Any]]:
    """Connection settings that point at no server ("the database is down").

    unix_socket is a path in a fresh directory where nothing listens; host/port is 127.0.0.1 and a
    port that was free when chosen.  database/user/password are plausible values.
    """
    base = Path(tempfile.mkdtemp(prefix="nodb-", dir="/tmp"))
    try:
        yield {
            "host": "127.0.0.1",
            "port": free_port(),
            "unix_socket": str(base / "mysqld.sock"),
            "database": "vpopmail",
            "user": "vpopmail",
            "password": "secret",
        }
    finally:
        remove_tree(base)


# --------------------------------------------------------------------------------------------------
# Dovecot 2.3 with a checkpassword passdb

_DOVECOT_CONF = """\
base_dir = {dir}/run
state_dir = {dir}/state
instance_name = test-dovecot-{imap_port}
log_path = {dir}/dovecot.log
info_log_path = {dir}/dovecot.log
debug_log_path = {dir}/dovecot.log
protocols = imap pop3
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_verbose = yes
auth_debug = yes
auth_failure_delay = 0
mail_location = maildir:~/Maildir
first_valid_uid = 89
first_valid_gid = 89
import_environment = {import_environment}
{auth_conf}
# The program runs as the auth process's user; root, as under qmail-popup.
service auth {{
  user = root
}}
# No auth-penalty socket: no per-IP penalty delay after failed logins.
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {pop3_port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
{extra_conf}
"""

_CHECKPASSWORD_AUTH = """\
passdb {{
  driver = checkpassword
  args = {checkpassword_args}
}}
# uid/gid come from the checkpassword program: EXTRA=userdb_uid userdb_gid
userdb {{
  driver = prefetch
}}"""

# Dovecot's default import_environment; kept so Dovecot behaves as packaged.
_DOVECOT_DEFAULT_IMPORT = "TZ CORE_OUTOFMEM CORE_ERROR LISTEN_PID LISTEN_FDS NOTIFY_SOCKET"


def _import_environment(import_env: Mapping[str, str]) -> str:
    items = [_DOVECOT_DEFAULT_IMPORT]
    for key, value in import_env.items():
        # The setting is a space-separated list of NAME or NAME=VALUE; nothing can be quoted.
        if not key or any(c in key for c in " \t\n=\"'") or any(c in value for c in " \t\n\"'"):
            raise ValueError(f"import_environment cannot carry {key!r}={value!r}")
        items.append(f"{key}={value}")
    return " ".join(items)


def _greets(port: int, greeting: bytes) -> bool:
    """True if a server on 127.0.0.1:port answers with a line starting with ``greeting``.

    A bare TCP connect is not enough: another process may hold the port while Dovecot fails to bind.
    """
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
            return conn.makefile("rb").readline(200).startswith(greeting)
    except OSError:
        return False


@pytest.fixture(scope="session")
def dovecot_factory() -> Iterator[Callable[..., dict[str, Any]]]:
    """Factory that starts a private Dovecot 2.3 instance whose passdb is a checkpassword program.

    ``start(checkpassword_args, import_env=None, extra_conf="") -> dict``:

    * checkpassword_args: the passdb ``args`` line, e.g. ``"/work/main/.venv/bin/vchkpw"``; Dovecot
      appends /usr/lib/dovecot/checkpassword-reply as the last argument.
    * import_env: variables the program gets, as ``import_environment`` NAME=VALUE pairs (Dovecot gives
      the program no environment of its own: no PATH, no HOME).  Values cannot contain spaces.
    * extra_conf: appended to the config file verbatim.
    * auth_conf: the passdb and userdb blocks instead of the checkpassword passdb + prefetch userdb
      (``checkpassword_args`` is then unused).

    The program runs as root; the userdb is ``prefetch``, so the program must return
    ``EXTRA=userdb_uid userdb_gid`` (uid/gid >= 89).  Returned dict: imap_port, pop3_port, log (Path
    of dovecot.log), dir (Path), conf (Path), proc (Popen) and stop (callable, idempotent).  Instances
    still running are stopped at session end.  Each start costs ~0.05 s, each stop ~1.1 s.
    """
    dovecot = _tool("dovecot")
    if not os.access("/usr/lib/dovecot/checkpassword-reply", os.X_OK):
        pytest.fail("/usr/lib/dovecot/checkpassword-reply missing; run scripts/test.sh", pytrace=False)
    started: list[tuple[Callable[[], None], Path]] = []

    def start(
        checkpassword_args: str, import_env: Mapping[str, str] | None = None, extra_conf: str = "",
        auth_conf: str | None = None,
    ) -> dict[str, Any]:
        if "\n" in checkpassword_args:
            raise ValueError("checkpassword_args must be one line")
        if auth_conf is None:
            auth_conf = _CHECKPASSWORD_AUTH.format(checkpassword_args=checkpassword_args)
        import_environment = _import_environment(import_env or {})
        # Short path: Dovecot's unix sockets live under base_dir and must stay below 108 bytes.
        base = Path(tempfile.mkdtemp(prefix="dc-", dir="/tmp"))
        base.chmod(0o755)
        for _attempt in range(5):
            imap_port = free_port()
            pop3_port = free_port()
            if pop3_port == imap_port:
                continue
            for stale in ("stdout", "dovecot.log"):  # from a previous attempt
                (base / stale).unlink(missing_ok=True)
            conf = base / "dovecot.conf"
            conf.write_text(
                _DOVECOT_CONF.format(
                    dir=base, imap_port=imap_port, pop3_port=pop3_port,
                    import_environment=import_environment, auth_conf=auth_conf, extra_conf=extra_conf,
                )
            )
            out_path = base / "stdout"
            with open(out_path, "wb") as out:
                proc = subprocess.Popen(
                    [dovecot, "-F", "-c", str(conf)],
                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                    start_new_session=True, preexec_fn=die_with_parent(),
                )
            deadline = time.monotonic() + 20
            while proc.poll() is None and time.monotonic() < deadline:
                if _greets(imap_port, b"* OK") and _greets(pop3_port, b"+OK"):
                    break
                time.sleep(0.02)
            if proc.poll() is None and time.monotonic() < deadline:
                break
            stop_server(proc, 5)
            text = read_text(out_path) + read_text(base / "dovecot.log")
            if "Address already in use" not in text:
                remove_tree(base)
                raise RuntimeError(f"dovecot did not start (exit {proc.returncode}):\n{text}")
        else:
            remove_tree(base)
            raise RuntimeError("dovecot: could not find free ports")

        def stop() -> None:
            stop_server(proc, 20)

        started.append((stop, base))
        return {
            "imap_port": imap_port,
            "pop3_port": pop3_port,
            "log": base / "dovecot.log",
            "dir": base,
            "conf": conf,
            "proc": proc,
            "stop": stop,
        }

    try:
        yield start
    finally:
        for stop, base in started:
            stop()
            remove_tree(base)


# --------------------------------------------------------------------------------------------------
# Shared directories


@pytest.fixture
def world_tmp() -> Iterator[Path]:
    """A fresh mode-1777 directory under /tmp (usable by uid 89), removed after the test."""
    path = shared_tmpdir()
    try:
        yield path
    finally:
        remove_tree(path)


@pytest.fixture(scope="module")
def qmail_db(mariadb: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A qmail-mysql database (conf/schema/qmail-mysql.sql) shared by one test module."""
    from qmysql import qmail_database

    with qmail_database(mariadb) as db:
        yield db
