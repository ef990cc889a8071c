"""What every store offers, and the user record they return.

A store never prints and never exits: it returns records or raises
:class:`vpop.errors.TemporaryFailure` when it cannot answer with certainty.
"""

from vpop.assign import Domain
from vpop.flags import (  # noqa: F401 - the pw_gid flag bits, where the stores' users look for them
    BOUNCE_MAIL,
    NO_DIALUP,
    NO_IMAP,
    NO_PASSWD_CHNG,
    NO_POP,
    NO_RELAY,
    NO_SMTP,
    NO_WEBMAIL,
    V_OVERRIDE,
)
from vpop.names import ascii_lower
from vpop.records import Account, User  # noqa: F401 - the stores' records, where their callers look

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable


def to_int(value) -> int:
    """vpopmail's atoi (:func:`vpop.numbers.atoi`): empty, NULL or junk -> 0."""
    from vpop.numbers import atoi

    return atoi(value)


def column_text(value) -> str:
    """A text column as str: NULL -> "", a binary column (bytes) decoded as UTF-8."""
    if value is None:
        return ""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "surrogateescape")
    return str(value)


def same_name(value, wanted: str) -> bool:
    """A name column equals ``wanted`` up to ASCII case, and exactly otherwise.

    The SQL stores query with a plain ``=`` (so the column's index is used) and then check the
    row with this: the tables' collation (``utf8mb4_general_ci``) also folds accents and
    non-ASCII case and ignores trailing spaces, so ``jöe``, ``JÖE`` and ``joe `` would be
    ``joe``.  ASCII case is what the programs fold themselves (they lower-case A-Z only), and
    what the C programs' ci collations folded, so a row stored as ``Joe`` still answers.
    """
    return ascii_lower(column_text(value)) == ascii_lower(wanted)


def exact_first(rows: list, index: int, wanted: str) -> list:
    """The rows whose column ``index`` is ``wanted`` up to ASCII case, an exact spelling first."""
    found = [row for row in rows if same_name(row[index], wanted)]
    found.sort(key=lambda row: column_text(row[index]) != wanted)
    return found


def is_sql_text(name: str) -> bool:
    """Whether ``name`` can be sent as a query parameter and stored in a utf8mb4 column.

    A name made from bytes that are not UTF-8 carries surrogate escapes: no row can hold it
    (so it matches none), and PyMySQL would raise ``UnicodeEncodeError`` on it.
    """
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class _NoSwitch:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


_NO_SWITCH = _NoSwitch()


