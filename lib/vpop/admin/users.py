"""The user library behind vadduser, vdeluser, vpasswd, vmoduser, vsetuserquota and vuserinfo.

It lays users out as vpopmail does: a hashed user directory (``.dir-control`` or the
``dir_control`` row) with its Maildir, a record in the store (a vpasswd line and
``vpasswd.cdb``, or a row), ``maildirsize`` when a quota is set, ``lastauth`` = ``0.0.0.0`` at
creation (auth logging).  Every check and change of one domain's users runs under the store's
lock (:meth:`Store.locked`: ``.vpasswd.lock`` for CDB); a failure after the directory was made
removes it again, so a refused or failed command leaves nothing behind.  Directories are removed
and ``maildirsize`` written as the domain's uid (:class:`vpop.privileges.ActingAs`), so root
never follows a link a mail user planted.

Refusals are :class:`vpop.admin.cli.AdminError` with vpopmail's text and exit code.
"""

import os
from collections.abc import Callable

from vpop import assign
from vpop.admin.cli import MAX_PW_CLEAR_PASSWD, AdminError
from vpop.admin.notify import domain_changed, user_changed
from vpop.assign import Domain
from vpop.config import Settings
from vpop.stores.base import NO_PASSWD_CHNG, Store, User

NULL_REMOTE_IP = "0.0.0.0"  # vpopmail's lastauth of an account that never logged in
MAX_PW_GECOS = 64
MAX_PW_QUOTA = 20

ILLEGAL_USERNAME = "Error: Illegal username"
DOMAIN_MISSING = "Error: Domain does not exist"
NOT_FULL_ADDRESS = ("You did not use a full email address for the user name\n"
                    "Only full email addresses should be used")

# vpopmail.h flag bits beyond those vpop.stores.base names
V_USER0, V_USER1, V_USER2, V_USER3 = 0x80, 0x100, 0x200, 0x400
QA_ADMIN = 0x1000
NO_SPAMASSASSIN = 0x4000
DELETE_SPAM = 0x8000
SA_ADMIN = 0x10000
SA_EXPERT = 0x20000
NO_MAILDROP = 0x40000

# vuserinfo's limits lines, in vuserinfo.c's order
LIMIT_TEXTS = (
    (0x01, "password can not be changed by user"),
    (0x02, "pop access closed"),
    (0x04, "webmail access closed"),
    (0x08, "imap access closed"),
    (0x800, "smtp access is closed"),
    (0x20, "user not allowed to relay mail"),
    (NO_SPAMASSASSIN, "spamassassin processing disabled"),
    (DELETE_SPAM, "delete spam"),
    (NO_MAILDROP, "maildrop processing disabled"),
    (0x40, "no dialup flag has been set"),
    (0x10, "mail will be bounced back to sender"),
    (QA_ADMIN, "has qmailadmin administrator access"),
    (SA_ADMIN, "has system administrator access"),
    (SA_EXPERT, "has expert access"),
    (V_USER0, "user flag 0 is set"),
    (V_USER1, "user flag 1 is set"),
    (V_USER2, "user flag 2 is set"),
    (V_USER3, "user flag 3 is set"),
    (0x2000, "user is not subject to domain limits"),
)


# ------------------------------------------------------------------ passwords and comments

BAD_CHARACTER = "Error: bad character"


def check_gecos(text: str) -> str:
    """A comment the vpasswd line and the row can hold: no ``:`` (it splits the vpasswd line)
    and no control character, at most 64 characters (vpopmail: ``bad character``, ``gecos too long``)."""
    if ":" in text or any(ord(c) < 32 or c == "\x7f" for c in text):
        raise AdminError(BAD_CHARACTER, 256 - 20)
    if len(text) > MAX_PW_GECOS:
        raise AdminError(f"Error: gecos too long (max={MAX_PW_GECOS})", 256 - 28)
    return text


def check_password_text(text: str) -> str:
    """A new clear-text password the store can hold, on every store alike: at most 128
    characters, no ``:`` (it would split the vpasswd line and its clear field), NUL, CR or LF."""
    if len(text) > MAX_PW_CLEAR_PASSWD:
        raise AdminError(f"Error: password too long (max={MAX_PW_CLEAR_PASSWD})", 256 - 27)
    if any(c in text for c in ":\0\r\n"):
        raise AdminError(BAD_CHARACTER, 256 - 20)
    return text


def check_password(text: str) -> str:
    """:func:`check_password_text`, and not empty."""
    if not text:
        raise AdminError("Error: No password entered")
    return check_password_text(text)



