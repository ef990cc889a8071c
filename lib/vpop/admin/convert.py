"""The library behind vconvert: users moved between the stores of one settings file.

The stores are named by kind, not by the settings' ``store``: ``cdb`` (``vpasswd`` +
``vpasswd.cdb`` in each domain directory of ``vpopmail_home``), ``mysql`` (the
``mysql_credentials`` database in the settings' ``many_domains`` layout), ``mysql-other`` (the same
database in the other layout) and, as a source only, ``etc`` (a passwd file and its shadow file).

A store-to-store conversion makes the target's users of each domain exactly the source's: every
field as it is (hash, uid, flags, gecos, directory, quota, clear password), users only in the
target removed.  From passwd files users are added (directory, default quota, as vadduser) or get
their new hash; nothing is removed.  Each domain is one write through the store
(:meth:`vpop.stores.base.Store.replace_users`): one transaction, or vpasswd + cdb under the lock.
"""

import copy
import os

from vpop import assign
from vpop.admin.cli import AdminError
from vpop.assign import Domain
from vpop.config import Settings
from vpop.stores.base import Plan, Store, User

KINDS = ("cdb", "mysql", "mysql-other", "etc")
MAX_GECOS = 64


def open_kind(settings: Settings, kind: str) -> Store:
    """The store of ``kind`` with this settings file's places and credentials."""
    changed = copy.copy(settings)
    if kind == "cdb":
        from vpop.stores.cdb import CdbStore

        changed.store = "cdb"
        return CdbStore(changed)
    from vpop.stores.mysql import MysqlStore

    changed.store = "mysql"
    if kind == "mysql-other":
        changed.many_domains = not settings.many_domains
    store = MysqlStore(changed)
    store.read_from_primary()  # what it converts is what the primary has
    return store


def describe(settings: Settings, kind: str) -> str:
    if kind == "cdb":
        return f"vpasswd files under {settings.domains_path}"
    if kind == "etc":
        return "passwd/shadow files"
    many = settings.many_domains if kind == "mysql" else not settings.many_domains
    layout = "one vpopmail table" if many else "a table per domain"
    return f"MySQL ({settings.mysql_credentials}, {layout})"


def all_domains(settings: Settings) -> list[Domain]:
    """Every real domain of ``users/assign`` (alias domains are the same users), in file order."""
    path = settings.qmail_home + "/users/assign"
    try:
        with open(path, "rb") as handle:
            text = handle.read().decode("utf-8", "surrogateescape")
    except FileNotFoundError:
        return []
    except OSError as exc:
        from vpop.errors import TemporaryFailure

        raise TemporaryFailure(f"cannot read {path}: {exc.strerror}") from None
    found: dict[str, Domain] = {}
    for line in text.split("\n"):
        if line.startswith("."):
            break
        if not line.startswith("+") or "-:" not in line:
            continue
        name, _, rest = line[1:].partition("-:")
        if rest.split(":", 1)[0].lower() != name.lower() or name.lower() in found:
            continue
        domain = assign.lookup(settings.qmail_home, name.lower())
        if domain is not None and domain.real not in found:
            found[domain.real] = domain
    return list(found.values())


def named_domains(settings: Settings, names: list[str]) -> list[Domain]:
    """The named domains (alias domains give their real one, each once); an unknown one refuses all."""
    found: dict[str, Domain] = {}
    for name in names:
        domain = assign.lookup(settings.qmail_home, name.lower())
        if domain is None:
            raise AdminError(f"Error: Domain does not exist: {name}", 256 - 11)
        found.setdefault(domain.real, domain)
    return list(found.values())


# ------------------------------------------------------------------ store to store


def convert_domain(source: Store, target: Store, domain: Domain, *, dry_run: bool = False,
                   progress=None) -> Plan:
    """The target's users of ``domain`` become the source's.  A source without any user for a
    domain the target has users of is refused (a missing vpasswd or table, not an empty domain)."""
    from vpop.errors import TemporaryFailure

    records = source.list_users(domain)
    if not records and target.list_users(domain):
        raise TemporaryFailure(f"the source has no users of {domain.real}: target left as it is")
    plan = target.replace_users(domain, records, dry_run=dry_run, progress=progress)
    plan.carried = carry_state(source, target, domain, records, dry_run=dry_run)
    if plan and not dry_run:
        from vpop.admin.notify import domain_changed

        domain_changed(target.settings, domain.real)
    return plan


def carry_state(source: Store, target: Store, domain: Domain, records: list[User], *,
                dry_run: bool = False) -> tuple[int, int | None]:
    """What the stores keep beside the records, carried where both have it: each user's lastauth
    (CDB: the ``lastauth`` file in the user's directory; MySQL: the ``lastauth`` table) and the
    hashing count (``.dir-control``; the ``dir_control`` row).  Only what differs is written (the
    two MySQL layouts share both tables: nothing to do).  Returns (lastauths written, the count
    written or None)."""
    wanted = source.lastauth_map(domain, records)
    have = target.lastauth_map(domain, records)
    by_name = {record.name: record for record in records}
    entries = [(by_name[name], when, ip) for name, (when, ip) in wanted.items()
               if have.get(name) != (when, ip)]
    count = source.allocated_count(domain)
    new_count = count if count != target.allocated_count(domain) else None
    if dry_run:
        return len(entries), new_count
    written = target.set_lastauths(domain, entries) if entries else 0
    if new_count is not None:
        target.set_allocated_count(domain, new_count)
    return written, new_count


# ------------------------------------------------------------------ passwd + shadow


