"""vdelivermail's whole delivery: every case the quick path of :mod:`vdelivermail.main` leaves.

valiases, a user's own ``.qmail``, unknown users and the ``.qmail-default`` instruction, blank
or vanished user directories, quota warnings and bounces, vmail-sql, no daemon.  Protocol only;
the delivery engine is :mod:`vpop.delivery`.  Every doubt is a 111: a store that cannot answer
never turns into "no such user".  Outcomes are raised (:mod:`vpop.errors`); ``main`` maps them.
"""

import os

from vpop.errors import PermanentFailure, TemporaryFailure, is_database_failure
from vpop.flags import BOUNCE_MAIL

from vdelivermail.main import out

INVALID_SYNTAX = "vdelivermail: invalid syntax in .qmail-default file"


def with_store(settings, deliver, via_daemon: bool = True) -> int:
    """Open the store, run ``deliver(store)``; a program exiting 99 ends it with 99.

    The store is asked through vlookupd when ``lookup_socket`` is set and ``via_daemon`` (it falls
    back to the direct store by itself).  A database failure anywhere becomes the C program's
    "deferred, database down" (111).
    """
    from vpop.delivery import StopDelivery
    from vpop.stores import open_store

    try:
        store = open_store(settings, via_daemon=via_daemon)
        try:
            return deliver(store)
        except StopDelivery:
            return 99
        finally:
            store.close()
    except TemporaryFailure as exc:
        if is_database_failure(exc):
            from vpop.bounce import DATABASE_DOWN

            raise TemporaryFailure(DATABASE_DOWN) from None
        raise


def run(argv: list[str], environ: dict, answered=None, daemon_failed: bool = False) -> int:
    """One delivery; returns the exit code or raises a VpopError.

    ``answered``: the daemon's answer to this delivery's ``recipient`` request, asked by the quick
    path; ``daemon_failed``: the quick path found the daemon unable to answer (one timeout is
    enough: the store is then asked directly).
    """
    from vpop.config import load_settings
    from vpop.names import ascii_lower, valid_domain, valid_user

    if len(argv) != 3:
        raise TemporaryFailure(INVALID_SYNTAX)
    settings = load_settings(environ)
    if "EXT" not in environ:
        raise PermanentFailure("vdelivermail: no EXT environment varilable")
    if "HOST" not in environ:
        raise PermanentFailure("vdelivermail: no HOST environment varilable")
    user = ascii_lower(environ["EXT"])
    domain_name = ascii_lower(environ["HOST"])
    if not valid_user(user):
        raise PermanentFailure("invalid username")
    if not valid_domain(domain_name) or not domain_name:
        raise PermanentFailure("invalid domain name")
    user_ext, ext = user, ""
    if settings.qmail_ext and "-" in user:
        user_ext, _, ext = user.partition("-")
        ext = ext.replace(".", ":")

    if settings.store == "vmail-sql":
        return deliver_vmail_sql(settings, environ, user, domain_name, argv[2], not daemon_failed)

    def deliver(store) -> int:
        store.expect_recipient(domain_name, [user] if user_ext == user else [user, user_ext], answered)
        delivery = start_delivery(settings, environ, store, user, domain_name, "users/assign")
        domain = delivery.domain
        while True:
            if settings.valias and deliver_valias(delivery, store, user, domain, user_ext):
                out("vdelivermail: valiases processed\n")
                return 0
            record = store.get_user(user, domain)
            if record is None and user_ext != user:
                record = store.get_user(user_ext, domain)
                if record is not None:
                    delivery.user = user_ext
                    delivery.address = f"{user_ext}@{domain.real}"
            if record is not None:
                return check_user(delivery, store, record, ext)
            if not store.confirm_on_primary():  # nothing on a replica: the primary decides
                if user_ext != user:
                    delivery.user = user_ext
                    delivery.address = f"{user_ext}@{domain.real}"
                return user_not_found(delivery, argv[2])

    return with_store(settings, deliver, not daemon_failed)


def start_delivery(settings, environ: dict, store, user: str, domain_name: str, where: str):
    """The recipient's domain (``where`` names what the store reads: 111 when it is not there),
    the message on stdin and the loop check: a :class:`vpop.delivery.Delivery` to carry out."""
    from vpop.bounce import LOOPING
    from vpop.delivery import Delivery
    from vpop.message import Message, is_looping

    domain = store.domain(domain_name)
    if domain is None and store.confirm_on_primary():  # not on a replica (yet?): the primary decides
        domain = store.domain(domain_name)
    if domain is None:
        raise TemporaryFailure(f"vdelivermail: domain {domain_name} is not in {where}")
    message = Message(0)
    delivery = Delivery(settings, environ, message, user, domain)
    if is_looping(message, f"{user}@{domain.real}", environ.get("DTLINE", "")):
        raise PermanentFailure(LOOPING)
    return delivery


