"""The domain library behind vadddomain, vdeldomain, vaddaliasdomain and vdominfo.

A domain is laid out as vpopmail 5.4/5.6 lays it out (``vpopmail.c``: ``vadddomain``,
``add_domain_assign``, ``vdeldomain``, ``del_control``, ``del_domain_assign``):

* its directory ``<dir>/domains/[hash/]<domain>`` (0750, the domain's uid/gid), the hash part from the
  ``dom_<uid>`` counter (``domains/.dir-control`` on the CDB store, the ``dir_control`` row
  ``dom_<uid>`` on MySQL: from the 100th domain of a uid on, ``0/``, ``1/`` ...);
* ``.qmail-default`` (0600) = ``| <vpopmail_home>/bin/vdelivermail '' bounce-no-mailbox`` (5.4's line;
  5.6 writes ``delete``), or what ``-e`` asks for;
* on the CDB store an empty ``vpasswd`` and ``vpasswd.cdb`` (0600); on MySQL the ``vpopmail`` table,
  or with ``many_domains = no`` the domain's own table (``example_com``);
* ``users/assign`` ``+D-:D:U:G:P:-::`` (an alias ``+A-:D:U:G:P:-::``) compiled into ``users/cdb`` as
  qmail-newu compiles it; ``control/virtualdomains`` ``D:D``; ``control/rcpthosts`` ``D``, or
  ``morercpthosts`` (+ ``morercpthosts.cdb`` as qmail-newmrh builds it) once rcpthosts has 50 lines;
  the name leaves ``control/locals``; lines go in at vpopmail's sorted place (``update_file``);
* then qmail-send gets a SIGHUP (setting ``qmail_send_signal``).

Deleting takes all of it away again, alias domains included, and on MySQL the domain's rows in
``vpopmail`` (or its table), ``lastauth``, ``valias``, ``limits`` and ``dir_control``.

Every command holds ``users/assign.lock`` from its first check to its last write, and each qmail
file is rewritten under its own ``<file>.lock`` (as vpopmail locks them) through a temporary file,
fsync and rename.  The order makes ``users/assign`` the commit: a new domain's files and rows come
first and its assign line last; a deleted domain loses its assign line last.  A command killed on
the way leaves every file whole (old or new), and running the same command again finishes the job;
one that fails undoes what it did.  Root never follows a link in a directory a mail user can write.

Refusals are :class:`vpop.admin.cli.AdminError` with vpopmail's text and exit code.
"""

import os
import stat
import sys

from vpop import assign
from vpop.admin.cli import MAX_PW_CLEAR_PASSWD, AdminError
from vpop.assign import Domain
from vpop.config import Settings
from vpop.errors import TemporaryFailure

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from vpop.stores.mysql import MysqlStore

MAX_PW_DOMAIN = 96
MAX_PW_DIR = 160
RCPTHOSTS_LIMIT = 50  # count_rcpthosts() >= 50: new names go to morercpthosts
DIR_MODE = 0o750  # VPOPMAIL_DIR_MODE
FILE_MODE = 0o600  # vpopmail's umask 077
QMAIL_MODE = 0o644  # VPOPMAIL_QMAIL_MODE: users/assign and the control files
SPECIAL_DELIVERIES = ("delete", "bounce-no-mailbox")
# vpop.passwords.make_hash's method for each password_scheme it can make
_HASH_METHODS = {"sha512-crypt": "sha512", "md5-crypt": "md5", "bcrypt": "bcrypt"}

ASSIGN, CONTROL = 1, 2  # update_file's file types (users/assign; rcpthosts and virtualdomains)

DOMAIN_MISSING = "Error: Domain does not exist"
DOMAIN_EXISTS = "Error: Domain already exists"
INVALID_NAME = "Error: Invalid domain name"
NO_ASSIGN = "Can't get domain entries - can't read users/assign file"
EXIT_MISSING = 256 - 11  # VA_DOMAIN_DOES_NOT_EXIST
EXIT_EXISTS = 256 - 13  # VA_DOMAIN_ALREADY_EXISTS
EXIT_INVALID = 256 - 12  # VA_INVALID_DOMAIN_NAME
EXIT_NO_ASSIGN = 256 - 37  # VA_CANNOT_READ_ASSIGN


def _warn(text: str) -> None:
    """vpopmail's library warnings go to stderr; so do ours."""
    print(text, file=sys.stderr, flush=True)


def _root() -> bool:
    return os.geteuid() == 0


# ------------------------------------------------------------------ names


def domain_name(text: str) -> str:
    """A new domain's name as vpopmail 5.6's ``vadddomain`` accepts it, lower-cased (``lowerit``).

    At least 3 characters, at most 96 (``domain name too long (max=96)``, 230), a dot and a last
    label of 2 to 63 characters, only letters, digits, ``-`` and ``.``, no ``..``, no ``-`` first or
    last; and (stricter) no ``.`` first.  Anything else is ``Error: Invalid domain name`` (244).
    """
    from vpop.names import ascii_lower, valid_domain

    name = ascii_lower(text)
    if len(name) > MAX_PW_DOMAIN:
        raise AdminError(f"Error: domain name too long (max={MAX_PW_DOMAIN})", 256 - 26)
    dot = name.rfind(".")
    if (len(name) < 3 or dot < 0 or not 2 <= len(name) - 1 - dot <= 63 or name[0] == "-"
            or name[-1] == "-" or not valid_domain(name)):
        raise AdminError(INVALID_NAME, EXIT_INVALID)
    return name


def lookup_name(text: str) -> str:
    """A name to look up (vdeldomain, vdominfo): lower-cased; one that no domain can have is ``""``."""
    from vpop.names import ascii_lower, valid_domain

    name = ascii_lower(text)
    return name if name and valid_domain(name) else ""


# ------------------------------------------------------------------ users/assign


class Entry:
    """One domain line of users/assign (``get_domain_entries``): ``domain`` -> ``real``."""

    __slots__ = ("domain", "real", "uid", "gid", "dir")

    def __init__(self, domain: str, real: str, uid: int, gid: int, dir: str) -> None:
        self.domain, self.real, self.uid, self.gid, self.dir = domain, real, uid, gid, dir

    @property
    def alias(self) -> bool:
        return self.domain != self.real

    def as_domain(self) -> Domain:
        return Domain(self.domain, self.real, self.uid, self.gid, self.dir)


