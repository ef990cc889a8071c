"""Starting a checkpassword session: the identity, the directory, the environment, the exec.

vchkpw runs this after a yes, whether it decided the login itself or vlookupd decided it
(``vchkpw.main``'s quick path).  It uses ``posix`` only, never ``os``: on the quick path the
whole process must cost little more than the interpreter's start (importing ``os`` alone costs
about a tenth of it).  Each step raises :class:`StepFailed` naming itself, and the caller logs
the failure in vchkpw's words (``vchkpw.login``).

Environments are ``bytes -> bytes`` dicts, as ``posix.environ`` and ``execve`` have them; new
values are given as text and encoded as ``os.fsencode`` would.
"""

import posix
import sys

SMTP = "smtp"  # the service that keeps the caller's identity (qmail-smtpd's AUTH runs as qmaild)
_DEFAULT_PATH = b"/bin:/usr/bin"  # os.defpath: execvp's search path when PATH is unset


class StepFailed(Exception):  # noqa: N818 - names the step, as vchkpw's log line does
    """``step`` (``setgid``, ``setuid``, ``chdir``, ``exec``) failed with ``errno``."""

    def __init__(self, step: str, errno: int, strerror: str = "") -> None:
        super().__init__(step, errno)
        self.step = step
        self.errno = errno
        self.strerror = strerror


def drops_privileges(is_root: bool, service: str, dovecot: bool) -> bool:
    """Whether the session runs as the user: root asked, and neither SMTP AUTH nor Dovecot
    (which keeps its own identity and takes ``userdb_uid``/``userdb_gid`` instead)."""
    return is_root and service != SMTP and not dovecot


def enters_home(service: str, dovecot: bool) -> bool:
    """Whether the session starts in the user's home (not for SMTP AUTH, as vpopmail)."""
    return service != SMTP or dovecot


def become(uid: int, gid: int) -> None:
    """setgroups, setgid, setuid, in that order (the group first, while root may set it)."""
    try:
        posix.setgroups([gid])
        posix.setgid(gid)
    except OSError as exc:
        raise StepFailed("setgid", exc.errno or 0, exc.strerror or "") from None
    try:
        posix.setuid(uid)
    except OSError as exc:
        raise StepFailed("setuid", exc.errno or 0, exc.strerror or "") from None


def enter(home: str) -> None:
    try:
        posix.chdir(home)
    except OSError as exc:
        raise StepFailed("chdir", exc.errno or 0, exc.strerror or "") from None


def _b(text: str) -> bytes:
    return text.encode(sys.getfilesystemencoding(), "surrogateescape")


def set_environment(env: dict, *, user: str, home: str, vpopuser: str | None, mailbox: str = "",
                    dovecot_ids: tuple[int, int] | None = None, lookup_only: bool = False) -> None:
    """The session's variables in vpopmail's order: USER, HOME, SHELL, VPOPUSER (an inherited
    variable keeps its place, as setenv(3) keeps it); ``MAIL`` first for an account store.

    ``dovecot_ids`` (uid, gid): Dovecot's checkpassword driver reads ``userdb_uid`` and
    ``userdb_gid`` named in ``EXTRA``; a userdb lookup (``lookup_only``) answers ``AUTHORIZED=2``.
    """
    if mailbox:
        env[b"MAIL"] = _b(mailbox)
    env[b"USER"] = _b(user)
    env[b"HOME"] = _b(home)
    env[b"SHELL"] = b"NOLOGIN"
    if vpopuser is not None:
        env[b"VPOPUSER"] = _b(vpopuser)
    if dovecot_ids is not None:
        env[b"userdb_uid"] = b"%d" % dovecot_ids[0]
        env[b"userdb_gid"] = b"%d" % dovecot_ids[1]
        extra = env.get(b"EXTRA", b"").decode(sys.getfilesystemencoding(), "surrogateescape").split()
        extra += [name for name in ("userdb_uid", "userdb_gid") if name not in extra]
        env[b"EXTRA"] = _b(" ".join(extra))
        if lookup_only:
            env[b"AUTHORIZED"] = b"2"


def execute(program: str, args: list[str], env: dict) -> None:
    """``execvpe``: a name without a slash is looked for in the new environment's ``PATH``, as
    ``os.execvpe`` looks (the first error other than "not there" is the one reported)."""
    name = _b(program)
    argv = [_b(arg) for arg in args]
    if b"/" in name:
        candidates = [name]
    else:
        path = env.get(b"PATH", _DEFAULT_PATH)
        candidates = [(directory or b".") + b"/" + name for directory in path.split(b":")]
    first = None
    for candidate in candidates:
        try:
            posix.execve(candidate, argv, env)
        except OSError as exc:
            if first is None and exc.errno not in (2, 20):  # ENOENT, ENOTDIR: try the next
                first = exc
            last = exc
    failed = first or last
    raise StepFailed("exec", failed.errno or 0, failed.strerror or "")
