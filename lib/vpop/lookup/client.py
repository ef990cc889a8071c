"""Asking vlookupd: one unix-socket connection per process, a bounded wait, and a way out.

A client asks only when ``lookup_socket`` names a socket.  Whatever keeps the daemon from
answering -- no socket, a dead or stopped daemon, a peer that is not the daemon, an answer later
than ``lookup_timeout`` seconds, a refusal of this uid, a daemon running with other settings --
raises :class:`Unavailable`, and the caller does its direct lookup as if there were no daemon.
An answer that *is* an outcome (``temp``: the database is down) is never turned into a direct
lookup: it is raised as the exception the direct path would have raised.

The socket comes from the C module ``_socket`` (the ``socket`` module costs ~10 ms of start-up),
as :mod:`vpop.log` does; nothing here imports a database driver, nor ``os`` (vchkpw's quick path
imports this module and must stay near the interpreter's own start; see :mod:`vchkpw.main`).
:mod:`vpop.errors` is imported only to raise an outcome.
"""

import posix

from vpop.lookup.protocol import (
    MAX_HEADER,
    UNANSWERED,
    Fields,
    ProtocolError,
    decode_body,
    encode,
    parse_header,
)

#: the variables of vchkpw's environment that its ``login`` request carries: what decides the
#: service, the address, Dovecot's userdb lookup and the default domain (:mod:`vpop.auth`)
LOGIN_ENVIRONMENT = ("TCPLOCALPORT", "TCPREMOTEIP", "REMOTE_HOST", "SERVICE", "ORIG_UID", "AUTHORIZED",
                     "VPOPMAIL_DOMAIN", "TCPLOCALIP")


def _kinds() -> dict:
    """Exception kinds on the wire (``kind`` of a ``refused`` or ``temp`` answer)."""
    from vpop.errors import (
        AuthFailure,
        ConfigError,
        DatabaseFailure,
        PermanentFailure,
        TemporaryFailure,
        UsageError,
    )

    return {"auth": AuthFailure, "usage": UsageError, "perm": PermanentFailure, "temp": TemporaryFailure,
            "db": DatabaseFailure, "config": ConfigError}


class Unavailable(Exception):  # noqa: N818 - not an error of the caller: "do it yourself"
    """The daemon cannot answer this process: use the direct path."""


def kind_of(exc: BaseException) -> str:
    """The wire kind of one of our exceptions (the most specific class first)."""
    kinds = _kinds()
    for kind in ("config", "db", "usage", "perm", "auth", "temp"):
        if isinstance(exc, kinds[kind]):
            return kind
    raise TypeError(exc.__class__.__name__)


def failure(fields: Fields) -> Exception:
    """The exception a ``refused``/``temp`` answer stands for, as the direct path raises it."""
    from vpop.errors import ConfigError, TemporaryFailure, VpopError

    cls = _kinds().get(fields.text("kind"), TemporaryFailure)
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
        info = posix.stat(path)
    except OSError:
        return "none"
    return f"{info.st_dev}:{info.st_ino}:{info.st_mtime_ns}:{info.st_size}"


class Client:
    """One connection to the daemon, opened on the first question and kept for the next ones."""

    def __init__(self, settings) -> None:
        self.path = settings.lookup_socket
        self.timeout = max(settings.lookup_timeout, 1)
        self.settings_fields = [("config", settings.path), ("config_id", config_identity(settings.path))]
        clock = posix.environ.get(b"VPOP_CLOCK")
        if clock:
            self.settings_fields.append(("clock", clock))
        self.sock = None
        self.buffer = b""
        self.deadline = 0.0  # of the request sent last

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None
        self.buffer = b""

    def ask(self, op: str, fields) -> tuple[str, Fields]:
        """Send one request; the answer's status and fields.  Raises :class:`Unavailable`."""
        self.send(op, fields)
        return self.receive()

    def send(self, op: str, fields) -> None:
        """The first half of :meth:`ask`: the request goes out (a quick path then does what it can
        while the daemon works, and takes the answer with :meth:`receive`).  Raises Unavailable."""
        import time

        self.deadline = time.monotonic() + self.timeout
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
            self.sock.settimeout(max(self.deadline - time.monotonic(), 0.001))
            self.sock.sendall(frame)
        except (OSError, Unavailable) as exc:
            self.close()
            raise Unavailable(str(exc) or exc.__class__.__name__) from None

    def receive(self) -> tuple[str, Fields]:
        """The second half of :meth:`ask`: the answer to the request :meth:`send` sent, within the
        same bounded time.  Raises Unavailable."""
        if self.sock is None:
            raise Unavailable("no request was sent")
        try:
            header = self._read_line(self.deadline)
            word, length = parse_header(header)
            body = self._read_exactly(length, self.deadline)
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
    if uid != 0 and uid != posix.geteuid():
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
# vchkpw's login, decided by the daemon (Dovecot's Lua script speaks the ``auth`` request instead)


def login_fields(program: str, environ: dict, raw_login: bytes, password: bytes, challenge: bytes,
                 has_nul: bool) -> list:
    """vchkpw's ``login`` request: fd 3's fields, the program to run and :data:`LOGIN_ENVIRONMENT`
    (``environ`` as ``posix.environ`` holds it: bytes); the daemon decides as vchkpw would."""
    fields = [("login", raw_login), ("password", password), ("challenge", challenge),
              ("nul", "1" if has_nul else "0"), ("program", program)]
    for name in LOGIN_ENVIRONMENT:
        value = environ.get(name.encode())
        if value is not None:
            fields.append((name, value))
    return fields


def login_outcome(attempt, status: str, answer: Fields):
    """The :class:`vpop.auth.Grant` of a ``login`` (or ``auth``) answer, or its outcome raised, as
    :func:`vpop.auth.authenticate` would have ended; its stderr lines written."""
    attempt.user = answer.text("user")
    attempt.domain_name = answer.text("domain")
    for line in answer.all("stderr"):
        from vpop.log import stderr_line

        stderr_line(line.decode("utf-8", "replace"))
    if status == "ok":
        return grant_from(answer)
    raise failure(answer)


def grant_from(answer: Fields):
    """The :class:`vpop.auth.Grant` of an ``ok`` answer to ``login`` or ``auth``."""
    from vpop.auth import Grant

    domain = None
    if answer.get("domain_dir") is not None:
        from vpop.assign import Domain

        domain = Domain(answer.text("domain_name"), answer.text("domain_real"), answer.number("domain_uid"),
                        answer.number("domain_gid"), answer.text("domain_dir"))
    return Grant(answer.text("name"), answer.number("uid"), answer.number("gid"), answer.text("home"), domain,
                 answer.text("full_name"), None, answer.number("flags"), answer.text("auth_type"),
                 answer.text("mailbox"))