def _assign_path(settings: Settings) -> str:
    return settings.qmail_home + "/users/assign"


def read_entries(settings: Settings) -> "list[Entry] | None":
    """The domain lines of users/assign in file order (None: no users/assign).

    vpopmail's ``get_domain_entries``: ``+`` lines whose name has a dot and ends in ``-``, with a
    real domain, uid, gid and directory; the lines after the final ``.`` are qmail-newu's to ignore.
    """
    from vpop.numbers import atoi

    lines = _read_lines(_assign_path(settings))
    if lines is None:
        return None
    entries = []
    for line in lines:
        if line == ".":
            break
        if not line.startswith("+"):
            continue
        fields = line[1:].split(":")
        if len(fields) < 5 or not all(fields[:5]):
            continue
        key, real = fields[0], fields[1]
        if "." not in key or not key.endswith("-") or len(key) < 2:
            continue
        entries.append(Entry(key[:-1], real, atoi(fields[2]), atoi(fields[3]), fields[4]))
    return entries


def known(settings: Settings, name: str) -> Domain | None:
    """The domain (an alias gives its real one) from users/cdb, else from users/assign itself (a line
    that qmail-newu has not compiled yet still counts)."""
    found = assign.lookup(settings.qmail_home, name)
    if found is not None:
        return found
    for entry in read_entries(settings) or []:
        if entry.domain == name:
            return entry.as_domain()
    return None


def domain_group(settings: Settings, name: str,
                 prefix: str = "Error: ") -> "tuple[Entry | None, list[Entry]]":
    """vdeldomain's and vdominfo's view: the real domain's own line (or None) and the lines of its
    alias domains, for ``name`` or the domain ``name`` is an alias of.  No users/assign is
    ``<prefix>Can't get domain entries ...`` (219)."""
    entries = read_entries(settings)
    if entries is None:
        raise AdminError(prefix + NO_ASSIGN, EXIT_NO_ASSIGN)
    found = assign.lookup(settings.qmail_home, name) if name else None
    real = found.real if found is not None else name
    for entry in entries:
        if entry.domain == name and found is None:
            real = entry.real
    group = [entry for entry in entries if entry.real == real]
    own = next((entry for entry in group if not entry.alias), None)
    return own, [entry for entry in group if entry.alias]


def assign_line(alias: str, real: str, uid: int, gid: int, path: str) -> str:
    return f"+{alias}-:{real}:{uid}:{gid}:{path}:-::"


# ------------------------------------------------------------------ qmail's files


def _read_lines(path: str) -> "list[str] | None":
    """A file's lines without their newlines (None: no such file); never through a link or FIFO."""
    from vpop.files import read_regular

    try:
        data = read_regular(path)
    except OSError as exc:
        raise TemporaryFailure(f"cannot read {path}: {exc}") from None
    if data is None:
        return None
    text = data.decode("utf-8", "surrogateescape")
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return lines


def _write_lines(path: str, lines: "list[str]", mode: int = QMAIL_MODE) -> None:
    from vpop.files import replace_file

    data = "".join(line + "\n" for line in lines).encode("utf-8", "surrogateescape")
    replace_file(path, lambda handle: handle.write(data), None, None, mode)


def sort_key(line: str, file_type: int) -> bytes:
    """vpopmail's ``extract_domain``: the name before the first ``:`` (users/assign: without its ``+``
    and trailing ``-``) with its last two labels put first (``a.example.com`` -> ``example.com.a``)."""
    name = line[1:] if file_type == ASSIGN else line
    name = name.split(":", 1)[0]
    if file_type == ASSIGN:
        name = name[:-1]
    parts = [part for part in name.split(".") if part][:10]  # strtok: empty labels vanish; ten at most
    if len(parts) > 1:
        name = ".".join([parts[-2], parts[-1], *parts[:-2]])
    return name.encode("utf-8", "surrogateescape")


def insert_sorted(lines: "list[str]", new: str, file_type: int) -> "list[str]":
    """vpopmail's ``update_file``: ``new`` before the first line whose key sorts after its own; a file
    found out of order is sorted (stably here; vpopmail's qsort was not) with vpopmail's notice."""
    new_key = sort_key(new, file_type)
    at = next((i for i, line in enumerate(lines) if sort_key(line, file_type) > new_key), len(lines))
    out = [*lines[:at], new, *lines[at:]]
    if not _in_order(lines, file_type):
        out.sort(key=lambda line: sort_key(line, file_type))
    return out


class _Locked:
    """``<file>.lock`` held (vpopmail's ``get_write_lock`` on the same name) while a file is rewritten."""

    def __init__(self, path: str) -> None:
        self.path = path + ".lock"
        self.fd = -1

    def __enter__(self) -> "_Locked":
        from vpop.files import lock_file

        self.fd = lock_file(self.path)
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


def _edit(path: str, change: "Callable[[list[str]], list[str] | None]", create: bool = True) -> bool:
    """Under ``<path>.lock``: ``change(lines)`` returns the new lines (None: leave the file alone).
    A missing file reads as no lines when ``create`` (else it stays missing).  True if written."""
    if not create and not os.path.lexists(path):
        return False  # (and no lock file beside a file that is not there)
    with _Locked(path):
        lines = _read_lines(path)
        if lines is None and not create:
            return False
        new = change(list(lines or []))
        if new is None or (lines is not None and new == lines):
            return False
        _write_lines(path, new)
        return True


def _add_host_line(path: str, line: str, file_type: int) -> bool:
    """Add ``line`` at its sorted place unless it is there already (vpopmail added it twice)."""
    in_order = [True]

    def change(lines: "list[str]") -> "list[str] | None":
        if line in lines:
            return None
        in_order[0] = _in_order(lines, file_type)
        return insert_sorted(lines, line, file_type)

    written = _edit(path, change)
    if written and not in_order[0]:
        _warn(f"NOTICE: Out of order entries found in {path}\n   Sorting...\n")
    return written


