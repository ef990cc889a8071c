"""vchkpw: checkpassword authentication for vpopmail users.

Protocol only: read fd 3, decide, then exec argv[1..] or exit.

The quick path: when ``lookup_socket`` names a running vlookupd, the daemon decides the whole
login (the ``login`` request: fd 3, the program and the variables that decide the service) and
a yes is turned into the session here, with ``posix`` and ``_socket`` only: no ``os``, no store,
no logger (the daemon logs the attempt with this process's pid).  That is what keeps a login
through the daemon near the interpreter's own start.  Everything else -- no daemon, one that
cannot answer, a refusal, a session step that fails, a case vchkpw logs itself -- goes on in
:mod:`vchkpw.login` with what was learnt so far, and ends exactly as it would have without the
quick path (that module maps outcomes to exit codes).
"""

import sys

FD3_LIMIT = 512


def read_fd3(fd: int = 3) -> bytes:
    """Read fd 3 to EOF, at most 512 bytes (checkpassword's limit); more is refused.

    The errors (:class:`vchkpw.login.NotRunnable`, an AuthFailure) are imported when raised: a
    login that reads its fd 3 never loads :mod:`vpop.errors`.
    """
    import posix

    chunks = []
    total = 0
    while True:
        try:
            chunk = posix.read(fd, FD3_LIMIT + 1 - total)
        except OSError as exc:
            from vchkpw.login import NotRunnable

            raise NotRunnable(f"cannot read fd 3: {exc.strerror}", 11) from None
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
        if total > FD3_LIMIT:
            from vpop.errors import AuthFailure

            raise AuthFailure("more than 512 bytes on fd 3", 11)
    try:
        posix.close(fd)
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


def ask_daemon(argv: list[str], environ: dict, data: bytes):
    """``(settings, (status, answer))`` from vlookupd; ``(settings, None)`` when it cannot answer,
    ``(None, None)`` when the settings name no daemon; settings that do not load raise (ConfigError:
    vchkpw.login reads them again and says why)."""
    from vpop.config import load_settings

    settings = load_settings()
    if settings.lookup_socket == "none":
        return settings, None
    from vpop.lookup.client import Client, Unavailable, login_fields

    client = Client(settings)
    try:
        client.send("login", login_fields(argv[1], environ, *split_fd3(data), b"\0" in data))
        from vpop import session  # noqa: F401 - what a yes needs, loaded while the daemon decides

        asked = client.receive()
    except Unavailable:
        return settings, None
    finally:
        client.close()
    # a status the login request does not have (a newer daemon?): decide here, as without one
    return settings, asked if asked[0] in ("ok", "refused", "temp") else None


def start_session(argv: list[str], environ: dict, answer):
    """The session of vlookupd's yes; returns only the step that failed, or None when
    vchkpw.login must start it (a uid 0 to refuse, a case it logs, lines for stderr)."""
    import posix

    from vpop import session

    uid, gid = answer.number("uid"), answer.number("gid")
    service, dovecot = answer.text("service"), answer.get("dovecot") == b"1"
    is_root = posix.geteuid() == 0
    if uid == 0 or gid == 0 or answer.get("stderr") is not None or (
            is_root and answer.get("smtp_guess") == b"1" and not dovecot):
        return None
    home = answer.text("home")
    try:
        if session.drops_privileges(is_root, service, dovecot):
            session.become(uid, gid)
        if session.enters_home(service, dovecot):
            session.enter(home)
        vpopuser = answer.get("vpopuser")
        session.set_environment(
            environ, user=answer.text("session_user" if dovecot else "name"), home=home,
            vpopuser=None if vpopuser is None else answer.text("vpopuser"), mailbox=answer.text("mailbox"),
            dovecot_ids=(uid, gid) if dovecot else None, lookup_only=answer.get("lookup") == b"1")
        session.execute(argv[1], argv[1:], environ)
    except session.StepFailed as failed:
        return failed
    return None  # not reached: execute execs or raises


def main(argv: list[str] | None = None) -> int:
    """Entry point: the quick path, else (or for the rest) :func:`vchkpw.login.run`."""
    from vpop.environment import original_environb

    argv = sys.argv if argv is None else argv
    try:
        fd3 = read_fd3()
    except Exception as exc:
        from vpop.errors import VpopError

        if not isinstance(exc, VpopError):
            raise
        fd3 = exc
    settings = asked = failed = environ = None
    if len(argv) >= 2 and isinstance(fd3, bytes):
        environ = original_environb()
        try:
            settings, asked = ask_daemon(argv, environ, fd3)
        except Exception:  # noqa: BLE001 - nothing decided yet: vchkpw.login decides without the daemon
            settings = asked = None
        if asked is not None and asked[0] == "ok":
            try:
                failed = start_session(argv, dict(environ), asked[1])
            except Exception as exc:  # noqa: BLE001 - reported by vchkpw.login as its internal error
                failed = exc
    from vchkpw.login import run

    return run(argv, fd3, asked, settings, failed, environ)