class Store:
    """The interface of the vpopmail-compatible stores."""

    def get_user(self, user: str, domain: Domain) -> User | None:
        raise NotImplementedError

    def set_user_dir(self, record: User, domain: Domain, path: str) -> str:
        """Store ``path`` as a blank ``pw_dir``, compare-and-set; return the directory stored now.

        When another delivery or login filled the blank first, its directory is kept and
        returned: the caller removes the one it made and uses the winner's, so that two
        first deliveries racing each other never leave mail in a directory nothing points to.
        ``record.dir`` is set to the answer.
        """
        raise NotImplementedError

    def set_lastauth(self, record: User, domain: Domain, ip: str, now: int) -> None:
        raise NotImplementedError

    def replace_password_hash(self, record: User, domain: Domain, old: str, new: str) -> bool:
        """Compare-and-set of the stored hash (the login-time rehash): ``new`` replaces ``old``
        only if ``old`` is still what is stored; returns whether it did.

        A password changed meanwhile (vpasswd, vpopmaild, billing) is never overwritten; only the
        hash changes (not the clear password, not any other field).  ``record.passwd`` is set to
        ``new`` when it was written.  Raises TemporaryFailure when the store cannot be written.
        """
        raise NotImplementedError

    def open_relay(self, ip: str, now: int) -> None:
        raise NotImplementedError

    def clear_relay(self, now: int) -> int:
        """Forget relay entries older than ``relay_clear_minutes``; returns how many went."""
        raise NotImplementedError

    def make_user_dir(self, domain: Domain, user: str, uid: int | None, gid: int | None,
                      noted: "Callable[[str, int], None] | None" = None) -> str:
        """A new user's hashed directory and Maildir (vpopmail's ``make_user_dir``); ``noted``: see
        :func:`vpop.dirs.next_user_subdir`."""
        from vpop import dirs

        return dirs.make_user_dir(domain.dir, user, uid, gid,
                                  allocate=lambda: self.next_user_subdir(domain, uid, gid, noted))

    def next_user_subdir(self, domain: Domain, uid: int | None, gid: int | None,
                         noted: "Callable[[str, int], None] | None" = None) -> str:
        """The hash subdirectory for the domain's next user: ``.dir-control`` in its directory."""
        from vpop import dirs

        return dirs.next_user_subdir(domain.dir, uid, gid, noted)

    def allocated_count(self, domain: Domain) -> int:
        """The hashing state's ``cur_users`` (the count :meth:`next_user_subdir` last wrote)."""
        from vpop import dirs

        return dirs.read_count(domain.dir)

    def connect_for_updates(self) -> None:
        """Open what updates need now (an SQL store's update connection), before a switch of ids:
        a unix socket in a root-only directory cannot be reached once the effective uid changed."""
        return None

    def confirm_on_primary(self) -> bool:
        """Before a "no such user" is acted on: True when the reads went to a replica and now go
        to the primary (ask again); False when the answer stands (one server, files, or asked)."""
        db = getattr(self, "db", None)
        return db is not None and db.confirm_on_primary()

    def reads_from_replica(self) -> bool:
        """Whether the reads go to a replica now (so that a "not found" could be lag)."""
        db = getattr(self, "db", None)
        return db is not None and db.has_replica and not db.primary_reads

    def follow_replica(self) -> None:
        """Reads back on the read server (vlookupd, after each request)."""
        db = getattr(self, "db", None)
        if db is not None:
            db.follow_replica()

    def read_from_primary(self) -> None:
        """Every read on the update server (the admin tools: they read what they change)."""
        db = getattr(self, "db", None)
        if db is not None:
            db.primary_reads = True

    def start_ping(self) -> None:
        """Start a round trip to the update server that :meth:`confirm_reachable` waits for
        (vlookupd, on a login decided on cached answers: the trip overlaps the decision)."""
        db = getattr(self, "db", None)
        if db is not None:
            db.start_ping()

    def confirm_reachable(self) -> None:
        """Raise :class:`DatabaseFailure` unless the update server answers (files: no server)."""
        db = getattr(self, "db", None)
        if db is not None:
            db.confirm_alive()

    def after_answer(self, work: "Callable[[], None]") -> None:
        """Run a write the answer does not wait for (lastauth): here, at once; vlookupd's store
        runs it once the client has its answer."""
        work()

    def expect_recipient(self, domain: str, users: list[str], answered=None) -> None:
        """A hint: a delivery is about to ask for ``domain`` and these users (the daemon's store
        asks for all of them in one request; a store of its own has nothing to do)."""
        return None

    def probe(self) -> None:
        """The work a lookup costs without a lookup (an SQL store connects), for unknown domains."""
        return None

    def source(self, domain: Domain) -> str:
        """Where the domain's user records are, for messages about a damaged one."""
        return f"the {self.settings.store} store"

    def as_mail_user(self, domain: Domain):
        """Context for updates: the file-based stores write as the domain's uid (see privileges)."""
        return _NO_SWITCH

    def domain(self, name: str) -> Domain | None:
        """The domain ``name`` (lower case) as qmail routes it: users/assign (``users/cdb``)."""
        from vpop import assign

        return assign.lookup(self.settings.qmail_home, name)

    def valias_lines(self, alias: str, domain: Domain) -> list[str]:
        """Delivery lines of a valias (SQL stores with ``valias = yes``); none by default."""
        return []

    def domain_limits(self, domain: Domain) -> dict | None:
        """The domain's limits (None: use the files)."""
        return None

    def close(self) -> None:
        pass

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ admin updates (vadduser ...)

    def locked(self, domain: Domain):
        """Context for a read-check-write of the domain's users: the domain directory's
        ``.vpasswd.lock``, on every store, re-entrant within this store (a second ``lockf`` of the
        same file in one process would be released by the first ``close``)."""
        from vpop.stores.locks import HeldLock

        return HeldLock(self, domain.dir, lambda: self.mend(domain))

    def mend(self, domain: Domain) -> None:
        """Called when :meth:`locked` is first taken: finish what a killed writer left (CDB)."""
        return None

    def transaction(self):
        """Context whose updates happen all or none (SQL: one transaction, committed at its end;
        the file stores have none: there each write is its own rename)."""
        return _NO_SWITCH

    def create_tables(self, domain: Domain) -> None:
        """Make what the domain's users are kept in, if missing (SQL: vpopmail's ``vauth_adddomain``)."""
        return None

    def insert_user(self, record: User, domain: Domain) -> bool:
        """Add a new user; False (nothing changed) when the name is taken."""
        raise NotImplementedError

    def update_user(self, record: User, domain: Domain) -> bool:
        """Rewrite an existing user's record; False when there is no such user."""
        raise NotImplementedError

    def delete_user(self, name: str, domain: Domain) -> bool:
        """Remove the user's record (and its lastauth/valias rows); False when there is none."""
        raise NotImplementedError

    def list_users(self, domain: Domain) -> list[User]:
        """Every user of the domain, by name."""
        raise NotImplementedError

    def get_lastauth(self, record: User, domain: Domain) -> tuple[int, str] | None:
        """``(time, ip)`` of the last login (``0.0.0.0``: created, never logged in), None if unknown."""
        return None

    def lastauth_map(self, domain: Domain, records: "list[User]") -> "dict[str, tuple[int, str]]":
        """``{name: (time, ip)}`` of the records that have a lastauth (vconvert)."""
        found = {}
        for record in records:
            entry = self.get_lastauth(record, domain)
            if entry is not None:
                found[record.name] = entry
        return found

    def set_lastauths(self, domain: Domain, entries: "list[tuple[User, int, str]]") -> int:
        """Write ``(record, time, ip)`` lastauths as the domain's uid (vconvert); a user whose
        directory is gone is skipped.  Returns how many were written."""
        from vpop.errors import TemporaryFailure

        written = 0
        with self.as_mail_user(domain):
            for record, when, ip in entries:
                try:
                    self.set_lastauth(record, domain, ip, when)
                except (TemporaryFailure, OSError):
                    continue
                written += 1
        return written

    def set_allocated_count(self, domain: Domain, count: int) -> None:
        """The hashing state as after the ``count``-th user (vconvert: the count goes with the users)."""
        from vpop import dirs

        dirs.write_count(domain.dir, count, domain.uid if _is_root() else None, domain.gid)

    # ------------------------------------------------------------------ valiases (valias)
    # CDB: vpopmail keeps no valias table; an alias is qmail's ``.qmail-<alias>`` file in the domain
    # directory (``.`` in the name written ``:``, as qmail-local looks it up), one delivery line a
    # line, 0600 and the domain's uid/gid, read and written through :class:`vpop.files.UserDir`.

    def list_valiases(self, domain: Domain, alias: str | None = None) -> list[tuple[str, str]]:
        """``(alias, line)`` pairs of the domain (only ``alias``'s when given), by alias."""
        import os

        from vpop.files import UserDir

        found = []
        with UserDir(domain.dir, (domain.uid,), follow=True) as directory:
            if alias is not None:
                names = [dot_qmail_name(alias)]
            else:
                names = sorted(name for name in os.listdir(directory.fd)
                               if name.startswith(".qmail-") and name != ".qmail-default"
                               and ".tmp." not in name)
            for name in names:
                info = directory.stat(name)
                if info is None or not _is_regular(info):
                    continue
                data = directory.read(name, 1 << 20) or b""
                for line in data.decode("utf-8", "surrogateescape").split("\n"):
                    line = line.rstrip(" \t\r")
                    if line and not line.startswith("#"):
                        found.append((name[len(".qmail-"):].replace(":", "."), line))
        return found

    def insert_valias(self, alias: str, domain: Domain, line: str) -> bool:
        """Append ``line`` to the alias; False (nothing changed) when the alias has that line."""
        from vpop.files import UserDir

        name = dot_qmail_name(alias)
        with self.locked(domain), UserDir(domain.dir, (domain.uid,), follow=True) as directory:
            data = directory.read(name, 1 << 20) or b""
            text = data.decode("utf-8", "surrogateescape")
            if line in (entry.rstrip(" \t\r") for entry in text.split("\n")):
                return False
            text += ("" if not text or text.endswith("\n") else "\n") + line + "\n"
            uid = domain.uid if _is_root() else None
            directory.replace(name, lambda handle: handle.write(text.encode("utf-8", "surrogateescape")),
                              uid, domain.gid, 0o600)
        return True

    def delete_valias(self, alias: str, domain: Domain) -> int:
        """Remove every line of the alias; returns how many went (0: there was none)."""
        import os

        from vpop.files import UserDir, _problem

        name = dot_qmail_name(alias)
        with self.locked(domain), UserDir(domain.dir, (domain.uid,), follow=True) as directory:
            info = directory.stat(name)
            if info is None:
                return 0
            count = 1
            if _is_regular(info):
                data = directory.read(name, 1 << 20) or b""
                count = max(1, sum(1 for entry in data.split(b"\n") if entry.strip()))
            try:
                os.unlink(name, dir_fd=directory.fd)  # a link is removed, never followed
            except OSError as exc:
                raise _problem(directory.name(name), "remove", exc) from None
            return count

    def remove_valias_line(self, alias: str, domain: Domain, line: str) -> bool:
        """Remove one delivery line of the alias (vpopmail's ``valias_remove``; vpopmaild's
        ``remove_alias``); the file goes with its last line.  False when the alias has no such line."""
        import os

        from vpop.files import UserDir, _problem

        name = dot_qmail_name(alias)
        with self.locked(domain), UserDir(domain.dir, (domain.uid,), follow=True) as directory:
            info = directory.stat(name)
            if info is None or not _is_regular(info):
                return False
            text = (directory.read(name, 1 << 20) or b"").decode("utf-8", "surrogateescape")
            entries = text.split("\n")
            kept = [entry for entry in entries if entry.rstrip(" \t\r") != line]
            if len(kept) == len(entries):
                return False
            rest = "\n".join(kept)
            if not rest.strip():
                try:
                    os.unlink(name, dir_fd=directory.fd)
                except OSError as exc:
                    raise _problem(directory.name(name), "remove", exc) from None
                return True
            uid = domain.uid if _is_root() else None
            directory.replace(name, lambda handle: handle.write(rest.encode("utf-8", "surrogateescape")),
                              uid, domain.gid, 0o600)
        return True

    # ------------------------------------------------------------------ IP map (vipmap)
    # CDB: ``~vpopmail/etc/ip_alias_map``, ``IP domain`` lines (vcdb.c).

    def ip_map(self) -> list[tuple[str, str]]:
        from vpop.files import read_file

        data = read_file(self.settings.etc_dir + "/ip_alias_map", 1 << 20)
        pairs = []
        for line in (data or b"").decode("utf-8", "replace").split("\n"):
            parts = line.split()
            if len(parts) >= 2:
                pairs.append((parts[0], parts[1]))
        return pairs

    def set_ip_map(self, pairs: list[tuple[str, str]]) -> None:
        """Rewrite the whole map (under :meth:`ip_map_locked`), owned as ``~vpopmail/etc``."""
        import os

        from vpop.files import UserDir

        etc = self.settings.etc_dir
        text = "".join(f"{ip} {domain}\n" for ip, domain in pairs).encode()
        with UserDir(etc, follow=True) as directory:
            owner = os.fstat(directory.fd)
            uid = owner.st_uid if _is_root() else None
            directory.replace("ip_alias_map", lambda handle: handle.write(text), uid, owner.st_gid, 0o644)

    def ip_map_locked(self):
        """Context for a read-change-write of the map: ``etc/.ip_alias_map.lock``."""
        return _EtcLock(self.settings.etc_dir, ".ip_alias_map.lock")

    def ip_map_width(self) -> int | None:
        """How long an IP the map can hold (None: any)."""
        return None

    def add_ip_map(self, ip: str, domain: str) -> None:
        """Map ``ip`` to ``domain``; a line for the same IP is replaced (one domain per IP)."""
        with self.ip_map_locked():
            pairs = self.ip_map()
            at = next((i for i, pair in enumerate(pairs) if pair[0] == ip), len(pairs))
            kept = [pair for pair in pairs[:at] + pairs[at + 1:] if pair[0] != ip]
            kept.insert(at, (ip, domain))
            self.set_ip_map(kept)

    def delete_ip_map(self, ip: str, domain: str) -> bool:
        """Remove the ``ip domain`` mapping; False when there is none."""
        with self.ip_map_locked():
            pairs = self.ip_map()
            kept = [pair for pair in pairs if pair != (ip, domain)]
            if len(kept) == len(pairs):
                return False
            self.set_ip_map(kept)
            return True
    def replace_users(self, domain: Domain, records: list[User], *, remove: bool = True,
                      dry_run: bool = False, progress=None) -> "Plan":
        """vconvert's write: the domain's users become ``records`` (``remove``: users not among them
        go; else they stay), in one write (SQL: one transaction; CDB: vpasswd + cdb under the
        lock).  Nothing is written when nothing differs, or with ``dry_run``; ``progress(n)`` is
        called as records are written.  Returns the :class:`Plan` carried out."""
        raise NotImplementedError

    def release_user_subdir(self, domain: Domain, user_dir: str, name: str) -> None:
        """A user is gone: one user less in the hashing state (vpopmail's ``dec_dir_control``), and
        its hash directory listed in ``.dir_control_free`` for the next user (``backfill``)."""
        release_subdir_file(domain, user_dir, name)
        self.forget_subdir(domain)

    def forget_subdir(self, domain: Domain) -> None:
        """vpopmail's ``dec_dir_control``: ``cur_users`` of the hashing state less one (a domain's
        users, or with a ``dom_<uid>`` pseudo domain, a uid's domains)."""
        forget_user(domain.dir, domain.uid if _is_root() else None, domain.gid)