def _in_order(lines: "list[str]", file_type: int) -> bool:
    keys = [sort_key(line, file_type) for line in lines]
    return all(a <= b for a, b in zip(keys, keys[1:], strict=False))


def _remove_lines(path: str, targets: "Iterable[str]") -> int:
    """vpopmail's ``remove_lines``: drop the lines equal to one of ``targets``; how many went.
    A missing file stays missing (vpopmail created an empty one: an empty ``locals`` ends local
    delivery, an empty ``rcpthosts`` refuses every recipient)."""
    wanted = set(targets)
    removed = [0]

    def change(lines: "list[str]") -> "list[str] | None":
        kept = [line for line in lines if line not in wanted]
        removed[0] = len(lines) - len(kept)
        return kept if removed[0] else None

    _edit(path, change, create=False)
    return removed[0]


def build_morercpthosts_cdb(qmail_home: str) -> None:
    """``control/morercpthosts.cdb`` as qmail-newmrh builds it: each line lower-cased (ASCII), trailing
    blanks, tabs and newlines cut, empty and ``#`` lines skipped, empty data, file order; 0644."""
    from vpop.files import write_cdb

    control = qmail_home + "/control"
    with _Locked(control + "/morercpthosts"):
        lines = _read_lines(control + "/morercpthosts") or []
        pairs = []
        for line in lines:
            key = bytes(c + 32 if 65 <= c <= 90 else c for c in line.encode("utf-8", "surrogateescape"))
            key = key.rstrip(b" \t\n")
            if key and not key.startswith(b"#"):
                pairs.append((key, b""))
        write_cdb(control + "/morercpthosts.cdb", pairs, None, None, 0o644)


def _virtualdomains_conflict(settings: Settings, name: str) -> str | None:
    """A virtualdomains line for ``name`` other than vpopmail's ``name:name`` (it would route the
    domain elsewhere; vpopmail added a second line for the same key)."""
    for line in _read_lines(settings.qmail_home + "/control/virtualdomains") or []:
        key = line.split(":", 1)[0].strip().lower()
        if key == name and line != f"{name}:{name}":
            return line
    return None


class _Undo:
    """What to take back when a later step fails, newest first; a failing undo step is skipped."""

    def __init__(self) -> None:
        self.steps: list = []

    def add(self, step: "Callable[[], object]") -> None:
        self.steps.append(step)

    def run(self) -> None:
        for step in reversed(self.steps):
            try:
                step()
            except Exception as exc:  # the original failure is what the caller reports
                _warn(f"Warning: could not undo a step: {getattr(exc, 'message', exc)}")
        self.steps = []


def _add_control(settings: Settings, name: str, optimize: bool, undo: _Undo) -> None:
    """``add_domain_assign``'s control part: rcpthosts (morercpthosts from 50 lines on),
    virtualdomains ``name:name``, and ``name`` out of ``locals``."""
    control = settings.qmail_home + "/control"
    if not os.path.isdir(control):
        raise TemporaryFailure(f"{control}: no such directory")
    rcpthosts, more = control + "/rcpthosts", control + "/morercpthosts"
    already = name in (_read_lines(rcpthosts) or []) or name in (_read_lines(more) or [])
    if not already:
        target = more if len(_read_lines(rcpthosts) or []) >= RCPTHOSTS_LIMIT else rcpthosts
        if _add_host_line(target, name, CONTROL):
            if target == more:
                undo.add(lambda: build_morercpthosts_cdb(settings.qmail_home))  # after the line went
            undo.add(lambda: _remove_lines(target, [name]))
    if not optimize and _older(more + ".cdb", more):
        build_morercpthosts_cdb(settings.qmail_home)
    line = f"{name}:{name}"
    if _add_host_line(control + "/virtualdomains", line, CONTROL):
        undo.add(lambda: _remove_lines(control + "/virtualdomains", [line]))
    locals_path = control + "/locals"
    if _remove_lines(locals_path, [name]):
        def put_back() -> None:
            _edit(locals_path, lambda lines: [*lines, name])

        undo.add(put_back)


def _remove_control(settings: Settings, names: "list[str]") -> None:
    """``del_control``: the names out of rcpthosts and morercpthosts (both: vpopmail looked in
    morercpthosts only when rcpthosts had none of them), morercpthosts.cdb rebuilt or, with
    morercpthosts empty, both removed; ``name:name`` out of virtualdomains."""
    control = settings.qmail_home + "/control"
    _remove_lines(control + "/rcpthosts", names)
    more = control + "/morercpthosts"
    if _remove_lines(more, names):
        with _Locked(more):
            empty = os.stat(more).st_size == 0
            if empty:
                for path in (more + ".cdb", more):  # the cdb first: it is what qmail-smtpd reads
                    try:
                        os.unlink(path)
                    except FileNotFoundError:
                        pass
    if _older(more + ".cdb", more):  # changed now, or by a command killed before its cdb
        build_morercpthosts_cdb(settings.qmail_home)
    _remove_lines(control + "/virtualdomains", [f"{name}:{name}" for name in names])


def _update_assign(settings: Settings, add: "list[str]" = (), remove: "Callable[[str], bool] | None" = None
                   ) -> bool:
    """Rewrite users/assign (the caller holds ``users/assign.lock``): lines added at vpopmail's sorted
    place, lines for which ``remove(line)`` is true dropped; then users/cdb as qmail-newu makes it.
    A missing users/assign is made (``.`` alone first, as vpopmail does)."""
    path = _assign_path(settings)
    lines = _read_lines(path)
    live, tail = [], []
    if lines is not None:
        if "." in lines:
            cut = lines.index(".")
            live, tail = lines[:cut], lines[cut + 1:]
        else:
            live = lines
    new = [line for line in live if remove is None or not remove(line)]
    out_of_order = False
    for line in add:
        if line not in new:
            out_of_order = out_of_order or not _in_order(new, ASSIGN)
            new = insert_sorted(new, line, ASSIGN)
    if lines is not None and new == live:
        return False
    if out_of_order:
        _warn(f"NOTICE: Out of order entries found in {path}\n   Sorting...\n")
    _write_lines(path, [*new, ".", *tail])
    assign.write_users_cdb(settings.qmail_home)
    return True


