"""User directories: vpopmail's hashed layout (``.dir-control``) and Maildir re-creation.

vpopmail puts users 1-99 of a domain directly in the domain directory, users 100-199 in
``0/``, 200-299 in ``1/`` ... ``z/`` (62 characters), then ``0/0``, ``0/1`` ... and so on to
three levels.  ``.dir-control`` keeps that state in 8 text lines (``cur_users``,
``level_cur``, ``level_max``, starts, ends, mods, indexes, ``the_dir``); we keep the same
file, written through a temporary file and ``rename``, under a lock.  Freed paths listed
in ``.dir_control_free`` are used first.
"""

import os

from vpop.errors import TemporaryFailure
from vpop.numbers import ascii_number

TYPE_CHECKING = False  # typing and collections cost start-up time: annotations only
if TYPE_CHECKING:
    from collections.abc import Callable

HASH_CHARS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
USERS_PER_LEVEL = 100
MAX_PATH = 160
REMADE_MODE = 0o700  # a user directory or Maildir re-created after it vanished, as vmake_maildir makes it


def hash_path(serial: int) -> str:
    """The hash directory of the ``serial``-th user (1-based) of a domain."""
    block = serial // USERS_PER_LEVEL
    if block == 0:
        return ""
    index = block - 1
    width = len(HASH_CHARS)
    for levels in (1, 2, 3):
        span = width ** levels
        if index < span:
            parts = []
            for _ in range(levels):
                parts.append(HASH_CHARS[index % width])
                index //= width
            return "/".join(reversed(parts))
        index -= span
    raise TemporaryFailure("domain is full: no hash directory left")


def control_state(serial: int) -> tuple[int, list[int], str]:
    """``level_cur``, ``level_index0..2`` and ``the_dir`` after the ``serial``-th user."""
    the_dir = hash_path(serial)
    levels = the_dir.count("/") + 1 if the_dir else 0
    indexes = [HASH_CHARS.index(p) for p in the_dir.split("/")] if the_dir else []
    return levels, indexes + [0] * (3 - len(indexes)), the_dir


def _control_lines(serial: int) -> str:
    levels, indexes, the_dir = control_state(serial)
    return "\n".join([str(serial), str(levels), "3", "0 0 0", "61 61 61", "0 2 4",
                      " ".join(map(str, indexes)), the_dir]) + "\n"


def _read_state(path: str) -> bytes | None:
    """A hashing-state file of the domain directory: never through a link, never blocking on a FIFO."""
    from vpop.files import ANY_OWNER, read_file

    return read_file(path, 1 << 20, owners=ANY_OWNER)


def _free_paths(domain_dir: str) -> tuple[str | None, list[str]]:
    """The first path of ``.dir_control_free`` and the file's other lines."""
    data = _read_state(domain_dir + "/.dir_control_free")
    if data is None:
        return None, []
    chosen = None
    kept = []
    for line in data.decode("utf-8", "replace").split("\n"):
        if chosen is None and line.strip() and not line.startswith("#"):
            chosen = line.strip()
        else:
            kept.append(line)
    return chosen, kept


def _write_free_paths(domain_dir: str, kept: list[str], uid: int | None, gid: int | None) -> None:
    """``.dir_control_free`` with the ``kept`` lines; removed when none is left."""
    path = domain_dir + "/.dir_control_free"
    if any(line.strip() for line in kept):
        _write_atomically(path, "\n".join(kept), uid, gid)
        return
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise TemporaryFailure(f"cannot remove {path}: {exc.strerror}") from None


def _take_free_path(domain_dir: str, uid: int | None, gid: int | None) -> str | None:
    chosen, kept = _free_paths(domain_dir)
    if chosen is not None:
        _write_free_paths(domain_dir, kept, uid, gid)
    return chosen


def _write_atomically(path: str, text: str, uid: int | None = None, gid: int | None = None) -> None:
    from vpop.files import replace_file

    data = text.encode()
    replace_file(path, lambda handle: handle.write(data), uid, gid, 0o600)


def read_count(domain_dir: str) -> int:
    """``cur_users`` of the domain's ``.dir-control`` (0 without one)."""
    data = _read_state(domain_dir + "/.dir-control")
    first = data.split(b"\n", 1)[0].strip() if data else b""
    return ascii_number(first, 999_999_999) or 0


def write_count(domain_dir: str, count: int, uid: int | None = None, gid: int | None = None) -> None:
    """``.dir-control`` as after the ``count``-th user (under its lock)."""
    from vpop.files import lock_file

    lock_fd = lock_file(domain_dir + "/.dir-control.lock", uid, gid)
    try:
        _write_atomically(domain_dir + "/.dir-control", _control_lines(count), uid, gid)
    finally:
        os.close(lock_fd)


def next_user_subdir(domain_dir: str, uid: int | None = None, gid: int | None = None,
                     noted: "Callable[[str, int], None] | None" = None) -> str:
    """Allocate the hash subdirectory for a new user of the domain ("" = the domain dir).

    ``noted(subdir, count)`` is called before anything is written, with the subdirectory and
    the count ``.dir-control`` is about to hold: an admin command notes both first, so that a
    kill at any later point can be undone (:mod:`vpop.admin.unfinished`).
    """
    from vpop.files import lock_file

    lock_fd = lock_file(domain_dir + "/.dir-control.lock", uid, gid)
    try:
        serial = read_count(domain_dir)
        free, kept = _free_paths(domain_dir)
        if free is not None:
            subdir = free
            if serial:
                serial += 1
        else:
            serial += 1
            subdir = hash_path(serial)
        if noted is not None:
            noted(subdir, serial)
        if free is not None:
            _write_free_paths(domain_dir, kept, uid, gid)
        _write_atomically(domain_dir + "/.dir-control", _control_lines(serial), uid, gid)
        return subdir
    finally:
        os.close(lock_fd)