def read_accounts(passwd_path: str, shadow_path: str) -> tuple[list[tuple[str, str, str]], list[str]]:
    """``([(name, hash, gecos)], skipped names)`` from a passwd file and its shadow file.

    As vpopmail's ``etc_to_default``: the hash from the shadow file (from the passwd file when
    there is no shadow file); an account whose hash has 2 characters or less is skipped, and so
    are (unlike vpopmail) root, locked hashes (``!`` or ``*`` first) and names vpopmail refuses.
    """
    from vpop.errors import TemporaryFailure
    from vpop.names import valid_user

    def lines(path: str) -> list[list[str]] | None:
        try:
            with open(path, "rb") as handle:
                text = handle.read().decode("utf-8", "surrogateescape")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise TemporaryFailure(f"cannot read {path}: {exc.strerror}") from None
        return [line.split(":") for line in text.split("\n") if line and not line.startswith("#")]

    passwd = lines(passwd_path)
    if passwd is None:
        raise TemporaryFailure(f"cannot read {passwd_path}: no such file")
    shadow = lines(shadow_path)
    hashes = None if shadow is None else {fields[0]: fields[1] for fields in shadow if len(fields) > 1}
    accounts, skipped = [], []
    for fields in passwd:
        if len(fields) < 7:
            continue
        name, gecos = fields[0], fields[4].split(",")[0]
        stored = fields[1] if hashes is None else hashes.get(name, "")
        usable = len(stored) > 2 and stored[0] not in "!*"
        if not usable or fields[2] == "0" or not valid_user(name.lower()) or name.lower() == "vpasswd":
            skipped.append(name)
            continue
        accounts.append((name.lower(), stored, gecos.replace(":", "")[:MAX_GECOS]))
    return accounts, skipped


def read_userpass(path: str) -> tuple[list[tuple[str, str, str]], list[str]]:
    """``-p file``: ``user:crypted`` lines (vconvert's ``PASSWD_TOKENS``: space, ``:`` and tab
    separate) as ``([(name, hash, gecos = name)], skipped names)``; a name vpopmail would refuse,
    and a hash of 2 characters or less, are skipped."""
    from vpop.errors import TemporaryFailure
    from vpop.names import valid_user

    try:
        with open(path, "rb") as handle:
            text = handle.read().decode("utf-8", "surrogateescape")
    except OSError as exc:
        raise TemporaryFailure(f"cannot read {path}: {exc.strerror}") from None
    accounts, skipped = [], []
    for line in text.split("\n"):
        words = line.replace(":", " ").split()
        if len(words) < 2:
            continue
        name, stored = words[0].lower(), words[1]
        if not valid_user(name) or name == "vpasswd" or len(stored) <= 2:
            skipped.append(words[0])
            continue
        accounts.append((name, stored, name))
    return accounts, skipped


SQWEBMAIL_PASS = "sqwebmail-pass"


def sqwebmail_pass(store: Store, domain: Domain, *, names: "set[str] | None" = None,
                   dry_run: bool = False) -> tuple[int, int]:
    """``-S`` (vpopmail's ``vsqwebmail_pass``): each user's ``Maildir/sqwebmail-pass``, sqwebmail's
    copy of the hash (a tab, the hash, a newline), written as the domain's uid through a Maildir
    opened without following links, mode 0600 (vpopmail: the umask's); only ``names`` when given.
    A user without a Maildir is left out.  Returns (written, unchanged)."""
    from vpop.errors import TemporaryFailure
    from vpop.files import UserDir
    from vpop.privileges import ActingAs

    written = unchanged = 0
    with ActingAs(domain.uid, domain.gid):
        for record in store.list_users(domain):
            if not record.dir or (names is not None and record.name not in names):
                continue
            text = f"\t{record.passwd}\n".encode("utf-8", "surrogateescape")
            try:
                with UserDir(record.dir + "/Maildir", (domain.uid,), follow=True) as maildir:
                    if maildir.read(SQWEBMAIL_PASS, 4096) == text:
                        unchanged += 1
                        continue
                    if not dry_run:
                        def fill(handle, data: bytes = text) -> None:
                            handle.write(data)

                        maildir.replace(SQWEBMAIL_PASS, fill, None, None, 0o600)
            except (TemporaryFailure, OSError):
                continue
            written += 1
    return written, unchanged


def etc_domain(settings: Settings, target: Store, kind: str, domain: Domain,
               accounts: list[tuple[str, str, str]], *, dry_run: bool = False, progress=None) -> Plan:
    """The accounts into ``domain``: a new user gets its directory (as vadduser makes it) and the
    domain's default quota; an existing one keeps everything but takes the account's hash."""
    from vpop.admin import users

    target.connect_for_updates()
    with target.locked(domain):
        current = {record.name: record for record in target.list_users(domain)}
        records, made = [], []
        quota = users.domain_default_quota(settings, target, domain)
        pw_uid = 1 if kind == "cdb" else 0
        uid, gid = users._owner(domain)
        try:
            for name, stored, gecos in accounts:
                old = current.get(name)
                if old is not None:
                    record = copy.copy(old)
                    record.passwd = stored
                else:
                    path = ""
                    if not dry_run:
                        target.create_tables(domain)
                        path = target.make_user_dir(domain, name, uid, gid)
                        made.append((path, name))
                    record = User(name, domain.real, stored, pw_uid, 0, gecos or name, path, quota, "")
                records.append(record)
            plan = target.replace_users(domain, records, remove=False, dry_run=dry_run, progress=progress)
        except BaseException:
            for path, name in made:
                users._undo_user_dir(settings, target, domain, path, name)
            raise
    if not dry_run:
        for record in plan.added:
            users.update_maildirsize(settings, domain, record)
    return plan


def is_root() -> bool:
    return os.geteuid() == 0