def _older(cdb: str, source: str) -> bool:
    """A cdb missing or older than the file it is made from (which exists)."""
    try:
        made = os.stat(source).st_mtime_ns
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise TemporaryFailure(f"cannot stat {source}: {exc.strerror}") from None
    try:
        return os.stat(cdb).st_mtime_ns < made
    except FileNotFoundError:
        return True


def _stale_users_cdb(settings: Settings) -> bool:
    """users/cdb missing or older than users/assign: a command killed between the two renames, or
    an edit without qmail-newu."""
    users = settings.qmail_home + "/users"
    return _older(users + "/cdb", users + "/assign")


def _heal_users_cdb(settings: Settings) -> None:
    """A stale users/cdb is compiled again first: qmail-lspawn and every lookup read the cdb."""
    if _stale_users_cdb(settings):
        assign.write_users_cdb(settings.qmail_home)


def heal(settings: Settings) -> None:
    """What the commands that change domains do first: a stale users/cdb compiled again (under
    ``users/assign.lock``), so that every check after it reads what users/assign says."""
    if _stale_users_cdb(settings):
        with _AssignLock(settings):
            pass


class _AssignLock:
    """``users/assign.lock`` for a whole command: from its first check to its last write."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.lock = _Locked(_assign_path(settings))

    def __enter__(self) -> "_AssignLock":
        users = self.settings.qmail_home + "/users"
        if not os.path.isdir(users):
            try:
                os.mkdir(users, 0o755)
            except FileExistsError:
                pass
            except OSError as exc:
                raise TemporaryFailure(f"cannot make {users}: {exc.strerror}") from None
        self.lock.__enter__()
        try:
            _heal_users_cdb(self.settings)
        except BaseException:
            self.lock.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.lock.__exit__()


# ------------------------------------------------------------------ telling qmail-send


def tell_qmail_send(settings: Settings) -> None:
    """A SIGHUP for qmail-send, so that it reads virtualdomains again (vpopmail's ``signal_process``).

    ``qmail_send_signal``: ``none``; a pid file (an absolute path); or a name (default
    ``qmail-send``): every process whose ``argv[0]`` is that name or ends in ``/<name>`` (vpopmail
    signalled every line of ``ps`` that contained the text anywhere, supervise and multilog aside).
    A pid file that cannot be used is a warning: the files are written, the command succeeded.
    """
    target = settings.qmail_send_signal
    if target == "none":
        return
    if target.startswith("/"):
        pid = _pid_from_file(target)
        if pid is not None:
            _hup(pid, target)
        return
    for pid in _pids_named(target):
        _hup(pid, target)


def _hup(pid: int, origin: str) -> None:
    import signal

    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        if origin.startswith("/"):
            _warn(f"Warning: qmail-send not told: no process {pid} (from {origin})")
    except OSError as exc:
        _warn(f"Warning: qmail-send not told: process {pid}: {exc.strerror}")


def _pid_from_file(path: str) -> int | None:
    from vpop.files import read_regular
    from vpop.numbers import ascii_number

    try:
        data = read_regular(path, 4096)
    except OSError as exc:
        _warn(f"Warning: qmail-send not told: {path}: {exc}")
        return None
    if data is None:
        _warn(f"Warning: qmail-send not told: {path}: no such file")
        return None
    pid = ascii_number(data.split(b"\n", 1)[0].strip(), 4_194_304)
    if pid is None or pid <= 1:
        _warn(f"Warning: qmail-send not told: {path} holds no process id")
        return None
    return pid


def _pids_named(name: str) -> "list[int]":
    """Processes whose ``argv[0]`` is ``name`` (or a path ending in ``/name``), this one aside."""
    own = os.getpid()
    found = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    wanted = name.encode()
    for entry in entries:
        if not entry.isdigit() or int(entry) == own:
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                argv0 = handle.read(4096).split(b"\0", 1)[0]
        except OSError:
            continue
        if argv0 == wanted or argv0.endswith(b"/" + wanted):
            found.append(int(entry))
    return found


# ------------------------------------------------------------------ the store's part


def _check_store(settings: Settings, what: str) -> None:
    if settings.store not in ("cdb", "mysql"):
        raise AdminError(f"Error: {what} keeps domains in users/assign for store = cdb or mysql; "
                         f"this site has store = {settings.store}")


def _counter(uid: int, gid: int, domains: str) -> Domain:
    """The ``dom_<uid>`` hashing state of a uid's domains, as a pseudo domain for the store's
    ``next_user_subdir`` (CDB: ``<domains>/.dir-control``; MySQL: the ``dom_<uid>`` row)."""
    return Domain(f"dom_{uid}", f"dom_{uid}", uid, gid, domains)


def _next_subdir(settings: Settings, store, uid: int, domains: str) -> str:
    """The hash directory the uid's next domain goes into, read from its ``dom_<uid>`` count."""
    from vpop.dirs import hash_path
    from vpop.numbers import ascii_number

    if settings.store == "mysql":
        count = store.users_count(f"dom_{uid}", primary=True)
    else:
        lines = _read_lines(domains + "/.dir-control")
        count = (ascii_number(lines[0].strip().encode(), 999_999_999) or 0) if lines else 0
    return hash_path(count + 1)


def _forget_domain(store, uid: int, gid: int, domains: str) -> None:
    """One domain less in the ``dom_<uid>`` count (vpopmail's ``dec_dir_control``)."""
    store.forget_subdir(_counter(uid, gid, domains))


def _users_count(settings: Settings, store, entry: Entry) -> int:
    """``cur_users`` of the real domain's hashing state (what vdominfo prints as ``users:``)."""
    if settings.store == "mysql":
        return store.users_count(entry.real)
    from vpop.files import ANY_OWNER, read_file
    from vpop.numbers import ascii_number

    data = read_file(entry.dir + "/.dir-control", 1 << 16, owners=ANY_OWNER, truncate=True)
    if not data:
        return 0
    return ascii_number(data.split(b"\n", 1)[0].strip(), 999_999_999) or 0


# ------------------------------------------------------------------ the domain directory

UNFINISHED = ".vadddomain-unfinished"  # vadddomain's mark until the postmaster is made
# What a vadddomain killed before its commit can have left in a new domain directory.
_SHELL_NAMES = (".qmail-default", "vpasswd", "vpasswd.cdb", ".vpasswd.lock", UNFINISHED)


def is_unfinished(domain: Domain) -> bool:
    """The domain's directory still holds vadddomain's mark: its postmaster was never made (a
    vadddomain killed after its commit); running vadddomain again finishes it."""
    return os.path.lexists(domain.dir + "/" + UNFINISHED)


def _finished(domain: Domain) -> None:
    try:
        os.unlink(domain.dir + "/" + UNFINISHED)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise TemporaryFailure(f"cannot remove {domain.dir}/{UNFINISHED}: {exc.strerror}") from None


def _shell_name(name: str) -> bool:
    if name in _SHELL_NAMES:
        return True
    base, sep, pid = name.rpartition(".tmp.")
    return bool(sep) and base in _SHELL_NAMES and pid.isdigit()


def _subdir(parent_fd: int, name: str, path: str, uid: int, gid: int) -> "tuple[int, bool]":
    """Make (0750, uid/gid) or open the directory ``name`` of ``parent_fd``, never through a link;
    returns its descriptor and whether it was made now."""
    created = True
    try:
        os.mkdir(name, DIR_MODE, dir_fd=parent_fd)
    except FileExistsError:
        created = False
    except OSError as exc:
        raise AdminError(f"Error: Could not make domain dir ({path}: {exc.strerror})", 256 - 14) from None
    try:
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent_fd)
    except OSError as exc:
        raise AdminError(f"Error: Could not make domain dir ({path}: not a directory of its own: "
                         f"{exc.strerror})", 256 - 14) from None
    try:
        info = os.fstat(fd)
        if created:
            if _root():
                os.fchown(fd, uid, gid)
            os.fchmod(fd, DIR_MODE)
        elif info.st_uid not in (0, uid):
            raise AdminError(f"Error: Could not make domain dir ({path} belongs to uid {info.st_uid})",
                             256 - 14)
    except BaseException:
        os.close(fd)
        raise
    return fd, created


