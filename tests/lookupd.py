"""The installed ``vlookupd`` started for a test tree, and a raw protocol client for tests.

``Daemon(tree, workers=2, **settings)`` writes ``lookup_socket`` (and the other settings given)
into the tree's settings, starts ``vlookupd`` with ``VPOP_CONFIG`` pointing there, and waits until
it answers ``hello``.  ``stop()`` (SIGTERM), ``kill()`` (SIGKILL of the master and its workers),
``pause()``/``resume()`` (SIGSTOP/SIGCONT of every process) drive it; ``ask(op, fields)`` sends one
request over a fresh connection (optionally as another uid) and returns ``(status, fields)``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from helpers import die_with_parent, program


def frame(word: str, fields: Sequence[tuple[str, str | bytes | int]]) -> bytes:
    body = b"".join(key.encode() + b"\0" + (value if isinstance(value, bytes) else str(value).encode())
                    + b"\0" for key, value in fields)
    return b"VL1 %s %d\n" % (word.encode(), len(body)) + body


def read_frame(sock: socket.socket) -> tuple[str, list[tuple[str, bytes]]]:
    """One answer, read to its last byte and no further (the next one stays in the socket)."""
    header = b""
    while not header.endswith(b"\n"):
        byte = sock.recv(1)
        if not byte:
            raise ConnectionError(f"closed after {header!r}")
        header += byte
    version, word, length = header[:-1].split(b" ")
    assert version == b"VL1"
    rest = b""
    while len(rest) < int(length):
        chunk = sock.recv(int(length) - len(rest))
        if not chunk:
            raise ConnectionError("closed in the body")
        rest += chunk
    items = rest.split(b"\0")[:-1]
    return word.decode(), [(items[i].decode(), items[i + 1]) for i in range(0, len(items), 2)]


def change_user(tree: Any, name: str, domain: str = "example.com", **fields: Any) -> Any:
    """The user's record, changed first in the store itself (as vmoduser would, or a billing
    system behind the admin tools' back: the daemon is not told)."""
    from vpop import assign
    from vpop.stores import open_store

    settings = tree.settings()
    store = open_store(settings)
    try:
        found = assign.lookup(settings.qmail_home, domain)
        record = store.get_user(name, found)
        if fields:
            for key, value in fields.items():
                setattr(record, key, value)
            assert store.update_user(record, found)
        return record
    finally:
        store.close()


def as_uid(uid: int, gid: int | None = None):
    """preexec_fn: run the child as ``uid`` (and ``gid``, default the same number)."""
    def preexec() -> None:
        os.setgroups([])
        os.setgid(uid if gid is None else gid)
        os.setuid(uid)
    return preexec


class Daemon:
    """vlookupd for one tree (see the module)."""

    def __init__(self, tree: Any, workers: int = 2, start: bool = True, **settings: Any) -> None:
        self.tree = tree
        run = Path(tree.root) / "run"  # root's, 0755: nobody else can take the socket's name
        run.mkdir(mode=0o755, exist_ok=True)
        self.socket = run / "vlookupd.sock"
        self.workers = workers
        tree.write_settings(lookup_socket=self.socket, lookup_workers=workers, **settings)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = Path(tree.root) / "vlookupd.out"
        if start:
            self.start()

    def __enter__(self) -> Daemon:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        env = {"PATH": "/usr/bin:/bin", "VPOP_CONFIG": str(self.tree.config)}
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([program("vlookupd")], env=env, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True,
                                         preexec_fn=die_with_parent())
        deadline = time.monotonic() + 20
        while True:
            try:
                status, _ = self.ask("hello")
                if status == "ok" and len(self.worker_pids()) == self.workers:
                    return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"vlookupd did not start: {self.log.read_text(errors='replace')}")
            time.sleep(0.02)

    def worker_pids(self) -> list[int]:
        """The workers' pids (the master's children)."""
        assert self.proc is not None
        try:
            text = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        except OSError:
            return []
        return [int(pid) for pid in text.split()]

    def pids(self) -> list[int]:
        assert self.proc is not None
        return [self.proc.pid, *self.worker_pids()]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None

    def kill(self) -> None:
        """SIGKILL to the master and every worker (the socket file stays, as after a crash)."""
        if self.proc is None:
            return
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()
        self.proc = None

    def pause(self) -> None:
        for pid in self.pids():
            os.kill(pid, signal.SIGSTOP)

    def resume(self) -> None:
        for pid in self.pids():
            os.kill(pid, signal.SIGCONT)

    def rss_kib(self) -> int:
        total = 0
        for pid in self.pids():
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        return total

    def ask(self, op: str, fields: Sequence[tuple[str, str | bytes | int]] = (), *,
            uid: int | None = None) -> tuple[str, dict[str, bytes]]:
        """One request on a fresh connection: (status, {key: first value})."""
        if uid is not None:
            return self._ask_as(op, fields, uid)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(str(self.socket))
            sock.sendall(frame(op, fields))
            status, pairs = read_frame(sock)
        answer: dict[str, bytes] = {}
        for key, value in pairs:
            answer.setdefault(key, value)
        return status, answer

    def _ask_as(self, op: str, fields: Sequence[tuple[str, str | bytes | int]], uid: int
                ) -> tuple[str, dict[str, bytes]]:
        """The same request from a process of another uid (a child running this module's client)."""
        import json
        import sys

        code = ("import json, socket, sys; sys.path.insert(0, sys.argv[1]);"
                "from lookupd import frame, read_frame;"
                "s = socket.socket(socket.AF_UNIX); s.settimeout(10); s.connect(sys.argv[2]);"
                "s.sendall(frame(sys.argv[3], [tuple(p) for p in json.loads(sys.argv[4])]));"
                "st, pairs = read_frame(s); print(json.dumps([st, [[k, v.decode()] for k, v in pairs]]))")
        argv = [sys.executable, "-I", "-c", code, str(Path(__file__).parent), str(self.socket), op,
                json.dumps([list(p) for p in fields])]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, preexec_fn=as_uid(uid))
        assert done.returncode == 0, done.stderr
        status, pairs = json.loads(done.stdout)
        answer: dict[str, bytes] = {}
        for key, value in pairs:
            answer.setdefault(key, value.encode())
        return status, answer

    def stats(self) -> dict[str, int]:
        status, answer = self.ask("stats")
        assert status == "ok"
        return {key: int(value) for key, value in answer.items()}
