"""A sandbox vpopmail + qmail tree for tests that run the installed programs.

``Tree()`` lays out, under a fresh mode-1777 directory in /tmp (see ``helpers.shared_tmpdir``)::

    vpop.conf                 the settings file (VPOP_CONFIG points here)
    vpopmail/etc/             defaultdomain, vpopmail.mysql, ip_alias_map, open-smtp, tcp.smtp(.cdb) ...
    vpopmail/domains/
    qmail/users/  qmail/control/
    syslog.sock               a bound unix DGRAM socket: the ``syslog_socket`` setting
    record                    the recorder program (helpers.write_recorder)

Domains and users are made with :mod:`vpop.admin` (the project's own vadddomain/vadduser).
``login(fd3, **env)`` runs the installed ``vchkpw`` with a real fd 3 and the recorder as the
program to exec, and returns the finished process and what the recorder saw (or None).
``run(argv, ...)`` is the general form, for the other programs (vdelivermail, qmail-getpw).

Use it as a context manager, or call ``close()``: the directory is removed afterwards.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from helpers import (
    REPO_ROOT,
    VPOPMAIL_GID,
    VPOPMAIL_UID,
    clock_text,
    program,
    remove_tree,
    run_checkpassword,
    shared_tmpdir,
    write_recorder,
)
from syslogrecord import SyslogRecord
from syslogrecord import parse as parse_syslog

#: The client address the default environment claims (TEST-NET-1).
REMOTE_IP = "192.0.2.10"
#: The server address the default environment claims.
LOCAL_IP = "192.0.2.1"
SCHEMA = REPO_ROOT / "conf" / "schema" / "vpopmail.sql"

SettingValue = str | int | bool | Path


def _setting_text(value: SettingValue) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def mysql_line(db: Mapping[str, Any], *, tcp: bool = False) -> str:
    """One ``host|port-or-socket|user|password|database`` line for a ``mysql_db``/``dead_mysql`` dict."""
    where = str(db["port"]) if tcp else str(db["unix_socket"])
    host = str(db["host"]) if tcp else "localhost"
    return f"{host}|{where}|{db['user']}|{db['password']}|{db['database']}"


def load_schema(db: Mapping[str, Any], schema: Path = SCHEMA) -> None:
    """Create the tables of ``schema`` (default conf/schema/vpopmail.sql) in a ``mysql_db`` database."""
    # "-- " comments first (they may hold a ';'), then one statement per ';'.
    code = "\n".join(line.split("-- ", 1)[0].rstrip() for line in schema.read_text().split("\n"))
    statements = [text.strip() for text in code.split(";") if text.strip()]
    conn = mysql_connect(db)
    with conn, conn.cursor() as cur:
        for statement in statements:
            cur.execute(statement)


def mysql_connect(db: Mapping[str, Any]) -> Any:
    """A PyMySQL connection (autocommit) to a ``mysql_db`` database as its own user."""
    import pymysql

    return pymysql.connect(unix_socket=db["unix_socket"], user=db["user"], password=db["password"],
                           database=db["database"], autocommit=True)


def mysql_rows(db: Mapping[str, Any], sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Run one query against a ``mysql_db`` database and return all rows."""
    conn = mysql_connect(db)
    with conn, conn.cursor() as cur:
        cur.execute(sql, tuple(args))
        return list(cur.fetchall())


