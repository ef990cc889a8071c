"""qmail-getpw as qmail-lspawn runs it: ``qmail-getpw LOCAL``.

Output on stdout ``user\\0uid\\0gid\\0home\\0dash\\0ext\\0`` and exit 0; 100 without an
argument; 111 when the database cannot answer (nothing printed: qmail-lspawn defers -- never
a fall-through to another candidate or to ``alias``, which would misroute mail); 115 when a
home cannot be stat'ed for a temporary reason; 116 when there is no ``alias`` user.

stdin is qmail-lspawn's command pipe and is never read; stderr is closed by qmail-start and
is never written (a descriptor opened later could take its number).
"""

import errno
import os
import sys

from vpop.errors import TemporaryFailure, VpopError
from vpop.names import ascii_lower

BREAK = "-"
USERLEN = 32  # GETPW_USERLEN: candidates of 32 characters or more are skipped
EXIT_NFS, EXIT_NOALIAS, EXIT_SYS = 115, 116, 118
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
    """Candidate lookups: the mailbox table first (qmail-mysql store), then /etc/passwd."""

    def __init__(self, settings) -> None:
        self.settings = settings
        self.store = None
        if settings.store == "qmail-mysql":
            from vpop import log as vlog
            from vpop.stores import open_store

            logger = vlog.Logger("qmail-getpw", settings.logging, settings.syslog_socket)
            self.store = open_store(settings, logger)

    def find(self, name: str) -> tuple[str, int, int, str] | None:
        if self.store is not None:
            account = self.store.mailbox(name)
            if account is not None:
                return account.name, account.uid, account.gid, account.home
        if self.settings.getpw_system_users:
            import pwd

            try:
                entry = pwd.getpwnam(name)
            except KeyError:
                return None
            return entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir
        return None


def home_owned(uid: int, home: str) -> bool:
    """qmail-getpw's acceptance test: uid != 0 and stat(home).st_uid == uid."""
    if uid == 0:
        return False
    try:
        return os.stat(home).st_uid == uid
    except OSError as exc:
        if exc.errno in TEMPORARY_ERRNOS:
            raise HomeCheckFailed() from None
        return False


def resolve(local: str, lookup: Lookup) -> tuple[str, int, int, str, str, str] | int:
    """The six output fields for ``local``, or an exit code."""
    for pos in range(len(local), 0, -1):
        if pos != len(local) and local[pos] != BREAK:
            continue
        candidate = local[:pos]
        if len(candidate) >= USERLEN:
            continue
        found = lookup.find(ascii_lower(candidate))
        if found is None:
            continue
        name, uid, gid, home = found
        try:
            if not home_owned(uid, home):
                continue
        except HomeCheckFailed:
            return EXIT_NFS
        if pos == len(local):
            return name, uid, gid, home, "", ""
        return name, uid, gid, home, "-", local[pos + 1:]
    found = lookup.find("alias")
    if found is None:
        return EXIT_NOALIAS
    name, uid, gid, home = found
    return name, uid, gid, home, "-", local


def main(argv: list[str] | None = None) -> int:
    """Entry point; the only place where outcomes become exit codes."""
    argv = sys.argv if argv is None else argv
    if len(argv) < 2:
        return 100
    for fd in (0, 1, 2):  # keep later descriptors off 0-2 (stderr is closed under qmail-lspawn)
        try:
            os.fstat(fd)
        except OSError:
            os.open(os.devnull, os.O_RDWR)
    try:
        from vpop.config import load_settings

        lookup = Lookup(load_settings())
        result = resolve(argv[1], lookup)
    except VpopError as exc:
        return 111 if isinstance(exc, TemporaryFailure) else exc.exit_code
    except OSError:
        return EXIT_SYS
    if isinstance(result, int):
        return result
    name, uid, gid, home, dash, ext = result
    data = f"{name}\0{uid}\0{gid}\0{home}\0{dash}\0{ext}\0".encode("utf-8", "surrogateescape")
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(1, view):]
    except OSError:
        return EXIT_SYS
    return 0