def new_password_hash(settings: Settings, password: str, method: str | None = None) -> str:
    """The one place new hashes are made: the ``password_scheme`` setting (``method``: a
    :func:`vpop.passwords.make_hash` method, for the tests' fixed hashes)."""
    from vpop import passwords

    if method is not None:
        return passwords.make_hash(password, method)
    return passwords.new_hash(password, settings.password_scheme)


# ------------------------------------------------------------------ names and domains


def parse_email(settings: Settings, address: str) -> tuple[str, str]:
    """vpopmail's ``parse_email``: lower-cased, split at ``@`` (else ``%``, ``/``), the default
    domain when there is none.  A user name that is not a safe path component (``/``, ``..``, a
    leading dot, a space, a control character -- vpopmail accepted ``/`` and ``..``) or a bad
    domain is ``Error: Illegal username`` (255)."""
    from vpop.names import split_login, valid_domain, valid_user

    user, domain = split_login(address)
    if not valid_user(user) or user == "vpasswd" or not valid_domain(domain):
        raise AdminError(ILLEGAL_USERNAME)
    if not domain:
        from vpop.domains import default_domain

        domain = default_domain(settings, {})
    return user, domain


def find_domain(settings: Settings, domain: str, code: int = 255) -> Domain:
    """The domain from users/assign (an alias domain gives its real one), else ``Error: Domain does
    not exist`` (vadduser/vuserinfo exit 255, vdeluser/vsetuserquota 245)."""
    found = assign.lookup(settings.qmail_home, domain.lower()) if domain else None
    if found is None:
        raise AdminError(DOMAIN_MISSING, code)
    return found


def _owner(domain: Domain) -> tuple[int | None, int | None]:
    return (domain.uid, domain.gid) if os.geteuid() == 0 else (None, domain.gid)


def check_inside(settings: Settings, domain: Domain, user_dir: str) -> None:
    """Refuse (111) a stored directory outside the domain's places before removing or writing in it."""
    from vpop.dirs import check_user_dir

    check_user_dir(settings, domain.dir, user_dir)


# ------------------------------------------------------------------ quotas and maildirsize


def format_quota(text: str) -> str:
    """vpopmail's ``format_maildirquota`` (K = 1024, M = 1048576); a quota that gives no limit
    (``abc``, ``0``, ``-5``) is refused (vpopmail stored an empty quota), one longer than 20
    characters is ``quota too long`` as vpopmail has it."""
    from vpop.quota import normalize_quota

    if len(text) > MAX_PW_QUOTA:
        raise AdminError("Error: quota too long (max=20)", 256 - 29)
    if text == "NOQUOTA":
        return text
    digits = text.replace(",", "")
    formatted = normalize_quota(text) if digits and digits[0].isdigit() else ""
    if not formatted:
        raise AdminError(f"Error: invalid quota {text!r} (bytes[K|M][B][S][,<count>C] or NOQUOTA)")
    return formatted


def update_maildirsize(settings: Settings, domain: Domain, record: User) -> None:
    """vpopmail's ``update_maildirsize``: ``maildirsize`` written anew from a count of the Maildir
    (renamed over the old one: never a moment without it), or removed (NOQUOTA, or a count that
    deliveries made unsure); as the domain's uid, through nothing the user planted."""
    if not record.dir:
        return
    check_inside(settings, domain, record.dir)
    from vpop import quota
    from vpop.privileges import ActingAs

    maildir = record.dir + "/Maildir"
    with ActingAs(domain.uid, domain.gid):
        wanted = record.shell and record.shell != "NOQUOTA" and os.path.isdir(maildir)
        if wanted and not quota.recalculate(maildir, record.shell).unsure:
            return
        try:  # NOQUOTA, or deliveries busy: none (the next delivery counts again)
            os.unlink(maildir + "/maildirsize")
        except FileNotFoundError:
            pass
        except OSError as exc:
            from vpop.errors import TemporaryFailure

            raise TemporaryFailure(f"cannot remove {maildir}/maildirsize: {exc.strerror}") from None


def usage_percent(settings: Settings, domain: Domain, record: User) -> str:
    """vuserinfo's usage: ``<n>%`` of the quota (``maildirsize``, recounted when stale), or NOQUOTA."""
    if record.shell == "NOQUOTA":
        return "NOQUOTA"
    if not record.dir:
        return "0%"
    check_inside(settings, domain, record.dir)
    from vpop import quota
    from vpop.privileges import ActingAs

    with ActingAs(domain.uid, domain.gid):
        _, percent = quota.check(record.dir + "/Maildir", record.shell, 0, 0, 0)
    return f"{min(max(percent, 0), 100)}%"