def _clear_shell(fd: int, path: str, uid: int, gid: int) -> None:
    """An existing directory where the new domain goes: if it holds no more than a vadddomain killed
    before its commit leaves (no users, an empty vpasswd), it is emptied and used; anything else
    is refused (vpopmail reused it, whatever mail was in it)."""
    names = os.listdir(fd)
    for name in names:
        info = os.stat(name, dir_fd=fd, follow_symlinks=False)
        if not _shell_name(name) or not stat.S_ISREG(info.st_mode) or (name == "vpasswd" and info.st_size):
            raise AdminError(f"Error: Could not make domain dir ({path} exists and holds {name})", 256 - 14)
    for name in names:
        os.unlink(name, dir_fd=fd)
    if _root():
        os.fchown(fd, uid, gid)
    os.fchmod(fd, DIR_MODE)


def _domains_dir(settings: Settings, base: str, uid: int, gid: int) -> str:
    """``<base>/domains``, made (0750, uid/gid) when missing, as vpopmail does; one that root made
    (a fresh install) goes to the domain's owner, as vpopmail's installer leaves it."""
    if not os.path.isdir(base):
        raise AdminError("Error: Unable to chdir to vpopmail/" + settings.domains_dir + "/domain directory",
                         256 - 6)
    domains = base.rstrip("/") + "/" + settings.domains_dir
    try:
        os.mkdir(domains, DIR_MODE)
        made = True
    except FileExistsError:
        made = False
    except OSError as exc:
        raise AdminError(f"Error: Can not make {settings.domains_dir} directory ({exc.strerror})",
                         256 - 16) from None
    if _root():
        info = os.lstat(domains)
        if made or (stat.S_ISDIR(info.st_mode) and info.st_uid == 0 and uid != 0):
            os.chown(domains, uid, gid, follow_symlinks=False)
        if made:
            os.chmod(domains, DIR_MODE)
    return domains


def _make_domain_dir(settings: Settings, store, name: str, uid: int, gid: int, base: str,
                     qmail_default: "Callable[[str], str]", undo: _Undo, mark: bool) -> str:
    """The directory, ``.qmail-default`` and (CDB) the empty ``vpasswd``/``vpasswd.cdb``; with
    ``mark``, vadddomain's :data:`UNFINISHED` mark first."""
    from vpop.files import ANY_OWNER, UserDir, fill_cdb

    domains = _domains_dir(settings, base, uid, gid)
    owner = uid if _root() else None
    subdir = _next_subdir(settings, store, uid, domains)
    relative = f"{subdir}/{name}" if subdir else name
    if len(base) + len(settings.domains_dir) + len(relative) > MAX_PW_DIR:
        raise AdminError(f"Error: dir too long (max={MAX_PW_DIR})", 256 - 30)
    path = f"{domains}/{relative}"
    fds = []
    try:
        with UserDir(domains, ANY_OWNER) as top:
            parent, where = top.fd, domains
            for part in subdir.split("/") if subdir else ():
                where += "/" + part
                fd, _ = _subdir(parent, part, where, uid, gid)
                fds.append(fd)
                parent = fd
            fd, created = _subdir(parent, name, path, uid, gid)
            fds.append(fd)
            if not created:
                _clear_shell(fd, path, uid, gid)
            undo.add(lambda: _remove_dir(path))
            # counted only now: a refused directory leaves the count alone (under users/assign.lock no
            # other domain is added meanwhile; another host on the same database may take the same
            # hash directory, which only puts two domains side by side)
            store.next_user_subdir(_counter(uid, gid, domains), owner, gid)
            undo.add(lambda: _forget_domain(store, uid, gid, domains))
            made = os.fstat(fd)
            with UserDir(path, (uid,)) as directory:
                seen = os.fstat(directory.fd)
                if (seen.st_dev, seen.st_ino) != (made.st_dev, made.st_ino):
                    raise TemporaryFailure(f"{path}: replaced while it was being made")
                if mark:
                    directory.replace(UNFINISHED, lambda handle: None, owner, gid, FILE_MODE)
                line = qmail_default(path).encode("utf-8", "surrogateescape")
                directory.replace(".qmail-default", lambda handle: handle.write(line), owner, gid, FILE_MODE)
                if settings.store == "cdb":
                    directory.replace("vpasswd", lambda handle: None, owner, gid, FILE_MODE)
                    directory.replace("vpasswd.cdb", lambda handle: fill_cdb(handle, []), owner, gid,
                                      FILE_MODE)
    except OSError as exc:
        raise TemporaryFailure(f"cannot make {path}: {exc.strerror}") from None
    finally:
        for fd in fds:
            os.close(fd)
    return path


