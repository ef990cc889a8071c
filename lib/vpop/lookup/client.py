"""Asking vlookupd: one unix-socket connection per process, a bounded wait, and a way out.

A client asks only when ``lookup_socket`` names a socket.  Whatever keeps the daemon from
answering -- no socket, a dead or stopped daemon, a peer that is not the daemon, an answer later
than ``lookup_timeout`` seconds, a refusal of this uid, a daemon running with other settings --
raises :class:`Unavailable`, and the caller does its direct lookup as if there were no daemon.
An answer that *is* an outcome (``temp``: the database is down) is never turned into a direct
lookup: it is raised as the exception the direct path would have raised.

The socket comes from the C module ``_socket`` (the ``socket`` module costs ~10 ms of start-up),
as :mod:`vpop.log` does; nothing here imports a database driver.
"""

import os

from vpop.errors import (
    AuthFailure,
    ConfigError,
    DatabaseFailure,
    PermanentFailure,
    TemporaryFailure,
    UsageError,
    VpopError,
)
from vpop.lookup.protocol import (
    MAX_HEADER,
    UNANSWERED,
    Fields,
    ProtocolError,
    decode_body,
    encode,
    parse_header,
)

#: exception kinds on the wire (``kind`` of a ``refused`` or ``temp`` answer)
KINDS = {"auth": AuthFailure, "usage": UsageError, "perm": PermanentFailure, "temp": TemporaryFailure,
         "db": DatabaseFailure, "config": ConfigError}


class Unavailable(Exception):  # noqa: N818 - not an error of the caller: "do it yourself"
    """The daemon cannot answer this process: use the direct path."""


def kind_of(exc: BaseException) -> str:
    """The wire kind of one of our exceptions (the most specific class first)."""
    for kind in ("config", "db", "usage", "perm", "auth", "temp"):
        if isinstance(exc, KINDS[kind]):
            return kind
    raise TypeError(exc.__class__.__name__)


def failure(fields: Fields) -> Exception:
    """The exception a ``refused``/``temp`` answer stands for, as the direct path raises it."""
    cls = KINDS.get(fields.text("kind"), TemporaryFailure)
    exc = cls.__new__(cls)
    code = fields.number("code", cls.exit_code)
    VpopError.__init__(exc, fields.text("message"), code)
    if cls is ConfigError:
        exc.path, exc.line = "", None
    if fields.get("logged") == b"1":
        exc.logged = True
    return exc


def config_identity(path: str) -> str:
    """``dev:ino:mtime:size`` of the settings file: the daemon answers only for the same settings."""
    try:
        info = os.stat(path)
    except OSError:
        return "none"
    return f"{info.st_dev}:{info.st_ino}:{info.st_mtime_ns}:{info.st_size}"


class Client:
    """One connection to the daemon, opened on the first question and kept for the next ones."""

    def __init__(self, settings) -> None:
        self.path = settings.lookup_socket
        self.timeout = max(settings.lookup_timeout, 1)
        self.settings_fields = [("config", settings.path), ("config_id", config_identity(settings.path))]
        clock = os.environ.get("VPOP_CLOCK")
        if clock:
            self.settings_fields.append(("clock", clock))
        self.sock = None
        self.buffer = b""

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None

    def ask(self, op: str, fields) -> tuple[str, Fields]:
        """Send one request; the answer's status and fields.  Raises :class:`Unavailable`."""
        import time

        deadline = time.monotonic() + self.timeout
        try:
            frame = encode(op, [*self.settings_fields, *fields])
        except ValueError:
            raise Unavailable("request cannot be framed") from None
        try:
            if self.sock is None:
                import _socket

                sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
                self.sock = sock
                sock.settimeout(self.timeout)
                sock.connect(self.path)
                check_daemon(sock)
            self.sock.settimeout(max(deadline - time.monotonic(), 0.001))
            self.sock.sendall(frame)
            header = self._read_line(deadline)
            word, length = parse_header(header)
            body = self._read_exactly(length, deadline)
            answer = decode_body(body)
        except (OSError, ProtocolError, ValueError, Unavailable) as exc:
            self.close()
            raise Unavailable(str(exc) or exc.__class__.__name__) from None
        if word in UNANSWERED:
            self.close()
            raise Unavailable(f"{word}: {answer.text('message')}")
        return word, answer

    def _receive(self, deadline: float) -> bytes:
        import time

        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no answer in time")
        self.sock.settimeout(remaining)
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionResetError("the daemon closed the connection")
        return chunk

    def _read_line(self, deadline: float) -> bytes:
        while b"\n" not in self.buffer:
            if len(self.buffer) > MAX_HEADER:
                raise ProtocolError("header too long")
            self.buffer += self._receive(deadline)
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line

    def _read_exactly(self, length: int, deadline: float) -> bytes:
        while len(self.buffer) < length:
            self.buffer += self._receive(deadline)
        data, self.buffer = self.buffer[:length], self.buffer[length:]
        return data