# ------------------------------------------------------------------ removing directories


def remove_user_dir(settings: Settings, domain: Domain, user_dir: str) -> None:
    """vpopmail's ``vdelfiles``, as the domain's uid: a link in the tree is removed, never followed."""
    from vpop.files import remove_tree
    from vpop.privileges import ActingAs

    if not user_dir:
        return
    check_inside(settings, domain, user_dir)
    with ActingAs(domain.uid, domain.gid):
        remove_tree(user_dir)


def _undo_user_dir(settings: Settings, store: Store, domain: Domain, user_dir: str, name: str) -> None:
    """After a failed add: the new directory goes, and the hashing state gives its place back."""
    try:
        remove_user_dir(settings, domain, user_dir)
    finally:
        try:
            store.release_user_subdir(domain, user_dir, name)
        except Exception:
            pass  # the count stays one high: harmless, vpopmail never gives it back either


# ------------------------------------------------------------------ the operations


def effective_user_flags(settings: Settings, store: Store, domain: Domain, gid: int) -> int:
    """``pw_gid`` with the domain's limits (the ``limits`` row or ``.qmailadmin-limits``) OR'ed in."""
    from vpop.limits import effective_flags, read_limits_file

    limits = store.domain_limits(domain)
    if limits is None:
        limits = read_limits_file(domain.dir, settings.etc_dir, domain.uid)
    return effective_flags(gid, limits)


def domain_default_quota(settings: Settings, store: Store, domain: Domain) -> str:
    """vadduser's quota without ``-q``: the domain limits' ``default_quota``/``default_maxmsgcount``."""
    from vpop.limits import read_limits_file
    from vpop.numbers import atoi

    limits = store.domain_limits(domain)
    if limits is None:
        limits = read_limits_file(domain.dir, settings.etc_dir, domain.uid) or {}
    # the file's names, else the ``limits`` table's columns (mysql_limits)
    size = atoi(limits.get("default_quota", limits.get("defaultquota", "0")))
    count = atoi(limits.get("default_maxmsgcount", limits.get("defaultmaxmsgcount", "0")))
    if size > 0:
        return f"{size}S,{count}C" if count > 0 else f"{size}S"
    return f"{count}C" if count > 0 else "NOQUOTA"


def create_user(settings: Settings, store: Store, domain: Domain, user: str, password: str, *,
                quota: str | None = None, gecos: str = "", crypted: str | None = None, flags: int = 0,
                hash_method: str | None = None, blank_dir: bool = False, now: float | None = None) -> User:
    """vadduser: a new user, or ``Error: User already exists`` with nothing changed.

    Under the store's lock and :mod:`vpop.admin.unfinished`'s note: the check, the directory,
    ``maildirsize`` and ``lastauth``, then the record last (with its final quota and hash: one
    write, where vpopmail wrote NOQUOTA and a random password first); on SQL all of it in one
    transaction.  A failure (or a kill, finished by the next command) removes the directory again.
    """
    check_gecos(gecos)
    if crypted is None:
        check_password_text(password)
    quota = format_quota(quota) if quota is not None else domain_default_quota(settings, store, domain)
    if crypted is not None:
        passwd, clear = crypted, ""
    else:
        passwd = new_password_hash(settings, password, hash_method)
        clear = password if settings.clear_passwords else ""
    uid, gid = _owner(domain)
    # vpasswd lines carry pw_uid 1 (vauth_adduser_line's USE_POP), SQL rows 0
    pw_uid = 1 if settings.store == "cdb" else 0
    record = User(user, domain.real, passwd, pw_uid, flags, gecos or user, "", quota, clear)
    from vpop import clock
    from vpop.admin import unfinished
    from vpop.dirs import user_dir_path

    when = int(clock.now() if now is None else now)

    def noted(subdir: str, count: int) -> None:
        unfinished.note(domain, "add", user, user_dir_path(domain.dir, subdir, user), count)

    store.connect_for_updates()
    store.create_tables(domain)
    with store.locked(domain):
        refuse_existing(settings, store, domain, user)
        try:
            with store.transaction():  # SQL: the hashing state, the row and lastauth commit together
                if not blank_dir:
                    record.dir = store.make_user_dir(domain, user, uid, gid, noted)
                    update_maildirsize(settings, domain, record)
                    if settings.auth_logging:
                        with store.as_mail_user(domain):
                            store.set_lastauth(record, domain, NULL_REMOTE_IP, when)
                # the step that makes the user: the vpasswd rename, or the COMMIT
                if not store.insert_user(record, domain):  # another vadduser (another host) was first
                    raise AdminError("Error: User already exists")
        except BaseException as exc:
            from vpop.errors import CommitUnanswered

            # the directory goes, the count is given back
            unfinished.undo(settings, store, domain, unwritten=not isinstance(exc, CommitUnanswered))
            raise
        if not blank_dir:
            unfinished.clear(domain)
    user_changed(settings, user, domain.real)
    return record


