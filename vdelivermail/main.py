"""vdelivermail: delivery for a vpopmail domain, run by qmail-local from ``.qmail-default``.

``| vdelivermail '' bounce-no-mailbox``: qmail-local's environment and the message on stdin in,
a delivery and an exit code out (0 delivered, 99 delivered and stop, 100 bounce, 111 try again).
:func:`main` is the only place where outcomes become exit codes.

The quick path: when ``lookup_socket`` names a running vlookupd, the daemon's ``recipient``
answer is enough for the common case -- a known user with a directory, no ``.qmail`` of their
own, a whole Maildir, within a quota that ``maildirsize`` vouches for as it is -- and that message
is delivered here with ``posix`` and ``_socket`` only (no ``os``, no store, no records): what keeps
a delivery through the daemon near the interpreter's own start.  The quick path decides without
writing anything; whatever it does not take (valiases, extensions, unknown users, a ``.qmail``, a
missing Maildir, a Maildir to count again, a quota warning due, a message that cannot be read
again from its start, no daemon) goes to :mod:`vdelivermail.deliver` with the daemon's answer, and
ends exactly as it would have without the quick path.
"""

import sys

from vpop.errors import VpopError


def out(text: str) -> None:
    """A line of the delivery report (qmail-local puts stdout into the bounce or the log)."""
    import posix

    try:
        posix.write(1, text.encode("utf-8", "replace"))
    except OSError:
        pass


class Quick:
    """What the quick path learnt: the daemon's answer (or that it could not answer), and the
    Maildir delivery it found to be the whole job (None: :mod:`vdelivermail.deliver` decides)."""

    answered = None
    daemon_failed = False
    maildir = ""
    headers = b""
    quota = ""


def _is_dir(path: str) -> bool:
    import posix

    try:
        return (posix.stat(path).st_mode & 0o170000) == 0o040000
    except OSError:
        return False


def _absent(path: str) -> bool:
    import posix

    try:
        posix.lstat(path)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return False


def plan(argv: list[str], environ: dict, quick: Quick) -> bool:
    """Is this delivery the quick path's?  Fills ``quick``; writes nothing (see the module)."""
    import posix

    from vpop.config import load_settings
    from vpop.errors import ConfigError
    from vpop.names import ascii_lower, valid_domain, valid_user

    if len(argv) != 3 or "EXT" not in environ or "HOST" not in environ:
        return False
    try:
        settings = load_settings(environ)
    except ConfigError:
        return False
    if settings.lookup_socket == "none" or settings.store == "vmail-sql" or settings.valias:
        return False
    user, domain = ascii_lower(environ["EXT"]), ascii_lower(environ["HOST"])
    if not (valid_user(user) and valid_domain(domain) and domain) or (settings.qmail_ext and "-" in user):
        return False
    try:
        posix.lseek(0, 0, 0)  # qmail-local gives a regular file; a pipe is spooled by the whole path
    except OSError:
        return False

    from vpop.lookup.client import Client, Unavailable

    client = Client(settings)
    try:
        client.send("recipient", [("domain", domain), ("user", user)])
        # what a delivery needs, loaded (and the message looked at) while the daemon answers
        from vpop import quota as mq
        from vpop.flags import BOUNCE_MAIL
        from vpop.message import Message, delivered_to, is_looping, return_path

        message = Message(0)
        quick.answered = status, answer = client.receive()
    except Unavailable:
        quick.daemon_failed = True
        return False
    finally:
        client.close()
    if status != "ok" or answer.all("for") != [user.encode("utf-8", "surrogateescape")]:
        return False

    user_dir, domain_dir = answer.text("dir"), answer.text("domain_dir")
    if answer.number("gid") & BOUNCE_MAIL or not settings.allows_user_dir(domain_dir, user_dir):
        return False  # a blank directory is not allowed either: the whole path makes it
    maildir = user_dir + "/Maildir/"
    if not (_is_dir(user_dir) and _absent(user_dir + "/.qmail")
            and all(_is_dir(maildir + sub) for sub in ("cur", "new", "tmp"))):
        return False

    address = f"{user}@{answer.text('domain_real')}"
    if is_looping(message, address, environ.get("DTLINE", "")):
        return False
    quota = mq.effective_quota(maildir, answer.text("shell"))
    if quota:  # a Maildir to count again (a recount writes maildirsize) is the whole path's
        known = mq.check_without_recount(maildir, quota, message.size, 1, settings.quota_small_message_bytes)
        if known is None or known[0] or known[1] >= settings.quota_warn_percent:
            return False
    quick.maildir, quick.quota = maildir, quota
    quick.headers = return_path(environ) + delivered_to(address)
    return True


def run(argv: list[str], environ: dict) -> int:
    """One delivery: the quick path's, else the whole path's; returns the exit code or raises."""
    quick = Quick()
    try:
        taken = plan(argv, environ, quick)
    except Exception:  # noqa: BLE001 - nothing written yet: the whole path decides (and says why)
        taken = False
    if taken:
        from vpop.quota import deliver_counted

        deliver_counted(quick.maildir, quick.headers, 0, quick.quota)
        return 0
    from vdelivermail.deliver import run as deliver

    return deliver(argv, environ, quick.answered, quick.daemon_failed)


def main(argv: list[str] | None = None) -> int:
    """Entry point; the only place where outcomes become exit codes."""
    from vpop.environment import original_environ

    argv = sys.argv if argv is None else argv
    try:
        return run(argv, original_environ())
    except VpopError as exc:
        if exc.message:
            out(exc.message if exc.message.endswith("\n") else exc.message + "\n")
        return exc.exit_code
    except Exception as exc:  # anything unforeseen on the way: defer, never lose the message
        out(f"vdelivermail: temporary error: {exc}\n")
        return 111
