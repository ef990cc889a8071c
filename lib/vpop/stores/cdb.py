"""vpopmail's CDB store (the embedded default): ``vpasswd`` + ``vpasswd.cdb`` per domain.

A ``vpasswd`` line is ``name:passwd:uid:gid:gecos:dir:shell[:clear]``; ``vpasswd.cdb``
maps ``name`` to the rest of the line.  We read the cdb unless it is missing or older than
``vpasswd`` (vpopmail never checks the age, so an edit of ``vpasswd`` without a rebuild
went unseen); then ``vpasswd`` itself.  Writes (a blank ``pw_dir`` filled in) rewrite
``vpasswd`` and rebuild the cdb, each through a temporary file and ``rename``, under
``.vpasswd.lock``.
"""

import os

from vpop.assign import Domain
from vpop.errors import TemporaryFailure
from vpop.stores.base import Store, User, to_int

TYPE_CHECKING = False  # typing costs import time; the names below are only for annotations
if TYPE_CHECKING:
    from vpop.files import UserDir
    from vpop.stores.base import Plan


def parse_record(name: str, domain: str, data: str) -> User:
    """A User from the part of a vpasswd line after ``name:``."""
    fields = data.split(":")
    fields += [""] * (7 - len(fields))
    return User(name, domain, fields[0], to_int(fields[1]), to_int(fields[2]), fields[3], fields[4],
                fields[5], fields[6])


def format_line(record: User, with_clear: bool = True) -> str:
    """The vpasswd line of a record (no newline)."""
    fields = [record.name, record.passwd, str(record.uid), str(record.gid),
              record.gecos.replace(":", ""), record.dir, record.shell]
    if with_clear:
        fields.append(record.clear)
    return ":".join(fields)


def _mtime(info: "os.stat_result | None") -> float | None:
    return None if info is None else info.st_mtime


def write_vpasswd(domain_dir: str, lines: list[str], uid: int | None = None, gid: int | None = None) -> None:
    """Write ``vpasswd`` and ``vpasswd.cdb`` atomically from vpasswd lines (caller holds the lock).

    Mode 0600: both hold password hashes (vpopmail writes them under umask 077).
    """
    from vpop.files import replace_file, write_cdb

    text = "".join(line + "\n" for line in lines).encode("utf-8", "surrogateescape")
    replace_file(domain_dir + "/vpasswd", lambda f: f.write(text), uid, gid, 0o600)
    # one encode for the whole file, then the keys and values cut out of it (a line holds no \n)
    pairs = [line.partition(b":")[::2] for line in text.split(b"\n")[:-1]]
    write_cdb(domain_dir + "/vpasswd.cdb", pairs, uid, gid, 0o600)


def read_lines(domain_dir: str, directory: "UserDir | None" = None) -> list[str]:
    """The vpasswd lines of a domain (empty list if there is no vpasswd).

    Read through :class:`vpop.files.UserDir` (``directory`` when the domain directory is already
    open): root reads it in a directory the domain's uid can write, so a link or FIFO there is a
    TemporaryFailure naming it, never followed and never waited on.
    """
    from vpop.files import ANY_OWNER, read_file

    if directory is not None:
        data = directory.read("vpasswd")
    else:
        data = read_file(domain_dir + "/vpasswd", owners=ANY_OWNER)
    if data is None:
        return []
    return [line for line in data.decode("utf-8", "surrogateescape").split("\n") if ":" in line]


