"""qmail-getpw as qmail-lspawn runs it: ``qmail-getpw LOCAL``.

Output on stdout ``user\\0uid\\0gid\\0home\\0dash\\0ext\\0`` and exit 0; 100 without an
argument; 111 when the database cannot answer, a settings or credentials file is wrong, or
anything unforeseen happens (nothing printed: qmail-lspawn defers -- never a fall-through to
another candidate or to ``alias``, which would misroute mail); 113 when the ``alias`` user
has uid or gid 0; 115 when a home cannot be stat'ed for a temporary reason; 116 when there is
no ``alias`` user.

The local part is handled as the bytes qmail-lspawn passed (a remote ``RCPT TO`` may make
them anything but NUL), as the C program does: candidates are cut and counted in bytes,
only A-Z are lower-cased, and the ext is printed as received.  A candidate that is not UTF-8
matches no ``mailbox`` row; /etc/passwd is asked with its bytes.

stdin is qmail-lspawn's command pipe and is never read; stderr is closed by qmail-start and
is never written (a descriptor opened later could take its number): why a delivery was
deferred goes to syslog.

With ``lookup_socket`` set, the table and /etc/passwd are asked through vlookupd, all the
candidates in one ``candidates`` request; the homes are still checked here, with qmail-getpw's
own permissions.  That path imports no ``os`` and no database driver.
"""

import errno
import posix
import sys

from vpop.errors import TemporaryFailure, VpopError, raised_at
from vpop.getpw import Entry, candidates, find_entry

EXIT_NFS, EXIT_NOALIAS, EXIT_SYS = 115, 116, 118
EXIT_ROOT = 113  # QLX_ROOT: qmail-lspawn reports "Not allowed to perform deliveries as root."
# error_temp's list: a stat failing with one of these is temporary (exit 115).
TEMPORARY_ERRNOS = frozenset(
    getattr(errno, name)
    for name in ("EINTR", "ENOMEM", "ETXTBSY", "EIO", "ETIMEDOUT", "EAGAIN", "EWOULDBLOCK", "EDEADLK",
                 "EBUSY", "ENFILE", "EMFILE", "EFBIG", "ENOSPC", "ENETDOWN", "ENETUNREACH", "ENETRESET",
                 "ECONNABORTED", "ECONNRESET", "ECONNREFUSED", "ENOBUFS", "ESTALE", "ENOLCK",
                 "EHOSTDOWN", "EHOSTUNREACH", "EDQUOT", "EUSERS", "EPROCLIM", "ETOOMANYREFS")
    if hasattr(errno, name)
)

class HomeCheckFailed(Exception):
    """stat(home) failed temporarily (qmail-getpw's QLX_NFS)."""


class Lookup:
    """Candidate lookups, directly: the mailbox table first (qmail-mysql store), then /etc/passwd."""

    def __init__(self, settings, logger=None) -> None:
        self.settings = settings
        self.store = None
        if settings.store == "qmail-mysql":
            from vpop.stores import open_store

            self.store = open_store(settings, logger)

    def find(self, name: bytes) -> Entry | None:
        """The entry of ``name`` (bytes as received, ASCII-lower-cased by the caller), or None."""
        return find_entry(self.store, self.settings.getpw_system_users, name)

    def confirm_on_primary(self) -> bool:
        return self.store is not None and self.store.confirm_on_primary()


class DaemonLookup:
    """The same lookups answered by vlookupd: the candidates of the local part up to the first
    entry found, in one request, and every candidate and ``alias`` in a second one when that
    entry is not taken; :meth:`confirm_on_primary` asks again on the primary when the daemon
    read a replica."""

    def __init__(self, settings, client, local: bytes) -> None:
        self.client = client
        self.local = local
        self.primary = False
        self.entries = self._ask(every=False)

    def _ask(self, every: bool) -> dict:
        fields = [("local", self.local)]
        if every:
            fields.append(("all", "1"))
        if self.primary:
            fields.append(("primary", "1"))
        status, answer = self.client.ask("candidates", fields)
        if status != "ok":
            from vpop.lookup.client import failure

            raise failure(answer)
        self.complete = answer.get("complete") != b"0"
        self.replica = answer.get("replica") == b"1"
        try:
            rows = zip(answer.all("candidate"), answer.all("name"), answer.all("uid"), answer.all("gid"),
                       answer.all("home"), strict=True)
            entries = {candidate: (name, int(uid), int(gid), home)
                       for candidate, name, uid, gid, home in rows}
        except ValueError:
            entries = None
        if entries is None or (not self.complete and len(entries) != 1):
            from vpop.lookup.client import Unavailable

            raise Unavailable("a candidates answer that does not parse")
        # the names the daemon looked up: all, or those up to the one it found (in resolve's order)
        self.looked_up = set()
        if not self.complete:
            for _, name in candidates(self.local):
                self.looked_up.add(name)
                if name in entries:
                    break
        return entries

    def find(self, name: bytes) -> Entry | None:
        if name not in self.entries and not self.complete and name not in self.looked_up:
            self.entries = self._ask(every=True)
        return self.entries.get(name)

    def confirm_on_primary(self) -> bool:
        if self.primary or not self.replica:
            return False
        self.primary = True
        self.entries = self._ask(every=False)
        return True