def refuse_existing(settings: Settings, store: Store, domain: Domain, user: str) -> None:
    """``Error: User already exists``, under the lock, once a note a killed command left is finished."""
    from vpop.admin import unfinished

    with store.locked(domain):
        unfinished.finish(settings, store, domain)
        if store.get_user(user, domain) is not None:
            raise AdminError("Error: User already exists")


def add_user(settings: Settings, domain: str, user: str, password: str, *, quota: str = "NOQUOTA",
             flags: int = 0, gecos: str = "", hash_method: str = "md5", blank_dir: bool = False,
             store: Store | None = None) -> User:
    """A user for the tests, the demo and the benchmarks (``vpop.admin.add_user``): as
    :func:`create_user`, but an existing user is replaced, no ``lastauth`` is written and the
    hash is ``hash_method`` (MD5-crypt by default: fixed and fast)."""
    from vpop.stores import open_store

    found = assign.lookup(settings.qmail_home, domain.lower())
    if found is None:
        raise ValueError(f"no such domain {domain}")
    own = store is None
    store = store or open_store(settings)
    try:
        user = user.lower()
        uid, gid = _owner(found)
        path = "" if blank_dir else store.make_user_dir(found, user, uid, gid)
        record = User(user, found.real, new_password_hash(settings, password, hash_method), 0, flags,
                      gecos or user, path, quota, password if settings.clear_passwords else "")
        store.add_user(record, found)
        user_changed(settings, user, found.real)
        return record
    finally:
        if own:
            store.close()


def get_user(store: Store, domain: Domain, user: str, shown_domain: str) -> User:
    """The user, or ``no such user u@d`` (255)."""
    record = store.get_user(user, domain)
    if record is None:
        raise AdminError(f"no such user {user}@{shown_domain}")
    return record


def delete_user(settings: Settings, store: Store, domain: Domain, user: str) -> None:
    """vdeluser: the record (CDB line, or the SQL rows in one transaction) first, then the directory
    (as the domain's uid) and the hashing state, under :mod:`vpop.admin.unfinished`'s note.  A
    catch-all user is refused (vpopmail too)."""
    from vpop.admin import unfinished

    store.connect_for_updates()
    with store.locked(domain):
        unfinished.finish(settings, store, domain)
        record = store.get_user(user, domain)
        if record is None:
            raise AdminError("Error: User does not exist", 256 - 10)
        if record.dir:
            check_inside(settings, domain, record.dir)
        if _is_catchall(domain, user, record):
            raise AdminError("Error: can't delete catchall account", 256 - 55)
        if record.dir:
            unfinished.note(domain, "del", user, record.dir, store.allocated_count(domain))
        if not store.delete_user(user, domain):
            unfinished.clear(domain)
            raise AdminError("Error: User does not exist", 256 - 10)
        if record.dir:
            remove_user_dir(settings, domain, record.dir)
            store.release_user_subdir(domain, record.dir, user)
            unfinished.clear(domain)
    user_changed(settings, user, domain.real)


def _is_catchall(domain: Domain, user: str, record: User) -> bool:
    """vpopmail's ``isCatchall``: the domain's ``.qmail-default`` delivers to this user."""
    from vpop.files import ANY_OWNER, read_file

    data = read_file(domain.dir + "/.qmail-default", 1 << 16, owners=ANY_OWNER, truncate=True)
    if not data:
        return False
    text = data.decode("utf-8", "replace")
    targets = {f"{user}@{domain.real}", f"{user}@{domain.name}"}
    if record.dir:
        targets.update({record.dir, record.dir + "/", record.dir + "/Maildir", record.dir + "/Maildir/"})
    return any(word.strip("'\"") in targets for line in text.split("\n") for word in line.split())


