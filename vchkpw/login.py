"""vchkpw's whole path: the login decided here or by vlookupd, the session, the exit codes.

:mod:`vchkpw.main` comes here for everything but a plain yes from the daemon (see there).
Everything that knows a store, a file format or a password scheme lives in ``vpop``.  This
module maps the exceptions of :mod:`vpop.errors` to exit codes in exactly one place (:func:`run`).
"""

import os

from vpop import auth, session
from vpop import log as vlog
from vpop.errors import AuthFailure, ConfigError, TemporaryFailure, UsageError, VpopError, raised_at
from vpop.log import stderr_line as _stderr

from vchkpw.main import split_fd3

_NOT_RUNNABLE = ("vchkpw is only for talking with qmail-popup and qmail-pop3d. "
                 "It is not for runnning on the command line.")


class NotRunnable(UsageError):
    """fd 3 cannot be read: vchkpw was not started by qmail-popup or a checkpassword client."""


class Login(auth.CheckpasswordAttempt):
    """vchkpw's attempt, with the command line it is to run."""

    def __init__(self, environ: dict, argv: list[str]) -> None:
        super().__init__(environ, argv[1])
        self.argv = argv


def authenticate(login: Login, settings, data: bytes, asked, failed=None) -> None:
    """Decide the login; on success start the session (never returns).

    ``asked`` is vlookupd's ``(status, answer)`` when :mod:`vchkpw.main` had one, else None: no
    daemon, or one that could not answer, and the login is decided here, as if there were none.
    ``failed``: see :func:`start_session`.
    """
    raw_login, password, challenge = split_fd3(data)
    refusal = login.read_fd3(password, b"\0" in data)
    if asked is not None:
        from vpop.lookup.client import login_outcome

        login.raw_login = raw_login.decode("utf-8", "replace")
        grant = login_outcome(login, *asked)
    else:
        grant = auth.authenticate(login, settings, raw_login, password, challenge, null_refusal=refusal)
    start_session(login, grant, failed)


def start_session(login: Login, ident: auth.Grant, failed: session.StepFailed | None = None) -> None:
    """Drop privileges, chdir, set the environment and exec argv[1..] (:mod:`vpop.session`).

    ``failed``: the step that failed when vchkpw.main started the session itself (the steps
    before it were done): it is reported, or repaired (a vanished user directory), from here.
    """
    if failed is None:
        is_root = os.geteuid() == 0
        if ident.uid == 0 or ident.gid == 0:
            # qmail-getpw and qmail-lspawn refuse uid 0 too: a row must not hand out a root session.
            login.say(vlog.INTERNAL, f"refusing uid/gid 0 for {login.who()}")
            raise TemporaryFailure("refusing a session as uid or gid 0", 5)
        if is_root and login.smtp_by_name and not login.dovecot:
            login.say(vlog.LOGON, f"smtp session assumed from the program name {login.argv[1]}: "
                                  f"no setuid {login.who()}")
        try:
            if session.drops_privileges(is_root, login.service, login.dovecot):
                session.become(ident.uid, ident.gid)
            if session.enters_home(login.service, login.dovecot):
                session.enter(ident.home)
        except session.StepFailed as exc:
            failed = exc
    if failed is not None and failed.step == "setgid":
        login.say(vlog.INTERNAL, f"setgid {ident.gid} failed errno {failed.errno} {login.who()}")
        raise TemporaryFailure("setgid failed", 4)
    if failed is not None and failed.step == "setuid":
        login.say(vlog.INTERNAL, f"setuid {ident.uid} failed errno {failed.errno} {login.who()}")
        raise TemporaryFailure("setuid failed", 5)
    if failed is not None and failed.step == "chdir":
        remake_home(login, ident, failed)
    if failed is None or failed.step != "exec":
        env = {os.fsencode(key): os.fsencode(value) for key, value in login.environ.items()}
        session.set_environment(
            env, user=auth.session_user(ident, login.raw_login) if login.dovecot else ident.name,
            home=ident.home, vpopuser=auth.vpopuser(ident, login.raw_login), mailbox=ident.mailbox,
            dovecot_ids=(ident.uid, ident.gid) if login.dovecot else None, lookup_only=login.lookup_only)
        try:
            session.execute(login.argv[1], login.argv[1:], env)
        except session.StepFailed as exc:
            failed = exc
    login.say(vlog.INTERNAL, f"exec {login.argv[1]} failed errno {failed.errno} {login.who()}")
    raise TemporaryFailure(f"cannot run {login.argv[1]}: {failed.strerror}")


def remake_home(login: Login, ident: auth.Grant, failed: session.StepFailed) -> None:
    """The home could not be entered: a vanished vpopmail user directory is re-created first."""
    if ident.domain is None:
        login.say(vlog.INTERNAL, f"chdir failed errno {failed.errno} {ident.home} {login.who()}")
        raise TemporaryFailure("cannot enter the home directory", 6)
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


def run(argv: list[str], fd3: "bytes | VpopError", asked=None, settings=None,
        failed: Exception | None = None, environb: dict | None = None) -> int:
    """Everything after :mod:`vchkpw.main` read fd 3 (``fd3``: its bytes, or why it could not);
    the only place where outcomes become exit codes.

    ``asked``: see :func:`authenticate`; ``settings``: those vchkpw.main loaded, if it did (it
    may have become the user since: the file may not be readable any more); ``failed``: the
    step of the session that failed after vlookupd's yes (:class:`vpop.session.StepFailed`), or
    what went wrong unforeseen there; ``environb``: the environment it read (before any setuid).
    """
    from vpop.environment import original_environ

    environ = original_environ(environb)
    login = None
    try:
        if settings is None:
            from vpop.config import load_settings

            settings = load_settings(environ)
        if len(argv) < 2:
            raise UsageError("usage: vchkpw prog [args...]", 11)
        login = Login(environ, argv)
        login.log = vlog.Logger(settings.log_name, settings.logging, settings.syslog_socket)
        if isinstance(fd3, AuthFailure):
            login.say(vlog.LOGON, f"fd 3 refused: {fd3.message} :{login.ip}")
        if isinstance(fd3, VpopError):
            raise fd3
        if failed is not None and not isinstance(failed, session.StepFailed):
            raise failed
        authenticate(login, settings, fd3, asked, failed)
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