def home_owned(uid: int, home: str | bytes, gid: int | None = None) -> bool:
    """qmail-getpw's acceptance test: uid != 0 and stat(home).st_uid == uid.

    We also refuse gid 0 (stock qmail-getpw does not look at the gid, and qmail-lspawn would
    run the delivery in group root); a row with gid 0 is skipped exactly as one with uid 0.
    """
    if uid == 0 or gid == 0:
        return False
    try:
        return posix.stat(home).st_uid == uid
    except OSError as exc:
        if exc.errno in TEMPORARY_ERRNOS:
            raise HomeCheckFailed() from None
        return False


def resolve(local: bytes, lookup: Lookup) -> tuple[bytes, int, int, bytes, bytes, bytes] | int:
    """The six output fields for ``local`` (the argument's bytes), or an exit code."""
    for pos, candidate in candidates(local):
        found = lookup.find(candidate)
        if found is None:
            continue
        name, uid, gid, home = found
        try:
            if not home_owned(uid, home, gid):
                continue
        except HomeCheckFailed:
            return EXIT_NFS
        if pos == len(local):
            return name, uid, gid, home, b"", b""
        return name, uid, gid, home, b"-", local[pos + 1:]
    if lookup.confirm_on_primary():
        return resolve(local, lookup)  # no candidate on the replica: the primary decides before alias
    found = lookup.find(b"alias")
    if found is None:
        return EXIT_NOALIAS
    name, uid, gid, home = found
    if uid == 0 or gid == 0:
        # Stock prints a uid-0 alias and qmail-lspawn then refuses it with QLX_ROOT; we give
        # that answer ourselves, and the same one for gid 0, which qmail-lspawn would accept.
        return EXIT_ROOT
    return name, uid, gid, home, b"-", local


def main(argv: list[str] | None = None) -> int:
    """Entry point; the only place where outcomes become exit codes.

    Whatever goes wrong unforeseen is 111 with nothing on stdout: a Python traceback would
    exit 1, which qmail-lspawn reports as a permanent failure, and the mail would bounce.
    """
    argv = sys.argv if argv is None else argv
    if len(argv) < 2:
        return 100
    loaded: list = []  # the settings, once read: where an error can be logged
    try:
        return run(argv[1], loaded)
    except Exception as exc:  # see the docstring
        # Name the place, not the message: it could quote the local part or a secret.
        try:
            if loaded:
                name, where = exc.__class__.__name__, raised_at(exc, "qmail_getpw")
                _logger(loaded[0]).send(f"internal error {name} at {where}, deferred", "err")
        except Exception:  # the report must not turn 111 into 1
            pass
        return 111


def run(local: str, loaded: list) -> int:
    """One lookup for the local part ``local``; ``loaded`` receives the settings once read."""
    for fd in (0, 1, 2):  # keep later descriptors off 0-2 (stderr is closed under qmail-lspawn)
        try:
            posix.fstat(fd)
        except OSError:
            posix.open("/dev/null", posix.O_RDWR)
    name = local.encode(sys.getfilesystemencoding(), "surrogateescape")  # the argument's bytes
    try:
        from vpop.config import load_settings

        settings = load_settings()
        loaded.append(settings)
        result = None
        if settings.store == "qmail-mysql" and settings.lookup_socket != "none":
            result = resolve_through_daemon(settings, name)
        if result is None:
            lookup = Lookup(settings, _logger(settings) if settings.store == "qmail-mysql" else None)
            result = resolve(name, lookup)
    except VpopError as exc:
        if loaded and isinstance(exc, TemporaryFailure) and not getattr(exc, "logged", False):
            # stderr is closed under qmail-lspawn: syslog is the only place to say why mail waits.
            _logger(loaded[0]).send(f"{exc.message}, deferred", "err")
        return 111 if isinstance(exc, TemporaryFailure) else exc.exit_code
    except OSError:
        return EXIT_SYS
    if isinstance(result, int):
        return result
    name, uid, gid, home, dash, ext = result
    view = memoryview(b"\0".join((name, b"%d" % uid, b"%d" % gid, home, dash, ext)) + b"\0")
    try:
        while view:
            view = view[posix.write(1, view):]
    except OSError:
        return EXIT_SYS
    return 0


def resolve_through_daemon(settings, local: bytes):
    """:func:`resolve` on vlookupd's answers; None when the daemon cannot answer (then the
    caller resolves directly: nothing was decided, stat(2) is all that was done)."""
    from vpop.lookup.client import Client, Unavailable

    client = Client(settings)
    try:
        return resolve(local, DaemonLookup(settings, client, local))
    except Unavailable:
        return None
    finally:
        client.close()


def _logger(settings):
    from vpop import log as vlog

    return vlog.Logger("qmail-getpw", settings.logging, settings.syslog_socket)