class CdbStore(Store):
    """Users in ``<domain dir>/vpasswd(.cdb)``; lastauth and relay state in files."""

    def __init__(self, settings) -> None:
        self.settings = settings

    def get_user(self, user: str, domain: Domain) -> User | None:
        from vpop.files import UserDir

        with UserDir(domain.dir, (domain.uid,), follow=True) as directory:  # the domain's or root's
            cdb_time = _mtime(directory.stat("vpasswd.cdb"))
            text_time = _mtime(directory.stat("vpasswd"))
            if cdb_time is not None and (text_time is None or cdb_time >= text_time):
                try:
                    value = directory.cdb_get("vpasswd.cdb", user.encode())
                except FileNotFoundError:
                    value = None  # removed since the stat: read vpasswd below
                else:
                    if value is None:
                        return None
                    return parse_record(user, domain.real, value.decode("utf-8", "surrogateescape"))
            if text_time is None:
                if cdb_time is None:
                    # Neither file: an unmounted or renamed domain directory, not "no such user".
                    raise TemporaryFailure(f"no vpasswd or vpasswd.cdb in {domain.dir}")
                return None
            prefix = user + ":"
            for line in read_lines(domain.dir, directory):
                if line.startswith(prefix):
                    return parse_record(user, domain.real, line[len(prefix):])
            return None

    def add_user(self, record: User, domain: Domain) -> None:
        """Insert a vpasswd line in sorted position (as vadduser does) and rebuild the cdb."""
        line = format_line(record, self.settings.clear_passwords)
        with self.locked(domain):
            lines = [entry for entry in read_lines(domain.dir) if not entry.startswith(record.name + ":")]
            position = next((i for i, entry in enumerate(lines) if entry.split(":", 1)[0] > record.name),
                            len(lines))
            lines.insert(position, line)
            uid = domain.uid if os.geteuid() == 0 else None
            write_vpasswd(domain.dir, lines, uid, domain.gid)

    def mend(self, domain: Domain) -> None:
        """A vpasswd.cdb older than vpasswd (a writer killed between the two renames; readers
        take vpasswd meanwhile) is built again from vpasswd."""
        try:
            text = os.stat(domain.dir + "/vpasswd")
        except FileNotFoundError:
            return
        try:
            fresh = os.stat(domain.dir + "/vpasswd.cdb").st_mtime_ns >= text.st_mtime_ns
        except FileNotFoundError:
            fresh = False
        if not fresh:
            write_vpasswd(domain.dir, read_lines(domain.dir), domain.uid if os.geteuid() == 0 else None,
                          domain.gid)

    def _rewrite(self, domain: Domain, change) -> bool:
        """Under the lock: ``change(lines)`` edits the vpasswd lines in place (False: no change)."""
        with self.locked(domain):
            lines = read_lines(domain.dir)
            if not change(lines):
                return False
            write_vpasswd(domain.dir, lines, domain.uid if os.geteuid() == 0 else None, domain.gid)
            return True

    def insert_user(self, record: User, domain: Domain) -> bool:
        line = format_line(record, self.settings.clear_passwords)
        prefix = record.name + ":"

        def change(lines: list[str]) -> bool:
            if any(entry.startswith(prefix) for entry in lines):
                return False
            # vauth_adduser: before the first line whose name sorts after (strcmp) the new one
            position = next((i for i, entry in enumerate(lines)
                             if entry.split(":", 1)[0].encode("utf-8", "surrogateescape")
                             > record.name.encode()), len(lines))
            lines.insert(position, line)
            return True

        return self._rewrite(domain, change)

    def update_user(self, record: User, domain: Domain) -> bool:
        prefix = record.name + ":"

        def change(lines: list[str]) -> bool:
            for i, entry in enumerate(lines):
                if entry.startswith(prefix):
                    lines[i] = format_line(record, self.settings.clear_passwords or entry.count(":") >= 7)
                    return True
            return False

        return self._rewrite(domain, change)

    def delete_user(self, name: str, domain: Domain) -> bool:
        prefix = name + ":"

        def change(lines: list[str]) -> bool:
            kept = [entry for entry in lines if not entry.startswith(prefix)]
            if len(kept) == len(lines):
                return False
            lines[:] = kept
            return True

        return self._rewrite(domain, change)

    def list_users(self, domain: Domain) -> list[User]:
        """The vpasswd lines in file order (vadduser keeps them sorted)."""
        users = []
        for line in read_lines(domain.dir):
            name, _, rest = line.partition(":")
            users.append(parse_record(name, domain.real, rest))
        return users

    def replace_users(self, domain: Domain, records: list[User], *, remove: bool = True,
                      dry_run: bool = False, progress=None) -> "Plan":
        """Under ``.vpasswd.lock``: vpasswd and vpasswd.cdb rewritten (sorted by name, as vadduser
        keeps them) when anything differs; a clear password is written whenever a record has one."""
        from vpop.stores.base import Plan

        with self.locked(domain):
            current = self.list_users(domain)
            plan = Plan(current, records, remove)
            if plan and not dry_run:
                kept = {record.name: record for record in current if record.name not in set(plan.removed)}
                kept.update((record.name, record) for record in records)
                ordered = sorted(kept.values(), key=lambda r: r.name.encode("utf-8", "surrogateescape"))
                lines = [format_line(r, self.settings.clear_passwords or bool(r.clear)) for r in ordered]
                write_vpasswd(domain.dir, lines, domain.uid if os.geteuid() == 0 else None, domain.gid)
            if progress is not None:
                progress(len(records))
        return plan

    def get_lastauth(self, record: User, domain: Domain) -> tuple[int, str] | None:
        """``<pw_dir>/lastauth``: its mtime and its text (the IP), read without following a link."""
        if not record.dir.startswith("/"):
            return None
        from vpop.files import FileProblem, UserDir

        try:
            with UserDir(record.dir, (domain.uid,), follow=True) as directory:
                info = directory.stat("lastauth")
                if info is None:
                    return None
                data = directory.read("lastauth", 256, truncate=True) or b""
        except (FileProblem, TemporaryFailure, OSError):
            return None
        return int(info.st_mtime), data.decode("ascii", "replace").strip()

    def source(self, domain: Domain) -> str:
        return f"{domain.dir}/vpasswd"

    def as_mail_user(self, domain: Domain):
        from vpop.privileges import ActingAs

        return ActingAs(domain.uid, domain.gid)

    def set_user_dir(self, record: User, domain: Domain, path: str) -> str:
        """Under the vpasswd lock: re-read the line, and fill ``pw_dir`` only if it is still blank."""
        from vpop.stores.locks import VpasswdLock  # a write: not on the lookup path

        try:
            with VpasswdLock(domain.dir):
                lines = read_lines(domain.dir)
                prefix = record.name + ":"
                for i, line in enumerate(lines):
                    if line.startswith(prefix):
                        current = parse_record(record.name, domain.real, line[len(prefix):])
                        if current.dir:
                            record.dir = current.dir  # another delivery was first
                            return current.dir
                        current.dir = path
                        lines[i] = format_line(current, line.count(":") >= 7)
                        break
                else:
                    raise TemporaryFailure(f"user {record.name} vanished from {domain.dir}/vpasswd")
                write_vpasswd(domain.dir, lines, domain.uid, domain.gid)
        except OSError as exc:
            raise TemporaryFailure(f"cannot update {domain.dir}/vpasswd: {exc.strerror}") from None
        record.dir = path
        return path

    def replace_password_hash(self, record: User, domain: Domain, old: str, new: str) -> bool:
        """Under the vpasswd lock: re-read the line; only its hash field changes, and only if it is
        still ``old``.  vpasswd and vpasswd.cdb are rewritten (temp file, fsync, rename) with the
        domain's uid/gid: the caller runs this as the domain's uid (``as_mail_user``)."""
        from vpop.stores.locks import VpasswdLock

        prefix = record.name + ":"
        try:
            with VpasswdLock(domain.dir):
                lines = read_lines(domain.dir)
                for i, line in enumerate(lines):
                    if line.startswith(prefix):
                        current, sep, tail = line[len(prefix):].partition(":")
                        if current != old:
                            return False
                        lines[i] = prefix + new + sep + tail
                        break
                else:
                    return False  # removed meanwhile: nothing to upgrade
                write_vpasswd(domain.dir, lines, domain.uid, domain.gid)
        except OSError as exc:
            raise TemporaryFailure(f"cannot update {domain.dir}/vpasswd: {exc.strerror}") from None
        record.passwd = new
        return True

    def set_lastauth(self, record: User, domain: Domain, ip: str, now: int) -> None:
        """``<pw_dir>/lastauth``: the IP without a newline, mtime = ``now``, the domain's uid/gid.

        Through :class:`vpop.files.UserDir`: the user directory (the domain's or root's, never a
        link) belongs to the mail user, who may plant a link or FIFO as ``lastauth``; such a file
        is a TemporaryFailure naming it (logged by vchkpw, which still lets the login through).
        """
        if not record.dir.startswith("/") or record.dir == "/":
            return
        from vpop.files import UserDir

        with UserDir(record.dir, (domain.uid,)) as directory:
            owner = (domain.uid, domain.gid) if os.geteuid() == 0 else (None, None)
            directory.rewrite("lastauth", ip.encode(), 0o600, *owner, mtime=now)

    def open_relay(self, ip: str, now: int) -> None:
        from vpop import relay

        settings = self.settings
        uid, gid = self._etc_owner()
        relay.open_relay(settings.etc_dir, ip, now, settings.tcp_file, settings.rebuild_tcpserver_file,
                         uid, gid)

    def clear_relay(self, now: int) -> int:
        from vpop import relay

        settings = self.settings
        uid, gid = self._etc_owner()
        return relay.clear_expired(settings.etc_dir, now, settings.relay_clear_minutes, settings.tcp_file,
                                   settings.rebuild_tcpserver_file, uid, gid)

    def _etc_owner(self) -> tuple[int | None, int | None]:
        """As root, vpopmail leaves the relay files to the owner of ~vpopmail/etc."""
        if os.geteuid() != 0:
            return None, None
        try:  # a link here is refused by vpop.relay; do not take its owner meanwhile
            owner = os.stat(self.settings.etc_dir, follow_symlinks=False)
        except OSError as exc:
            raise TemporaryFailure(f"cannot stat {self.settings.etc_dir}: {exc.strerror}") from None
        return owner.st_uid, owner.st_gid