def take_free_path(domain_dir: str, uid: int | None = None, gid: int | None = None) -> str | None:
    """The first path of ``.dir_control_free`` (removed from it), under the ``.dir-control`` lock."""
    from vpop.files import lock_file

    lock_fd = lock_file(domain_dir + "/.dir-control.lock", uid, gid)
    try:
        return _take_free_path(domain_dir, uid, gid)
    finally:
        os.close(lock_fd)


def user_dir_path(domain_dir: str, subdir: str, user: str) -> str:
    """``<domain_dir>[/<subdir>]/<user>``."""
    return domain_dir + ("/" + subdir if subdir else "") + "/" + user


def _make_dirs(base: str, relative: str, uid: int | None, gid: int | None) -> None:
    path = base
    for part in relative.split("/"):
        if not part:
            continue
        path = path + "/" + part
        try:
            os.mkdir(path, 0o750)
        except FileExistsError:
            continue
        if uid is not None:
            os.chown(path, uid, gid)


def make_user_dir(domain_dir: str, user: str, uid: int | None, gid: int | None,
                  allocate: "Callable[[], str] | None" = None) -> str:
    """Create ``<domain_dir>[/hash]/<user>/Maildir/{cur,new,tmp}``; return the user directory.

    ``allocate`` picks the hash subdirectory (the MySQL store keeps that state in its
    ``dir_control`` table); by default ``.dir-control`` in the domain directory does.  Root makes
    the directories as ``uid``/``gid`` (never one of root's for a moment, that a kill would leave
    and the domain's uid could not remove; never through a link that uid planted).
    """
    from vpop.maildir import make_maildir
    from vpop.privileges import ActingAs

    try:
        subdir = allocate() if allocate is not None else next_user_subdir(domain_dir, uid, gid)
        if ".." in subdir.split("/") or subdir.startswith("/"):
            raise TemporaryFailure(f"bad entry {subdir!r} in {domain_dir}/.dir_control_free")
        user_dir = user_dir_path(domain_dir, subdir, user)
        if len(user_dir) > MAX_PATH:
            raise TemporaryFailure(f"user directory path too long: {user_dir}")
        acting = ActingAs(uid, uid if gid is None else gid) if uid is not None and os.geteuid() == 0 else None
        owner = (None, None) if acting else (uid, gid)
        if acting:
            acting.__enter__()
        try:
            _make_dirs(domain_dir, subdir, *owner)
            os.mkdir(user_dir, 0o750)
            if owner[0] is not None:
                os.chown(user_dir, uid, gid)
            make_maildir(user_dir + "/Maildir", *owner)
        finally:
            if acting:
                acting.__exit__()
        return user_dir
    except OSError as exc:
        raise TemporaryFailure(f"dir auto create failed: {exc}") from None


def discard_user_dir(user_dir: str) -> None:
    """Undo :func:`make_user_dir` when its path could not be stored: remove the still-empty dirs.

    Otherwise the next attempt finds the directory already there and fails again, for good.
    """
    for path in (*(user_dir + "/Maildir/" + sub for sub in ("cur", "new", "tmp")), user_dir + "/Maildir",
                 user_dir):
        try:
            os.rmdir(path)
        except OSError:
            return  # not empty any more (or gone): leave it


def check_user_dir(settings, domain_dir: str, user_dir: str) -> None:
    """Refuse (111) a stored user directory outside ``~vpopmail/domains``, the domain's own
    directory and the ``user_dir_roots`` setting: a row that says ``pw_dir = /etc`` must not
    get mail written there (vpopmail wrote it).  ``..`` and relative paths are refused too."""
    if settings.allows_user_dir(domain_dir, user_dir):
        return
    raise TemporaryFailure(f"user directory {user_dir} is outside {settings.domains_path} "
                           f"(user_dir_roots lists other places)")


def remake_user_dir(domain_dir: str, user_dir: str, uid: int | None, gid: int | None) -> None:
    """Recreate a user directory that vanished (``vmake_maildir``, mode 0700), only below the domain dir."""
    from vpop.maildir import make_maildir

    prefix = domain_dir.rstrip("/") + "/"
    if not user_dir.startswith(prefix) or ".." in user_dir.split("/"):
        raise TemporaryFailure(f"user directory {user_dir} is outside {domain_dir}")
    if not os.path.isdir(domain_dir):
        # an unmounted disk or a renamed domain: making it here would hide the mail from the real one
        raise TemporaryFailure(f"autocreate dir: domain directory {domain_dir} is missing")
    try:
        # vmake_maildir's 0700 for everything re-created (a new user directory is 0750)
        make_maildir(user_dir + "/Maildir", uid, gid, mode=REMADE_MODE)
    except OSError as exc:
        raise TemporaryFailure(f"autocreate dir errno {exc.errno} {user_dir}") from None
