"""syslog lines at vpopmail's logging levels (facility mail, priority notice).

vpopmail's ``--enable-logging`` levels: ``n`` none, ``e`` errors (default), ``y`` errors and
successes, ``p`` errors with passwords, ``v`` errors and successes with passwords.
Categories follow ``vlog.h``: INTERNAL, LOGON and ACCESS lines are always sent; PASSWD
lines (wrong password, bad characters) unless the level is ``n``; AUTH (success) lines at
``y``/``v`` only.

The lines are sent straight to the syslog socket (``syslog_socket`` setting, default
``/dev/log``) with the C module ``_socket``: the libc ``syslog`` module cannot be pointed at
another socket (tests need that), and the ``socket`` module costs ~10 ms of start-up.
Like glibc, a message that cannot be sent is dropped.
"""

import os
import time

from vpop import clock
from vpop.errors import ConfigError

INTERNAL, LOGON, AUTH, PASSWD, ACCESS = range(5)

_FACILITY_MAIL = 2
_PRIORITY = {"notice": 5, "warning": 4, "err": 3}


class Logger:
    """Sends one datagram per line; connects lazily on the first line."""

    def __init__(self, ident: str, level: str = "e", socket_path: str = "/dev/log") -> None:
        self.ident = ident
        self.level = level
        self.socket_path = socket_path
        self.pid: int | None = None  # the pid in the lines; None: this process's (vlookupd: its client's)
        self._sock = None

    @property
    def with_passwords(self) -> bool:
        """Whether failure lines may carry the password (levels ``p`` and ``v``)."""
        return self.level in ("p", "v")

    def wanted(self, category: int) -> bool:
        if category == AUTH:
            return self.level in ("y", "v")
        if category == PASSWD:
            return self.level != "n"
        return True

    def log(self, category: int, message: str, priority: str = "notice") -> None:
        if self.wanted(category):
            self.send(message, priority)

    def send(self, message: str, priority: str = "notice") -> None:
        # vpopmail's sysc(): '%' becomes '#'; control characters would forge lines.
        text = "".join(c if c >= " " and c != "\x7f" else "?" for c in message.replace("%", "#"))
        try:
            stamp = clock.syslog_stamp(clock.now())
        except ConfigError:  # a bad VPOP_CLOCK must not silence the line that may report it
            stamp = clock.syslog_stamp(time.time())
        pri = _FACILITY_MAIL * 8 + _PRIORITY.get(priority, 5)
        pid = os.getpid() if self.pid is None else self.pid
        data = f"<{pri}>{stamp} {self.ident}[{pid}]: {text}".encode("utf-8", "replace")
        try:
            if self._sock is None:
                import _socket

                self._sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM)
                self._sock.connect(self.socket_path)
            self._sock.send(data)
        except OSError:
            pass


_captured: list[str] | None = None


def capture_stderr(lines: list[str] | None) -> None:
    """Collect :func:`stderr_line`'s lines in ``lines`` instead of writing them (None: write again).

    vlookupd decides logins for programs whose stderr it does not have: it sends them the lines.
    """
    global _captured
    _captured = lines


def stderr_line(text: str) -> None:
    """One line on fd 2, unbuffered; a closed stderr is not an error (qmail closes it)."""
    if _captured is not None:
        _captured.append(text)
        return
    try:
        os.write(2, (text + "\n").encode("utf-8", "replace"))
    except OSError:
        pass
