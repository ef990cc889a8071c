"""vchkpw: checkpassword authentication for vpopmail users.

Protocol only: read fd 3, decide, then exec argv[1..] or exit.  Everything that knows a
store, a file format or a password scheme lives in ``vpop``.  This module maps the
exceptions of :mod:`vpop.errors` to exit codes in exactly one place (:func:`main`).
"""

import os
import sys

from vpop import auth
from vpop import log as vlog
from vpop.auth import SMTP, Attempt
from vpop.errors import AuthFailure, ConfigError, TemporaryFailure, UsageError, VpopError, raised_at
from vpop.log import stderr_line as _stderr

FD3_LIMIT = 512
_NOT_RUNNABLE = ("vchkpw is only for talking with qmail-popup and qmail-pop3d. "
                 "It is not for runnning on the command line.")


class NotRunnable(UsageError):
    """fd 3 cannot be read: vchkpw was not started by qmail-popup or a checkpassword client."""


def read_fd3(fd: int = 3) -> bytes:
    """Read fd 3 to EOF, at most 512 bytes (checkpassword's limit); more is refused."""
    chunks = []
    total = 0
    while True:
        try:
            chunk = os.read(fd, FD3_LIMIT + 1 - total)
        except OSError as exc:
            raise NotRunnable(f"cannot read fd 3: {exc.strerror}", 11) from None
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
        if total > FD3_LIMIT:
            raise AuthFailure("more than 512 bytes on fd 3", 11)
    try:
        os.close(fd)
    except OSError:
        pass
    return b"".join(chunks)


def split_fd3(data: bytes) -> tuple[bytes, bytes, bytes]:
    """login, password, timestamp: each ends at a NUL or at the end of the data, as in vpopmail.

    So ``login\\0password`` without its last NUL is a login; what is missing is empty.
    """
    parts = data.split(b"\0", 3)
    parts += [b""] * (3 - len(parts))
    return parts[0], parts[1], parts[2]


class Login(Attempt):
    """vchkpw's attempt: the service comes from the port, Dovecot's variables or the program name."""

    def __init__(self, environ: dict, argv: list[str]) -> None:
        from vpop.names import remote_ip

        # Dovecot's checkpassword driver always sets ORIG_UID (its auth process uid) and SERVICE.
        self.dovecot = "ORIG_UID" in environ and ("SERVICE" in environ or "AUTHORIZED" in environ)
        service, log_name, self.smtp_by_name = auth.detect_service(environ, argv[1])
        super().__init__(environ, service, remote_ip(environ), log_name,
                         lookup_only=self.dovecot and environ.get("AUTHORIZED") == "1")
        self.argv = argv


def authenticate(login: Login, settings, data: bytes) -> None:
    """Decide the login with :mod:`vpop.auth`; on success start the session (never returns)."""
    raw_login, password, challenge = split_fd3(data)
    if password:
        login.lookup_only = False  # a password was sent: check it, whatever AUTHORIZED says
    # No NUL at all (an empty fd 3, or a login without its NUL) is misuse of the interface:
    # checkpassword's 2, and vpopmail's 12 or 13 with its log line.
    refusal = AuthFailure if b"\0" in data else UsageError
    grant = None
    if settings.lookup_socket != "none":  # vlookupd decides, if it can answer
        from vpop.lookup import client

        grant = client.authenticate(login, settings, raw_login, password, challenge, null_refusal=refusal)
    if grant is None:
        grant = auth.authenticate(login, settings, raw_login, password, challenge, null_refusal=refusal)
    if grant.mailbox:
        login.environ["MAIL"] = grant.mailbox
    start_session(login, grant)