def _remove_dir(path: str) -> None:
    """``vdelfiles``: the tree, never following a link in it (a link in its place: the link only)."""
    from vpop.files import remove_tree

    if not remove_tree(path):
        _warn(f"Warning: Could not access ({path})")


def _removable_dir(entry: Entry) -> bool:
    """A directory vdeldomain may remove: absolute, no ``..``, named after the domain (vpopmail
    removed whatever users/assign said, ``/`` included)."""
    path = entry.dir.rstrip("/")
    return (path.startswith("/") and ".." not in path.split("/") and path.rsplit("/", 1)[-1] == entry.real)


def _domains_of(entry: Entry, settings: Settings) -> str | None:
    """The ``domains`` directory above ``<domains>/[hash/]<domain>`` (whose ``.dir-control`` counts it)."""
    parts = entry.dir.rstrip("/").split("/")[:-1]
    for _ in range(4):
        if parts and parts[-1] == settings.domains_dir:
            return "/".join(parts)
        if not parts or len(parts[-1]) != 1:
            return None
        parts.pop()
    return None


# ------------------------------------------------------------------ the operations


def delivery_line(settings: Settings, target: str | None = None, program: str = "") -> "Callable[[str], str]":
    """``.qmail-default`` for a domain directory: bounce-no-mailbox (5.4's line), or with ``-e``: an
    address (forward), ``delete``, ``bounce-no-mailbox``, a path, or a user name (``<domdir>/<name>``,
    its Maildir).  ``-e`` text that a shell would read as more than one word is refused (vpopmail
    wrote it unquoted into a line ``sh -c`` runs)."""
    program = program or settings.vpopmail_home + "/bin/vdelivermail"
    if target is not None:
        allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._+=-@/")
        if (not target or not allowed.issuperset(target) or target.count("@") > 1 or target.startswith("-")
                or ".." in target.split("/") or ("/" in target and not target.startswith("/"))
                or ("@" in target and "/" in target)):
            raise AdminError(f"Error: -e needs an email address, a user name, a path, delete or "
                             f"bounce-no-mailbox, not {target!r}")

    def line(domain_dir: str) -> str:
        if target is None:
            instruction = "bounce-no-mailbox"
        elif target in SPECIAL_DELIVERIES or "@" in target or target.startswith("/"):
            instruction = target
        else:
            instruction = f"{domain_dir}/{target}"
        return f"| {program} '' {instruction}\n"

    return line


def create_domain(settings: Settings, store, name: str, uid: int, gid: int, *, base_dir: str = "",
                  qmail_default: "Callable[[str], str] | None" = None, optimize: bool = False,
                  mark: bool = False, keep_rows: bool = False) -> Domain:
    """vpopmail's ``vadddomain`` (no postmaster): ``name`` must have passed :func:`domain_name`.

    ``Error: Domain already exists`` (243) when users/assign has it; with nothing changed too when
    virtualdomains routes the name elsewhere or (MySQL) users of the name are still in the store.
    ``optimize`` (-O) leaves morercpthosts.cdb and qmail-send for the last of a bulk run.  ``mark``
    (vadddomain): the new domain carries the :data:`UNFINISHED` mark, and a domain that still
    carries it is returned as it is (the postmaster is what is left to do).  ``keep_rows``: users
    the store already holds for the name are taken over instead of refused (the library's
    :func:`add_domain`, for trees that share one database).
    """
    _check_store(settings, "vadddomain")
    if uid == 0 or gid == 0:
        raise AdminError("Error: a domain may not belong to root (uid 0 or gid 0): qmail delivers to "
                         "no mailbox as root")
    qmail_default = qmail_default or delivery_line(settings)
    base = (base_dir or settings.vpopmail_home).rstrip("/") or "/"
    sql = store if settings.store == "mysql" else None  # the MySQL store's own domain rows
    if sql is not None:
        store.connect_for_updates()
    sql_check = None if keep_rows else sql
    found = _refusals(settings, sql_check, name, mark)  # before the lock (whose file a first run makes) ...
    with _AssignLock(settings):
        found = _refusals(settings, sql_check, name, mark)  # ... and under it
        if found is None:
            found = _new_domain(settings, store, sql, name, uid, gid, base, qmail_default, optimize, mark)
    if not optimize:
        tell_qmail_send(settings)
    return found


def _refusals(settings: Settings, sql: "MysqlStore | None", name: str, mark: bool) -> Domain | None:
    """Why ``name`` cannot be added; None when it can, the domain when it is one to finish."""
    found = known(settings, name)
    if found is not None:
        if mark and found.real == name and is_unfinished(found):
            return found
        raise AdminError(DOMAIN_EXISTS, EXIT_EXISTS)
    conflict = _virtualdomains_conflict(settings, name)
    if conflict is not None:
        raise AdminError(f"Error: control/virtualdomains routes {name} elsewhere ({conflict}): "
                         "remove that line first")
    if sql is not None and sql.holds_users(name):
        raise AdminError(f"Error: table {sql.domain_table(name)} already holds users of {name} "
                         "(left by an earlier domain, or another domain's table name)")
    return None