def deliver_vmail_sql(settings, environ: dict, user: str, domain_name: str, instruction: str,
                      via_daemon: bool = True) -> int:
    """vmail-sql in the order of its Exim directors: forwarders, the popbox, ``_default_``."""

    def deliver(store) -> int:
        delivery = start_delivery(settings, environ, store, user, domain_name, "the domain table")
        domain = delivery.domain
        while True:
            for local in (user, None, "_default_"):
                if local is None:
                    mailbox = store.popbox(user, domain)
                    if mailbox is None:
                        continue
                    if mailbox.endswith("/"):
                        delivery.deliver_maildir(mailbox, own_maildir=True)
                    else:
                        delivery.deliver_mbox(mailbox)
                    return 0
                targets = store.forwarders(local, domain)
                for target in targets:  # "&": an address, never a pipe or a file (Exim's forbid_*)
                    delivery.deliver_line("&" + target.lstrip("&"), domain.dir)
                if targets:
                    return 0
            if not store.confirm_on_primary():  # nothing on a replica: the primary decides
                return user_not_found(delivery, instruction)

    return with_store(settings, deliver, via_daemon)


def deliver_valias(delivery, store, user: str, domain, user_ext: str) -> bool:
    """valias rows for the user, else the ``prefix-default`` wildcard (sets DEFAULT)."""
    rows = store.valias_lines(user, domain)
    if not rows:
        parts = user.split("-")
        for i in range(len(parts) - 1, 0, -1):
            rows = store.valias_lines("-".join(parts[:i]) + "-default", domain)
            if rows:
                delivery.environ["DEFAULT"] = "-".join(parts[i:])
                break
    if not rows and user_ext != user:
        rows = store.valias_lines(user_ext, domain)
    for row in rows:
        delivery.deliver_line(row, domain.dir)
    return bool(rows)


def check_user(delivery, store, record, ext: str) -> int:
    """A known user: locked?  directory?  own .qmail?  else the Maildir with the quota."""
    from vpop import dirs

    domain = delivery.domain
    if record.gid & BOUNCE_MAIL:
        raise PermanentFailure(f"vdelivermail: account is locked email bounced {record.name}@{domain.real}")
    uid = domain.uid if os.geteuid() == 0 else None
    if not record.dir:
        try:
            path = store.make_user_dir(domain, record.name, uid, domain.gid)
        except TemporaryFailure as exc:
            if is_database_failure(exc):  # the MySQL store's dir_control row
                raise
            raise TemporaryFailure("Auto creation of maildir failed. (#5.9.8)") from None
        try:
            stored = store.set_user_dir(record, domain, path)
        except TemporaryFailure:
            dirs.discard_user_dir(path)  # else every retry would fail on the existing directory
            raise
        if stored != path:
            dirs.discard_user_dir(path)  # a concurrent first delivery won: its directory is the one
    dirs.check_user_dir(delivery.settings, domain.dir, record.dir)
    if not os.path.isdir(record.dir):
        try:
            dirs.remake_user_dir(domain.dir, record.dir, uid, domain.gid)
        except TemporaryFailure:
            raise TemporaryFailure("Auto re-creation of maildir failed. (#5.9.9)") from None
    if delivery.dot_qmail(record.dir, ext):
        return 0
    maildir = record.dir + "/Maildir"
    if not all(os.path.isdir(f"{maildir}/{sub}") for sub in ("cur", "new", "tmp")):
        # vpopmail re-created a missing user directory but not a Maildir missing inside one,
        # so such mail deferred until it bounced; make it, as vmake_maildir would have.
        from vpop.maildir import make_maildir

        try:
            make_maildir(maildir, uid, domain.gid, mode=dirs.REMADE_MODE)
        except OSError as exc:
            text = f"Auto re-creation of maildir failed. (#5.9.9) errno={exc.errno}"
            raise TemporaryFailure(text) from None
    delivery.deliver_maildir(maildir + "/", record.shell, own_maildir=True)
    return 0


def user_not_found(delivery, instruction: str) -> int:
    """The ``.qmail-default`` instruction for an unknown user."""
    from vpop.bounce import NO_USER, message_text

    settings = delivery.settings
    domain = delivery.domain
    if instruction == "delete":
        return 0
    if instruction == "bounce-no-mailbox":
        raise PermanentFailure(message_text(domain.dir, settings.domains_path, ".no-user.msg", NO_USER))
    if instruction.startswith("/"):
        return deliver_to_path(delivery, instruction)
    delivery.deliver_line(instruction, domain.dir)
    return 0


def deliver_to_path(delivery, path: str) -> int:
    """A path instruction: a Maildir (used as is), a directory holding one, or an mbox file."""
    if path.endswith("/") or os.path.isdir(path):
        directory = path.rstrip("/") + "/"
        out(f"user does not exist, but will deliver to {directory}\n")
        # Delivered-To names the recipient (vpopmail: the instruction's Maildir gets user@domain)
        if all(os.path.isdir(directory + sub) for sub in ("new", "cur", "tmp")):
            delivery.deliver_maildir(directory, own_maildir=True)  # a Maildir itself: not …/Maildir/Maildir/
            return 0
        if delivery.dot_qmail(directory.rstrip("/")):
            return 0
        delivery.deliver_maildir(directory + "Maildir/", own_maildir=True)
        return 0
    out(f"user does not exist, but will deliver to {path}\n")
    delivery.deliver_mbox(path)
    return 0