def set_password(settings: Settings, store: Store, domain: Domain, user: str, password: str, *,
                 shown_domain: str) -> User:
    """vpasswd: a new hash (``password_scheme``) and, with clear passwords, the clear text."""
    check_password_text(password)
    store.connect_for_updates()
    with store.locked(domain):
        record = store.get_user(user, domain)
        if record is None:
            raise AdminError("Error: User does not exist")  # vpopmail: "Error: Illegal username"
        if effective_user_flags(settings, store, domain, record.gid) & NO_PASSWD_CHNG:
            raise AdminError(f"Error: password changes are disabled for {user}@{shown_domain}")
        record.passwd = new_password_hash(settings, password)
        record.clear = password if settings.clear_passwords else ""
        store.update_user(record, domain)
    user_changed(settings, user, domain.real)
    return record


def change_users(settings: Settings, store: Store, domain: Domain, user: str | None,
                 edit: "Callable[[User], None]", *, quota_changed: bool = False,
                 missing: AdminError | None = None) -> list[User]:
    """vmoduser and vsetuserquota: ``edit`` each record (one user, or with ``user`` None every
    user of the domain), then one write under the lock (one vpasswd + cdb rename, or one
    transaction: a kill leaves all of them old or all new), then ``maildirsize`` anew when the
    quota changed.  A missing user raises ``missing``."""
    store.connect_for_updates()
    with store.locked(domain):
        if user is None:
            records = store.list_users(domain)
        else:
            record = store.get_user(user, domain)
            if record is None:
                raise missing or AdminError("Error: User does not exist", 256 - 10)
            records = [record]
        for record in records:
            edit(record)
        if user is None:
            store.replace_users(domain, records, remove=False)
        elif not store.update_user(records[0], domain):
            raise missing or AdminError("Error: User does not exist", 256 - 10)
    if user is None:
        domain_changed(settings, domain.real)
    else:
        user_changed(settings, user, domain.real)
    if quota_changed:
        for record in records:
            update_maildirsize(settings, domain, record)
    return records


# ------------------------------------------------------------------ vuserinfo


def _asctime(when: int) -> str:
    import time

    return time.asctime(time.localtime(when))


def lastauth_lines(store: Store, domain: Domain, record: User) -> list[str]:
    """vuserinfo's ``last auth`` lines (vpopmail's ``display_lastlogin``)."""
    found = store.get_lastauth(record, domain)
    when, ip = found if found is not None else (0, "")
    if when == 0 or not ip or ip == NULL_REMOTE_IP:
        lines = [f"account created: {_asctime(when)}"] if when else []
        return lines + ["last auth: Never logged in"]
    return [f"last auth: {_asctime(when)}", f"last auth ip: {ip}"]


def info_lines(settings: Settings, store: Store, domain: Domain, record: User, fields: str) -> list[str]:
    """vuserinfo's output for one user: ``fields`` is ``a`` (everything) or the single-field
    letters in the order vuserinfo prints them (``n p C u g c d q Q l``)."""
    if "a" in fields:
        flags = effective_user_flags(settings, store, domain, record.gid)
        lines = [f"name:   {record.name}", f"passwd: {record.passwd}", f"clear passwd: {record.clear}",
                 f"comment/gecos: {record.gecos}", f"uid:    {record.uid}", f"gid:    {record.gid}",
                 f"flags:  {flags}", f"gecos: {record.gecos}"]
        if flags == 0:
            lines.append("limits: No user limits set.")
        else:
            lines.append("limits:")
            for bit, text in LIMIT_TEXTS:
                if flags & bit:
                    lines.append(f"        {text}" if record.gid & bit else f"        {text} (*)")
            if record.gid != flags:
                lines.append("        * = set by domain-wide limits")
        lines += [f"dir:       {record.dir}", f"quota:     {record.shell}",
                  f"usage:     {usage_percent(settings, domain, record)}"]
        if settings.auth_logging:
            lines += lastauth_lines(store, domain, record)
        return lines
    lines = []
    values = {"n": lambda: record.name, "p": lambda: record.passwd, "C": lambda: record.clear,
              "u": lambda: str(record.uid), "g": lambda: str(record.gid), "c": lambda: record.gecos,
              "d": lambda: record.dir, "q": lambda: record.shell,
              "Q": lambda: usage_percent(settings, domain, record)}
    for letter in "npCugcdqQ":
        if letter in fields:
            lines.append(values[letter]())
    if "l" in fields and settings.auth_logging:
        lines += lastauth_lines(store, domain, record)
    return lines


# ------------------------------------------------------------------ command lines

# ``--help``: the usage, then this (see :func:`vpop.admin.cli.options`)
DIFFERENCES = """
Differences from vpopmail's tool:
  a usage error exits 2 (vpopmail: 255 or 0); random passwords come from the secrets module;
  a user name with '/', '..', a leading '.', a space or a control character is refused;
  a quota that sets no limit is refused; new hashes follow the password_scheme setting."""