class Tree:
    """A vpopmail tree, its settings file, a syslog socket and the recorder, in one sandbox."""

    def __init__(self, *, store: str = "cdb", logging: str = "y", mysql: Mapping[str, Any] | None = None,
                 mysql_update: Mapping[str, Any] | None = None, **settings: SettingValue) -> None:
        # vchkpw looks for "true" and "imap" anywhere in argv[1] (the recorder's path): keep them
        # out of the random part of the name.
        self.root = shared_tmpdir("vpop-tree-")
        while "true" in self.root.name or "imap" in self.root.name:
            remove_tree(self.root)
            self.root = shared_tmpdir("vpop-tree-")
        self.vpopmail_home = self.root / "vpopmail"
        self.qmail_home = self.root / "qmail"
        self.etc = self.vpopmail_home / "etc"
        self.domains = self.vpopmail_home / "domains"
        for path in (self.etc, self.domains, self.qmail_home / "users", self.qmail_home / "control"):
            path.mkdir(mode=0o755, parents=True)
        self.vpopmail_home.chmod(0o755)
        self.qmail_home.chmod(0o755)
        self.config = self.root / "vpop.conf"
        self.syslog_path = self.root / "syslog.sock"
        self._syslog = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._syslog.bind(str(self.syslog_path))
        self._syslog.setblocking(False)
        self.syslog_path.chmod(0o666)  # vchkpw may send after dropping to uid 89
        self._pending: list[bytes] = []
        self._pump = None  # see keep_draining
        self._pump_stop = threading.Event()
        self._pump_lock = threading.Lock()
        self.recorder = write_recorder(self.root)
        self._serial = itertools.count(1)
        self.base_settings: dict[str, SettingValue] = {
            "vpopmail_home": self.vpopmail_home,
            "qmail_home": self.qmail_home,
            "store": store,
            "logging": logging,
            "syslog_socket": self.syslog_path,
        }
        self.extra_settings: dict[str, SettingValue] = dict(settings)
        #: The programs' clock (``VPOP_CLOCK``, seconds since the epoch); None: the system clock.
        self.clock: float | None = None
        self.write_settings()
        if mysql is not None:
            self.write_mysql_credentials(mysql, mysql_update)

    # ------------------------------------------------------------------ set-up

    def __enter__(self) -> Tree:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._pump is not None:
            self._pump_stop.set()
            self._pump.join()
        self._syslog.close()
        remove_tree(self.root)

    def keep_draining(self) -> None:
        """Read the syslog socket in the background: a long-lived server (vpopmaild) sends more
        lines than the socket's queue holds (net.unix.max_dgram_qlen, often 10) between two
        reads of the test, and a full queue would block its ``send``."""

        def pump() -> None:
            while not self._pump_stop.wait(0.01):
                with self._pump_lock:
                    self._drain()

        self._pump = threading.Thread(target=pump, daemon=True)
        self._pump.start()

    def write_settings(self, **changes: SettingValue | None) -> Path:
        """(Re)write vpop.conf: the base keys plus the extra ones; a change of None removes a key."""
        for key, value in changes.items():
            if value is None:
                self.extra_settings.pop(key, None)
            else:
                self.extra_settings[key] = value
        lines = ["# written by tests/tree.py"]
        for key, value in {**self.base_settings, **self.extra_settings}.items():
            lines.append(f"{key} = {_setting_text(value)}")
        self.config.write_text("\n".join(lines) + "\n")
        return self.config

    def settings(self) -> Any:
        """The parsed settings (``vpop.config.Settings``) as the programs will read them."""
        from vpop.config import load_settings

        return load_settings({"VPOP_CONFIG": str(self.config)})

    def write_mysql_credentials(self, read: Mapping[str, Any], update: Mapping[str, Any] | None = None,
                                *, tcp: bool = False, comment: bool = True) -> Path:
        """Write etc/vpopmail.mysql: the read line, then the update line if one is given (mode 0600)."""
        lines = ["# read server, then update server: host|port-or-socket|user|password|database"] \
            if comment else []
        lines.append(mysql_line(read, tcp=tcp))
        if update is not None:
            lines.append(mysql_line(update, tcp=tcp))
        return self.write_etc("vpopmail.mysql", "\n".join(lines) + "\n", mode=0o600)

    def write_etc(self, name: str, text: str | bytes, mode: int = 0o644) -> Path:
        """Write a file in ~vpopmail/etc."""
        path = self.etc / name
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)
        path.chmod(mode)
        return path

    def write_control(self, name: str, text: str) -> Path:
        """Write a qmail control file (control/locals, ...)."""
        path = self.qmail_home / "control" / name
        path.write_text(text)
        return path

    def add_domain(self, name: str, uid: int = VPOPMAIL_UID, gid: int = VPOPMAIL_GID,
                   aliases: Iterable[str] = ()) -> Path:
        """vadddomain: the domain directory and users/assign + users/cdb lines; returns the dir."""
        from vpop import admin

        return Path(admin.add_domain(self.settings(), name, uid, gid, aliases=tuple(aliases)))

    def add_user(self, domain: str, user: str, password: str, *, passwd: str | None = None,
                 **options: Any) -> Any:
        """vadduser through the configured store (``vpop.admin.add_user`` options: flags, quota,
        hash_method, blank_dir, gecos).  ``passwd`` stores that exact hash string instead of
        hashing ``password`` (the clear password is still ``password``)."""
        from vpop import admin, assign
        from vpop.stores import open_store

        settings = self.settings()
        store = open_store(settings)
        try:
            record = admin.add_user(settings, domain, user, password, store=store, **options)
            if passwd is not None:
                record.passwd = passwd
                store.add_user(record, assign.lookup(settings.qmail_home, domain.lower()))
        finally:
            store.close()
        return record

    def domain_dir(self, name: str) -> Path:
        return self.domains / name

    # ------------------------------------------------------------------ syslog

    def _drain(self) -> None:
        while True:
            try:
                self._pending.append(self._syslog.recv(65536))
            except BlockingIOError:
                return

    def syslog_records(self) -> list[bytes]:
        """Every datagram received since the last call, raw (``<21>Mmm dd hh:mm:ss ident[pid]: text``)."""
        with self._pump_lock:
            self._drain()
            records, self._pending = self._pending, []
        return records

    def syslog_parsed(self) -> list[SyslogRecord]:
        """Every datagram received since the last call, parsed (a malformed one raises ValueError)."""
        return [parse_syslog(record) for record in self.syslog_records()]

    def syslog_lines(self) -> list[str]:
        """The message texts (after ``ident[pid]: ``) received since the last call."""
        return [record.message for record in self.syslog_parsed()]

    # ------------------------------------------------------------------ running

    def env(self, **changes: str | None) -> dict[str, str]:
        """What tcpserver + qmail-popup on port 110 would give vchkpw; a change of None removes a name."""
        env = {
            "PATH": "/usr/bin:/bin",
            "VPOP_CONFIG": str(self.config),
            "PROTO": "TCP",
            "TCPLOCALIP": LOCAL_IP,
            "TCPLOCALPORT": "110",
            "TCPREMOTEIP": REMOTE_IP,
            "TCPREMOTEPORT": "40000",
        }
        env.update(faked_time_environ())
        if self.clock is not None:
            env["VPOP_CLOCK"] = clock_text(self.clock)
        for key, value in changes.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        return env

    def run(self, argv: Sequence[str], fd3: bytes | None = None, env: Mapping[str, str] | None = None,
            *, stdin: bytes | None = None, timeout: float = 30) -> subprocess.CompletedProcess[bytes]:
        """Run a program with a real fd 3 (``None``: not open), cwd = the sandbox root."""
        try:
            return run_checkpassword(argv, fd3, self.env() if env is None else env, timeout,
                                     stdin=stdin, cwd=self.root)
        finally:
            self._drain()  # keep the socket queue short, so a sender never blocks

    def record_path(self) -> Path:
        """A fresh path for the recorder's output."""
        return self.root / f"record-{next(self._serial)}.json"

    def target(self, name: str) -> str:
        """The recorder under another name (``record-true``, ``imap-record``): argv[1] matters to vchkpw."""
        path = self.root / name
        if not path.exists():
            path.symlink_to(self.recorder)
        return str(path)

    def login(self, fd3: bytes | None, *, target: str | None = None,
              **env: str | None) -> tuple[subprocess.CompletedProcess[bytes], dict[str, Any] | None]:
        """Run ``vchkpw <recorder> <outfile>`` with ``fd3`` on fd 3 and ``self.env(**env)``.

        Returns the finished process and the recorder's JSON record, or None if nothing was exec'd.
        """
        out = self.record_path()
        argv = [program("vchkpw"), target or self.recorder, str(out)]
        done = self.run(argv, fd3, self.env(**env))
        return done, read_record(out)

    def message_file(self, data: bytes) -> Path:
        """A queued message as qmail-local hands it over: a regular file (mode 0644) in the sandbox."""
        path = self.root / f"message-{next(self._serial)}"
        path.write_bytes(data)
        path.chmod(0o644)
        return path

    def deliver(self, address: str, message: bytes | Path, instruction: str = "bounce-no-mailbox", *,
                sender: str = "alice@example.org", argv: Sequence[str] | None = None,
                env: Mapping[str, str | None] | None = None, domain_dir: str | Path | None = None,
                timeout: float = 60, piped: bool = False) -> subprocess.CompletedProcess[bytes]:
        """Run the installed ``vdelivermail '' <instruction>`` as qmail-local runs it from .qmail-default.

        As uid/gid 89 (the domain's ids), with qmail-local's environment for ``address``
        (``vpop.qmailenv.virtual_delivery_environ``) plus PATH and VPOP_CONFIG, cwd = the domain dir
        (an alias domain's real dir, from users/cdb), stdin = the message file (bytes are written to
        a fresh file first).  ``env`` changes the environment (None removes a name); ``argv``
        replaces the whole argument list.  ``piped``: stdin is a pipe instead (a hand-run delivery).
        """
        from vpop import assign
        from vpop.qmailenv import virtual_delivery_environ

        if domain_dir is None:
            found = assign.lookup(str(self.qmail_home), address.rpartition("@")[2].lower())
            domain_dir = found.dir if found is not None else self.domains
        full_env = virtual_delivery_environ(address, str(domain_dir), sender,
                                            base={"PATH": "/usr/bin:/bin", "VPOP_CONFIG": str(self.config)})
        full_env.update(faked_time_environ())
        if self.clock is not None:
            full_env["VPOP_CLOCK"] = clock_text(self.clock)
        for key, value in (env or {}).items():
            if value is None:
                full_env.pop(key, None)
            else:
                full_env[key] = value
        path = self.message_file(message) if isinstance(message, bytes) else message
        command = list(argv) if argv is not None else [program("vdelivermail"), "", instruction]
        ids = {"user": VPOPMAIL_UID, "group": VPOPMAIL_GID, "extra_groups": [VPOPMAIL_GID]}
        try:
            if piped:
                return subprocess.run(command, input=Path(path).read_bytes(), env=full_env,
                                      cwd=str(domain_dir), capture_output=True, timeout=timeout, **ids)
            with open(path, "rb") as stdin:
                return subprocess.run(command, stdin=stdin, env=full_env, cwd=str(domain_dir),
                                      capture_output=True, timeout=timeout, **ids)
        finally:
            self._drain()


def faked_time_environ() -> dict[str, str]:
    """libfaketime's variables when the suite itself runs under ``faketime``, for the programs too.

    (Only then: a plain run passes nothing.)  The programs' environment is built from scratch, so
    without this a faked run would fake the tests' clock and not the programs'.
    """
    # The wrapper's shared memory comes too (else root vchkpw makes its own, which the program it
    # execs as uid 89 cannot open); the recorder leaves libfaketime's descriptors out of "fds".
    return {key: value for key, value in os.environ.items()
            if key.startswith("FAKETIME") or (key == "LD_PRELOAD" and "faketime" in value)}


def read_record(path: Path) -> dict[str, Any] | None:
    """The recorder's JSON output, or None if the recorder never ran."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def snapshot(root: Path, ignore: Iterable[str] = ("syslog.sock",)) -> dict[str, tuple[int, int, int]]:
    """{relative path: (mode, size, mtime_ns)} of everything under ``root`` (to prove nothing changed)."""
    skip = set(ignore)
    result = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            if rel in skip or rel.startswith("record-"):
                continue
            st = os.lstat(path)
            result[rel] = (st.st_mode, st.st_size if not os.path.isdir(path) else 0, st.st_mtime_ns)
    return result