def _new_domain(settings: Settings, store, sql: "MysqlStore | None", name: str, uid: int, gid: int, base: str,
                qmail_default: "Callable[[str], str]", optimize: bool, mark: bool) -> Domain:
    """:func:`create_domain`'s work under the lock: directory, store, control files and (the
    commit) users/assign; a failure undoes what was done."""
    undo = _Undo()
    try:
        path = _make_domain_dir(settings, store, name, uid, gid, base, qmail_default, undo, mark)
        if sql is not None and sql.create_domain_table(name) and not settings.many_domains:
            undo.add(lambda: sql.drop_domain_table(name))
        _add_control(settings, name, optimize, undo)
        line = assign_line(name, name, uid, gid, path)
        undo.add(lambda: _update_assign(settings, remove=lambda text: text == line))
        _update_assign(settings, add=[line])
    except BaseException:
        undo.run()
        raise
    return Domain(name, name, uid, gid, path)


def alias_and_real(settings: Settings, first: str, second: str) -> tuple[str, Domain]:
    """vaddaliasdomain's decision between two names (lower-cased), in either order: the one that
    exists is the real domain, the other the alias (a checked name, :func:`domain_name`)."""
    found_first, found_second = known(settings, first), known(settings, second)
    if found_first is not None and found_second is not None:
        raise AdminError("Error: Both domains already exist, unable to create alias.")
    if found_first is None and found_second is None:
        raise AdminError(f"Error: Neither '{first}' or '{second}'  exist, unable to create alias.")
    alias, real = (second, found_first) if found_first is not None else (first, found_second)
    return domain_name(alias), real


def add_alias_domain(settings: Settings, alias: str, real: Domain) -> None:
    """vpopmail's ``vaddaliasdomain``: ``alias`` (checked by :func:`domain_name`) points at the real
    domain of ``real``: its control lines, then its users/assign line (the commit), then a HUP."""
    _check_store(settings, "vaddaliasdomain")
    with _AssignLock(settings):
        if known(settings, alias) is not None:
            raise AdminError(DOMAIN_EXISTS, EXIT_EXISTS)
        current = known(settings, real.real)
        if current is None:
            raise AdminError(DOMAIN_MISSING, EXIT_MISSING)
        conflict = _virtualdomains_conflict(settings, alias)
        if conflict is not None:
            raise AdminError(f"Error: control/virtualdomains routes {alias} elsewhere ({conflict}): "
                             "remove that line first")
        undo = _Undo()
        try:
            _add_control(settings, alias, False, undo)
            _update_assign(settings, add=[assign_line(alias, current.real, current.uid, current.gid,
                                                      current.dir)])
        except BaseException:
            undo.run()
            raise
    tell_qmail_send(settings)


def delete_domain(settings: Settings, store, name: str) -> "list[str]":
    """vpopmail's ``vdeldomain``: an alias domain loses its lines; a real domain loses its alias
    domains' and its own lines, its store rows and its directory.  Returns the names removed.

    users/assign goes last, so a vdeldomain killed on the way is finished by running it again.
    """
    _check_store(settings, "vdeldomain")
    sql = store if settings.store == "mysql" else None
    if sql is not None:
        store.connect_for_updates()
    with _AssignLock(settings):
        entries = read_entries(settings)
        if entries is None:
            raise AdminError(f"Error: {NO_ASSIGN}", EXIT_NO_ASSIGN)
        entry = next((e for e in entries if e.domain == name), None)
        if entry is None:
            raise AdminError(DOMAIN_MISSING, EXIT_MISSING)
        if entry.alias:
            names = [name]
        else:
            if not _removable_dir(entry):
                raise AdminError(f"Error: refusing to remove {entry.dir!r}: a domain directory is an "
                                 f"absolute path ending in /{entry.real}; correct users/assign first")
            names = [name, *(e.domain for e in entries if e.real == name and e.alias)]
        _remove_control(settings, names)
        if not entry.alias:
            if sql is not None:
                others = [e.domain for e in entries if not e.alias and e.domain != name]
                sharing = sql.delete_domain_rows(name, others)
                if sharing:
                    _warn(f"Warning: table {sql.domain_table(name)} also holds the users of "
                          f"{', '.join(sharing)}: not dropped")
            _remove_dir(entry.dir)
        gone = set(names)

        def doomed(line: str) -> bool:
            if not line.startswith("+"):
                return False
            fields = line[1:].split(":")
            return len(fields) > 1 and fields[0][:-1] in gone and fields[0].endswith("-") and (
                fields[1] == entry.real)

        _update_assign(settings, remove=doomed)
        if not entry.alias:
            domains = _domains_of(entry, settings)
            if domains is not None or sql is not None:
                try:
                    _forget_domain(store, entry.uid, entry.gid, domains or "")
                except TemporaryFailure as exc:
                    _warn(f"Warning: Failed to count {name} out of dom_{entry.uid}: {exc.message}")
    from vpop.admin.notify import domain_changed

    domain_changed(settings, name)
    tell_qmail_send(settings)
    return names


def info_blocks(settings: Settings, store, name: str, fields: str) -> "list[str]":
    """vdominfo's lines: every domain of users/assign (a block each, then an empty line), or one
    domain's block and its ``alias:`` lines.  ``fields``: ``a`` or letters of ``n u g d t r``."""
    if name:
        own, aliases = domain_group(settings, name, prefix="")
        if own is None and not aliases:
            raise AdminError("Invalid domain name", EXIT_MISSING)
        lines = _block(settings, store, own, fields) if own is not None else []
        return lines + [f"alias: {entry.domain}" for entry in aliases]
    entries = read_entries(settings)
    if entries is None:
        raise AdminError(NO_ASSIGN)
    lines: list[str] = []
    for entry in entries:
        lines += _block(settings, store, entry, fields) + [""]
    return lines


def _block(settings: Settings, store, entry: Entry, fields: str) -> "list[str]":
    shown = f"{entry.domain} (alias of {entry.real})" if entry.alias else entry.domain
    if fields == "a":
        return [f"domain: {shown}", f"uid:    {entry.uid}", f"gid:    {entry.gid}", f"dir:    {entry.dir}",
                f"users:  {_users_count(settings, store, _real_entry(settings, entry))}"]
    values = {"n": lambda: shown, "u": lambda: str(entry.uid), "g": lambda: str(entry.gid),
              "d": lambda: entry.dir,
              "t": lambda: str(_users_count(settings, store, _real_entry(settings, entry))),
              "r": lambda: entry.real}
    return [values[letter]() for letter in "nugdtr" if letter in fields]