def start_session(login: Login, ident: auth.Grant) -> None:
    """Drop privileges, chdir, set the environment and exec argv[1..]."""
    env = login.environ
    is_root = os.geteuid() == 0
    if ident.uid == 0 or ident.gid == 0:
        # qmail-getpw and qmail-lspawn refuse uid 0 too: a row must not hand out a root session.
        login.say(vlog.INTERNAL, f"refusing uid/gid 0 for {login.who()}")
        raise TemporaryFailure("refusing a session as uid or gid 0", 5)
    if is_root and login.smtp_by_name and not login.dovecot:
        login.say(vlog.LOGON, f"smtp session assumed from the program name {login.argv[1]}: "
                              f"no setuid {login.who()}")
    if is_root and login.service != SMTP and not login.dovecot:
        try:
            os.setgroups([ident.gid])
            os.setgid(ident.gid)
        except OSError as exc:
            login.say(vlog.INTERNAL, f"setgid {ident.gid} failed errno {exc.errno} {login.who()}")
            raise TemporaryFailure("setgid failed", 4) from None
        try:
            os.setuid(ident.uid)
        except OSError as exc:
            login.say(vlog.INTERNAL, f"setuid {ident.uid} failed errno {exc.errno} {login.who()}")
            raise TemporaryFailure("setuid failed", 5) from None
    if login.service != SMTP or login.dovecot:
        enter_home(login, ident)

    # vpopmail's order: USER, HOME, SHELL, VPOPUSER (setenv: an inherited one keeps its place).
    if login.dovecot:
        # Dovecot renames the session to USER: keep the full address it asked about.
        # (an account store's session is the account's own name, whatever case was typed).
        env["USER"] = auth.session_user(ident, login.raw_login)
    else:
        env["USER"] = ident.name
    env["HOME"] = ident.home
    env["SHELL"] = "NOLOGIN"
    if ident.domain is not None:
        env["VPOPUSER"] = login.raw_login.lower()
    if login.dovecot:
        env["userdb_uid"] = str(ident.uid)
        env["userdb_gid"] = str(ident.gid)
        extra = env.get("EXTRA", "").split()
        env["EXTRA"] = " ".join(extra + [n for n in ("userdb_uid", "userdb_gid") if n not in extra])
        if login.lookup_only:
            env["AUTHORIZED"] = "2"
    try:
        os.execvpe(login.argv[1], login.argv[1:], env)
    except OSError as exc:
        login.say(vlog.INTERNAL, f"exec {login.argv[1]} failed errno {exc.errno} {login.who()}")
        raise TemporaryFailure(f"cannot run {login.argv[1]}: {exc.strerror}") from None


def enter_home(login: Login, ident: auth.Grant) -> None:
    """chdir to the home; a vanished vpopmail user directory is re-created first."""
    try:
        os.chdir(ident.home)
        return
    except OSError as exc:
        if ident.domain is None:
            login.say(vlog.INTERNAL, f"chdir failed errno {exc.errno} {ident.home} {login.who()}")
            raise TemporaryFailure("cannot enter the home directory", 6) from None
    from vpop.dirs import remake_user_dir
    from vpop.privileges import ActingAs

    domain = ident.domain
    try:
        with ActingAs(domain.uid, domain.gid):
            remake_user_dir(domain.dir, ident.home, None, None)
        os.chdir(ident.home)
    except (TemporaryFailure, OSError) as exc:
        errno = getattr(exc, "errno", 0)
        login.say(vlog.INTERNAL, f"autocreate dir errno {errno} {ident.home} {login.who()}")
        raise TemporaryFailure("cannot enter the user directory", 6) from None


def main(argv: list[str] | None = None) -> int:
    """Entry point; the only place where outcomes become exit codes."""
    argv = sys.argv if argv is None else argv
    from vpop.environment import original_environ

    environ = original_environ()
    settings = None
    login = None
    try:
        from vpop.config import load_settings

        settings = load_settings(environ)
        if len(argv) < 2:
            raise UsageError("usage: vchkpw prog [args...]", 11)
        login = Login(environ, argv)
        login.log = vlog.Logger(settings.log_name, settings.logging, settings.syslog_socket)
        try:
            data = read_fd3()
        except AuthFailure as exc:
            login.say(vlog.LOGON, f"fd 3 refused: {exc.message} :{login.ip}")
            raise
        authenticate(login, settings, data)
        return 0  # not reached: authenticate execs
    except VpopError as exc:
        if isinstance(exc, NotRunnable):
            _stderr(f"{login.log_name if login is not None else 'vchkpw'}: {_NOT_RUNNABLE}")
        elif isinstance(exc, UsageError):
            _stderr(f"vchkpw: {exc.message}")
        elif isinstance(exc, TemporaryFailure):
            _stderr(f"vchkpw: {exc.message}")
            if login is not None and login.log is not None and not isinstance(exc, ConfigError):
                login.log.send(f"{login.log_name}: {exc.message} {login.who()}")
        if login is not None and login.dovecot and login.lookup_only and isinstance(exc, AuthFailure):
            return 3  # Dovecot userdb lookup: no such user (whatever the reason)
        if settings is not None and settings.exit_codes == "vpopmail":
            return exc.vpopmail_code
        return exc.exit_code
    except Exception as exc:
        # Anything unforeseen (a file that is not text, a driver error...) must not become Python's
        # exit 1, "wrong password".  Name the place, not the message: it could quote a secret.
        where = raised_at(exc, "vchkpw")
        _stderr(f"vchkpw: internal error {exc.__class__.__name__} at {where}")
        if login is not None and login.log is not None:
            login.log.send(f"{login.log_name}: internal error {exc.__class__.__name__} at {where} "
                           f"{login.who()}")
        return 111