def dot_qmail_name(alias: str) -> str:
    """qmail-local's file for the local part ``alias``: ``.qmail-`` and the name, ``.`` as ``:``."""
    return ".qmail-" + alias.replace(".", ":")


def _is_regular(info) -> bool:
    import stat

    return stat.S_ISREG(info.st_mode)


class _EtcLock:
    """A lock file of ``~vpopmail/etc`` (through :class:`vpop.files.UserDir`)."""

    def __init__(self, etc_dir: str, name: str) -> None:
        self.etc_dir = etc_dir
        self.name = name
        self.fd = -1

    def __enter__(self) -> "_EtcLock":
        import os

        from vpop.files import UserDir

        with UserDir(self.etc_dir, follow=True) as directory:
            owner = os.fstat(directory.fd)
            self.fd = directory.lock(self.name, owner.st_uid if _is_root() else None, owner.st_gid)
        return self

    def __exit__(self, *exc: object) -> None:
        import os

        os.close(self.fd)
def _fields(record: User) -> tuple:
    return (record.passwd, record.uid, record.gid, record.gecos, record.dir, record.shell, record.clear)


class Plan:
    """What a :meth:`Store.replace_users` changes: records to add and to rewrite, names to remove."""

    __slots__ = ("added", "changed", "removed", "unchanged", "carried")

    def __init__(self, current: list[User], wanted: list[User], remove: bool) -> None:
        have = {record.name: record for record in current}
        names = {record.name for record in wanted}
        self.added = [record for record in wanted if record.name not in have]
        self.changed = [record for record in wanted
                        if record.name in have and _fields(have[record.name]) != _fields(record)]
        self.removed = [name for name in have if name not in names] if remove else []
        self.unchanged = len(wanted) - len(self.added) - len(self.changed)
        self.carried: tuple[int, int | None] = (0, None)  # lastauths, hashing count (vconvert)

    def __bool__(self) -> bool:
        return bool(self.added or self.changed or self.removed)

    def summary(self) -> str:
        return (f"{len(self.added)} added, {len(self.changed)} changed, {len(self.removed)} removed, "
                f"{self.unchanged} unchanged")