def check_daemon(sock) -> None:
    """The peer must be root (or this process's own uid): whoever else bound the socket's path is
    not the daemon, and must not decide logins (vchkpw runs as root and setuids to the answer)."""
    import _socket
    import sys

    creds = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12)  # struct ucred: pid, uid, gid
    uid = int.from_bytes(creds[4:8], sys.byteorder)
    if uid != 0 and uid != os.geteuid():
        raise Unavailable(f"the socket's peer is uid {uid}, not root")


def open_client(settings) -> Client | None:
    """A client when the settings name a socket (``lookup_socket``), else None."""
    if settings.lookup_socket == "none":
        return None
    return Client(settings)


def tell(settings, op: str, fields) -> Fields | None:
    """A one-off question (``invalidate``, ``stats``); None when there is no daemon to answer."""
    client = open_client(settings)
    if client is None:
        return None
    try:
        status, answer = client.ask(op, fields)
    except Unavailable:
        return None
    finally:
        client.close()
    return answer if status == "ok" else None


# ---------------------------------------------------------------------------------------------
# the login decision (vchkpw; Dovecot's Lua script speaks the same ``auth`` request)


def auth_fields(attempt, raw_login: bytes, password: bytes, challenge: bytes, record_login: bool,
                null_refusal) -> list:
    """The ``auth`` request of an :class:`vpop.auth.Attempt`."""
    fields = [("login", raw_login), ("password", password), ("challenge", challenge),
              ("service", attempt.service), ("ip", attempt.ip), ("log_name", attempt.log_name),
              ("lookup", "1" if attempt.lookup_only else "0"), ("record", "1" if record_login else "0"),
              ("null", "usage" if null_refusal is UsageError else "auth"),
              ("log", "0" if attempt.log is None else "1")]
    for name in ("VPOPMAIL_DOMAIN", "TCPLOCALIP"):
        if name in attempt.environ:
            fields.append((name, attempt.environ[name]))
    return fields


def authenticate(attempt, settings, raw_login: bytes, password: bytes, challenge: bytes = b"", *,
                 record_login: bool = True, null_refusal=AuthFailure):
    """:func:`vpop.auth.authenticate` decided by the daemon: a Grant, a raised outcome, or None
    when the daemon cannot answer (then the caller decides itself).

    The daemon logs the attempt's lines with this process's pid, as the direct path would.
    """
    client = open_client(settings)
    if client is None:
        return None
    attempt.raw_login = raw_login.decode("utf-8", "replace")
    try:
        status, answer = client.ask("auth", auth_fields(attempt, raw_login, password, challenge,
                                                        record_login, null_refusal))
    except Unavailable:
        return None
    finally:
        client.close()
    attempt.user = answer.text("user")
    attempt.domain_name = answer.text("domain")
    for line in answer.all("stderr"):
        from vpop.log import stderr_line

        stderr_line(line.decode("utf-8", "replace"))
    if status == "ok":
        return grant_from(answer)
    if status in ("refused", "temp"):
        raise failure(answer)
    return None


def grant_from(answer: Fields):
    """The :class:`vpop.auth.Grant` of an ``ok`` answer to ``auth``."""
    from vpop.auth import Grant

    domain = None
    if answer.get("domain_dir") is not None:
        from vpop.assign import Domain

        domain = Domain(answer.text("domain_name"), answer.text("domain_real"), answer.number("domain_uid"),
                        answer.number("domain_gid"), answer.text("domain_dir"))
    return Grant(answer.text("name"), answer.number("uid"), answer.number("gid"), answer.text("home"), domain,
                 answer.text("full_name"), None, answer.number("flags"), answer.text("auth_type"),
                 answer.text("mailbox"))
