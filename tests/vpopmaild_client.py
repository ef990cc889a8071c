"""vpopmaild under Debian's tcpserver, and a small client of our own, for the vpopmaild tests.

Net_Vpopmaild (PEAR) cannot be installed here (neither Debian nor a reachable registry ships it),
so :class:`Client` speaks the protocol as the facts in
``shared/reference/admin-vpopmaild-dovecot24.md`` §3 describe it and as Net_Vpopmaild uses it:
one status line per command (``+OK ``, ``+OK+`` then lines up to ``.``, or ``-ERR``);
``mod_user``/``set_limits`` read the ack, send ``param value`` lines and ``.``, then read the
final status.

``Daemon(tree)`` runs ``tcpserver -vHRD 127.0.0.1 <free port> vpopmaild`` (as root, as vpopmail's
README.vpopmaild says) with the tree's environment; it is stopped (with every session it
started) when the ``with`` block ends.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping

from helpers import die_with_parent, free_port, program

CRLF = b"\r\n"


class Client:
    """One connection: lines in and out, CR LF on the wire."""

    def __init__(self, port: int, timeout: float = 20) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.reader = self.sock.makefile("rb")
        self.greeting = self.line()

    def close(self) -> None:
        self.reader.close()
        self.sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, *lines: str | bytes) -> None:
        data = b"".join((line.encode() if isinstance(line, str) else line) + CRLF for line in lines)
        self.sock.sendall(data)

    def line(self) -> str:
        """The next line without CR LF; EOFError when the server closed the connection."""
        raw = self.reader.readline(1 << 20)
        if not raw:
            raise EOFError("connection closed")
        if not raw.endswith(CRLF):
            raise AssertionError(f"line not ended by CR LF: {raw!r}")
        return raw[:-2].decode("utf-8", "surrogateescape")

    def closed(self) -> bool:
        """True when the server has closed the connection (nothing more to read)."""
        try:
            return self.reader.read(1) == b""
        except ConnectionResetError:
            return True

    def more(self) -> list[str]:
        """The lines of a ``+OK+`` answer, up to the ``.``."""
        lines = []
        while (line := self.line()) != ".":
            lines.append(line)
        return lines

    def command(self, text: str | bytes) -> str:
        """Send one command; its status line."""
        self.send(text)
        return self.line()

    def call(self, text: str | bytes) -> tuple[str, list[str]]:
        """Send one command; (status, the lines of a ``+OK+`` answer)."""
        status = self.command(text)
        return status, (self.more() if status == "+OK+" else [])

    def info(self, text: str) -> dict[str, str]:
        """A ``+OK+`` answer of ``name value`` lines as a dict (Net_Vpopmaild's ``readInfo``)."""
        status, lines = self.call(text)
        assert status == "+OK+", (text, status)
        return dict((line.split(" ", 1) + [""])[:2] for line in lines if line)

    def block(self, command: str, params: Iterable[str | bytes]) -> tuple[str, str]:
        """``mod_user``/``set_limits``: (the immediate ack, the final status)."""
        ack = self.command(command)
        if not ack.startswith("+OK"):
            return ack, ""
        self.send(*params, ".")
        return ack, self.line()

    def slogin(self, address: str, password: str) -> str:
        return self.command(f"slogin {address} {password}")


class Daemon:
    """``tcpserver -vHRD 127.0.0.1 PORT vpopmaild`` with ``env``; ``port`` once started."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = dict(env)
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = b""  # what tcpserver -v said on stderr

    def __enter__(self) -> Daemon:
        tcpserver = shutil.which("tcpserver", path="/usr/bin:/bin")
        if tcpserver is None:
            raise RuntimeError("tcpserver not found: scripts/test.sh installs ucspi-tcp")
        for _attempt in range(5):
            self.port = free_port()
            argv = [tcpserver, "-vHRD", "127.0.0.1", str(self.port), program("vpopmaild")]
            self.proc = subprocess.Popen(argv, env=self.env, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                         start_new_session=True, preexec_fn=die_with_parent())
            assert self.proc.stderr is not None
            first = self.proc.stderr.readline()  # "tcpserver: status: 0/40" once it listens
            if first.startswith(b"tcpserver: status:"):
                os.set_blocking(self.proc.stderr.fileno(), False)
                return self
            self.stop()
        raise RuntimeError(f"tcpserver did not start: {first!r}")

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        self.proc.wait(10)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        self.proc = None

    def client(self, timeout: float = 20) -> Client:
        return Client(self.port, timeout)

    def wait_sessions_done(self, timeout: float = 20) -> None:
        """Until tcpserver's last ``status:`` line says no session is running (``0/40``)."""
        assert self.proc is not None and self.proc.stderr is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            chunk = self.proc.stderr.read()
            if chunk:
                self.log += chunk
            statuses = [line for line in self.log.split(b"\n") if line.startswith(b"tcpserver: status:")]
            if statuses and statuses[-1].endswith(b" 0/40"):
                return
            time.sleep(0.02)
        raise AssertionError(f"sessions still running: {self.log[-300:]!r}")