def _is_root() -> bool:
    import os

    return os.geteuid() == 0


def _rewrite_state(path: str, change, uid: int | None, gid: int | None) -> None:
    """Rewrite a hashing-state file of the domain directory (never through a link) with ``change``."""
    from vpop.files import ANY_OWNER, read_file, replace_file

    data = read_file(path, 1 << 20, owners=ANY_OWNER)
    text = change("" if data is None else data.decode("utf-8", "replace"))
    if text is not None:
        replace_file(path, lambda handle: handle.write(text.encode()), uid, gid, 0o600)


def forget_user(domain_dir: str, uid: int | None, gid: int | None) -> None:
    """vpopmail's ``dec_dir_control``: ``cur_users`` (the first line of ``.dir-control``) less one."""
    from vpop.files import lock_file
    from vpop.numbers import ascii_number

    def change(text: str) -> str | None:
        first, newline, rest = text.partition("\n")
        count = ascii_number(first.strip().encode(), 999_999_999) or 0
        if count <= 0:
            return None
        return f"{count - 1}{newline or chr(10)}{rest}"

    import os

    fd = lock_file(domain_dir + "/.dir-control.lock", uid, gid)
    try:
        _rewrite_state(domain_dir + "/.dir-control", change, uid, gid)
    finally:
        os.close(fd)


def release_subdir_file(domain: Domain, user_dir: str, name: str, once: bool = False) -> None:
    """vpopmail's ``backfill``: the hash part of ``user_dir`` (``0/A`` of ``<domain>/0/A/<name>``)
    appended to ``.dir_control_free``, so that the next new user takes it (``once``: unless it
    is listed already)."""
    import os

    from vpop.files import lock_file

    prefix = domain.dir.rstrip("/") + "/"
    if not user_dir.startswith(prefix) or not user_dir.endswith("/" + name):
        return
    subdir = user_dir[len(prefix):-len(name) - 1]
    if not subdir:
        return
    uid = domain.uid if _is_root() else None
    fd = lock_file(domain.dir + "/.dir-control.lock", uid, domain.gid)
    def change(text: str) -> str | None:
        if once and subdir in (line.strip() for line in text.split("\n")):
            return None
        return text + ("" if not text or text.endswith("\n") else "\n") + subdir + "\n"

    try:
        _rewrite_state(domain.dir + "/.dir_control_free", change, uid, domain.gid)
    finally:
        os.close(fd)