def _real_entry(settings: Settings, entry: Entry) -> Entry:
    """The real domain's line for an alias's ``users:`` (its directory holds the count)."""
    if not entry.alias:
        return entry
    for other in read_entries(settings) or []:
        if other.domain == entry.real and not other.alias:
            return other
    return entry


# ------------------------------------------------------------------ vadddomain as a whole


def hash_method(settings: Settings) -> str:
    """The postmaster's hash: ``password_scheme``, as far as :func:`vpop.passwords.make_hash` makes it."""
    method = _HASH_METHODS.get(settings.password_scheme)
    if method is None:
        raise TemporaryFailure(f"password_scheme {settings.password_scheme} cannot make new hashes yet")
    return method


def postmaster_quota(text: str | None) -> str:
    """``-q``: vadduser's quota (:func:`vpop.admin.users.format_quota`), NOQUOTA without one."""
    from vpop.admin.users import format_quota

    return "NOQUOTA" if text is None else format_quota(text)


def vadddomain(settings: Settings, name: str, password: str, *, uid: int, gid: int, base_dir: str = "",
               quota: str = "NOQUOTA", qmail_default: "Callable[[str], str] | None" = None,
               optimize: bool = False) -> "tuple[Domain, bool]":
    """The domain, then its postmaster (gecos ``Postmaster``) through
    :func:`vpop.admin.users.create_user` (as vadduser makes a user: its ``maildirsize`` with a
    quota, its ``lastauth`` of ``0.0.0.0``), then the :data:`UNFINISHED` mark goes.  Returns the
    domain and whether a postmaster was made (a run that finishes a killed one finds it made already).

    A postmaster that cannot be made takes the domain away again (``Error: (vadduser) ...``).
    """
    from vpop.admin import users
    from vpop.stores import open_store

    if len(password) > MAX_PW_CLEAR_PASSWD:
        raise AdminError(f"Error: (vadduser) password too long (max={MAX_PW_CLEAR_PASSWD})", 256 - 27)
    method = hash_method(settings)
    store = open_store(settings, primary=True)
    try:
        found = create_domain(settings, store, name, uid, gid, base_dir=base_dir, qmail_default=qmail_default,
                              optimize=optimize, mark=True)
        made = False
        try:
            if store.get_user("postmaster", found) is None:
                _restart(settings, store, found)
                users.create_user(settings, store, found, "postmaster", password, gecos="Postmaster",
                                  quota=quota, hash_method=method)
                made = True
        except BaseException as exc:
            try:
                delete_domain(settings, store, found.real)
            except Exception as undo:
                _warn(f"Warning: could not take {found.real} away again: {getattr(undo, 'message', undo)}")
            if isinstance(exc, AdminError):
                text = exc.message.removeprefix("Error: ")
                raise AdminError(f"Error: (vadduser) {text}", exc.code) from None
            if isinstance(exc, TemporaryFailure):
                raise TemporaryFailure(f"(vadduser) {exc.message}") from None
            if isinstance(exc, OSError):
                raise TemporaryFailure(f"(vadduser) {exc}") from None
            raise
        _finished(found)
        return found, made
    finally:
        store.close()


def _restart(settings: Settings, store, domain: Domain) -> None:
    """Before the postmaster of a marked domain is made: what a killed vadddomain made of it goes
    (its directory, and with no user in the store, the domain's hashing state)."""
    if not is_unfinished(domain):
        return
    leftover = domain.dir + "/postmaster"
    if os.path.lexists(leftover):
        _remove_dir(leftover)
    if settings.store == "mysql":
        if not store.holds_users(domain.real):
            store.forget_dir_control(domain.real)
        return
    from vpop.stores.cdb import read_lines

    if not read_lines(domain.dir):
        try:
            os.unlink(domain.dir + "/.dir-control")
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise TemporaryFailure(f"cannot remove {domain.dir}/.dir-control: {exc.strerror}") from None


def taken(settings: Settings, name: str) -> bool:
    """``name`` is a domain already, and not one a killed vadddomain left unfinished."""
    found = known(settings, name)
    return found is not None and not (found.real == name and is_unfinished(found))


def add_domain(settings: Settings, domain: str, uid: int, gid: int, vdelivermail: str = "",
               aliases: "tuple[str, ...]" = ()) -> str:
    """A domain (and its alias domains) without a postmaster, for the tests and the benchmarks
    (``vpop.admin.add_domain``); returns the domain directory."""
    from vpop.stores import open_store

    name = domain_name(domain)
    store = open_store(settings, primary=True)
    try:
        found = create_domain(settings, store, name, uid, gid,
                              qmail_default=delivery_line(settings, program=vdelivermail), keep_rows=True)
    finally:
        store.close()
    for alias in aliases:
        add_alias_domain(settings, domain_name(alias), found)
    return found.dir


# ------------------------------------------------------------------ command lines


def number_option(letter: str, value: str, usage: str) -> int:
    """``-i``/``-g``: ASCII digits (vpopmail's atoi made ``-i x`` uid 0)."""
    from vpop.admin.cli import Usage
    from vpop.numbers import UID_MAX, ascii_number

    number = ascii_number(value, UID_MAX)
    if number is None:
        raise Usage(f"vadddomain: -{letter} needs a number, not {value!r}\n{usage}")
    return number


def vpopmail_ids() -> "tuple[int, int, str]":
    """uid, gid and home of the ``vpopmail`` user (gid of group ``vchkpw`` when there is one):
    what vpopmail's ./configure fixed as VPOPMAILUID/VPOPMAILGID."""
    import grp
    import pwd

    try:
        entry = pwd.getpwnam("vpopmail")
    except KeyError:
        raise AdminError("Error: user vpopmail not found in /etc/passwd (give -u, or -i and -g)") from None
    try:
        gid = grp.getgrnam("vchkpw").gr_gid
    except KeyError:
        gid = entry.pw_gid
    return entry.pw_uid, gid, entry.pw_dir
