"""Maildir creation and crash-safe delivery (vdelivermail's Maildir step, made durable).

The delivery follows the maildir protocol: write ``tmp/NAME`` (created with ``O_EXCL``),
``fsync`` it, hard-link it to ``new/NAME`` and ``fsync`` the ``new/`` directory, so a message
is visible in ``new/`` only once its bytes are on disk and its name survives a crash.

Differences from vpopmail 5.4 ``deliver_mail`` (reference vpopmail.md §7.4), all deliberate:

* names use the modern form ``TIME.M<usec>P<pid>Q<n>.HOST,S=<size>`` instead of
  ``TIME.PID.HOST,S=<size>``: two deliveries by one process in one second no longer collide;
* ``tmp/NAME`` is opened with ``O_EXCL`` (vpopmail used neither ``O_EXCL`` nor ``O_TRUNC``,
  so a leftover file of the same name could be partly overwritten); on a name clash a fresh
  name is tried;
* ``fsync`` of the file and of ``new/`` is always done (vpopmail: only with
  ``--enable-file-sync``, and never of the directory);
* a read error on the message is a temporary failure (vpopmail stopped reading and
  delivered the truncated message);
* the ``,S=`` size is the number of bytes actually written, as in vpopmail 5.6.

The module uses ``posix``, not ``os``: vdelivermail's quick path (:mod:`vdelivermail.main`) delivers
with it and stays near the interpreter's own start (``os`` alone costs more than a millisecond).

Nothing here prints or exits; failures raise :mod:`vpop.errors` exceptions whose text is the
C program's (two lines joined by ``\\n`` where vdelivermail printed two).
"""

import errno
import posix

from vpop import clock
from vpop.errors import PermanentFailure, TemporaryFailure
from vpop.fdio import write_all

__all__ = [
    "deliver",
    "escape_hostname",
    "join_path",
    "lexists",
    "make_maildir",
    "maildir_to_email",
    "safe_hostname",
    "size_from_name",
    "unique_name",
]

OVER_QUOTA = "user is over quota"
SYSTEM_ERROR = "system error"

# link(2) errors after which rename(2) is tried instead (file systems without hard links).
_LINK_UNSUPPORTED = frozenset(
    e
    for e in (
        errno.EPERM,
        errno.EXDEV,
        errno.EMLINK,
        errno.ENOSYS,
        errno.EOPNOTSUPP,
        errno.ENOTSUP,
    )
)
# fsync(2) of a directory is refused by some file systems; that is not a failure.
_DIRSYNC_UNSUPPORTED = frozenset((errno.EINVAL, errno.EBADF, errno.EROFS, errno.ENOTSUP))
_NAME_ATTEMPTS = 5

_hostname: str | None = None
_deliveries = 0  # the Q<n> counter: deliveries (names handed out) by this process


def escape_hostname(name: str) -> str:
    """``/`` as ``\\057`` and ``:`` as ``\\072``: a host name that is safe in a maildir file name."""
    return name.replace("/", "\\057").replace(":", "\\072")


def safe_hostname() -> str:
    """This host's name for maildir file names (:func:`escape_hostname` applied).

    ``uname().nodename`` is what ``gethostname(2)`` returns on Linux; it avoids importing
    :mod:`socket` (several milliseconds of start-up) for one string.
    """
    global _hostname
    if _hostname is None:
        _hostname = escape_hostname(posix.uname().nodename or "localhost")
    return _hostname


def unique_name(size: int | None = None) -> str:
    """A new maildir base name ``TIME.M<usec>P<pid>Q<n>.HOST`` plus ``,S=<size>`` if given.

    ``Q<n>`` counts the names this process has handed out, so names stay unique within
    one process even when the clock does not move.
    """
    global _deliveries
    _deliveries += 1
    sec, usec = divmod(clock.now_ns() // 1000, 1_000_000)
    name = f"{sec}.M{usec}P{posix.getpid()}Q{_deliveries}.{safe_hostname()}"
    if size is not None:
        name += f",S={size}"
    return name


def size_from_name(name: str) -> int | None:
    """The ``,S=<n>`` size in a maildir file name (before any ``:2,`` info), else None.

    Same rule as vpopmail/Courier ``maildir_parsequota``: the last ``,S=`` before the first
    ``:``; the digits that follow (none gives 0).
    """
    head = name[name.rfind("/") + 1 :].split(":", 1)[0]
    k = head.rfind(",S=")
    if k < 0:
        return None
    k += 3
    end = k
    while end < len(head) and "0" <= head[end] <= "9":
        end += 1
    return int(head[k:end]) if end > k else 0


def make_maildir(path: str, uid: int | None = None, gid: int | None = None, mode: int = 0o750) -> None:
    """Create ``path`` (and missing parents) plus ``cur``, ``new`` and ``tmp``.

    Directories this call creates get exactly ``mode`` (the umask is overridden by a chmod)
    and, when ``uid`` is given, are chowned to ``uid``/``gid``; existing ones are left alone.
    """
    import os  # not on a delivery's way: directories are made by the admin tools and repairs

    missing: list[str] = []
    p = os.path.abspath(path)
    while not os.path.isdir(p):
        missing.append(p)
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    created = [*reversed(missing), *(os.path.join(path, sub) for sub in ("cur", "new", "tmp"))]
    for d in created:
        try:
            os.mkdir(d, mode)
        except FileExistsError:
            if not os.path.isdir(d):
                raise
            continue
        os.chmod(d, mode)
        if uid is not None:
            os.chown(d, uid, -1 if gid is None else gid)


def maildir_to_email(maildir: str) -> str:
    """``user@domain`` derived from a Maildir path, or ``""`` (vpopmail ``maildir_to_email``).

    ``…/example.com/[hash/]bob/Maildir/[.Folder/]`` gives ``bob@example.com``: the user is the
    component before the last ``/Maildir/`` (or a trailing ``/Maildir``), the domain the first
    ancestor component containing a dot.  Used for the ``Delivered-To:`` header (§7.4 step 3).
    """
    path = maildir
    if len(path) > 1 and path.startswith("./"):
        path = posix.getcwd() + path[1:]
    end = path.rfind("/Maildir/")
    if end <= 0:
        if len(path) <= 8 or not path.endswith("/Maildir"):
            return ""
        end = len(path) - 8
    i = path.rfind("/", 0, end)
    if i <= 0:
        return ""
    user = path[i + 1 : end]
    while True:
        stop = i
        i = path.rfind("/", 0, stop)
        if i <= 0:
            return ""
        if "." in path[i + 1 : stop]:
            return f"{user}@{path[i + 1 : stop]}"


def join_path(directory: str, *names: str) -> str:
    """``os.path.join`` for names that are single components (``posix`` has no path functions)."""
    for name in names:
        directory = directory + name if not directory or directory.endswith("/") else f"{directory}/{name}"
    return directory


def _open_error(exc: OSError, path: str) -> Exception:
    if exc.errno == errno.EDQUOT:
        return PermanentFailure(OVER_QUOTA)
    return TemporaryFailure(f"can not open new email file errno={exc.errno} file={path}\n{SYSTEM_ERROR}")


def _write_error(exc: OSError) -> Exception:
    if exc.errno == errno.EDQUOT:
        return PermanentFailure(OVER_QUOTA)
    return TemporaryFailure(f"write failed errno = {exc.errno}\n{SYSTEM_ERROR}")


def _copy_message(out_fd: int, in_fd: int, offset: int, chunk: int) -> int:
    """Copy ``in_fd`` from ``offset`` to its end into ``out_fd``; returns the byte count.

    Reads with ``pread`` in ``chunk``-sized pieces so memory stays flat whatever the size;
    a non-seekable input (pipe) is read sequentially instead.  Read errors are raised as
    ``TemporaryFailure`` directly, write errors as ``OSError`` (the caller maps them).
    """
    from vpop.fdio import read_chunks

    total = 0
    chunks = read_chunks(in_fd, offset, chunk)
    while True:
        try:
            data = next(chunks, b"")
        except OSError as exc:
            raise TemporaryFailure(f"read failed errno = {exc.errno}\n{SYSTEM_ERROR}") from exc
        if not data:
            return total
        write_all(out_fd, data)
        total += len(data)


def _expected_size(fd: int, offset: int) -> int | None:
    try:
        st = posix.fstat(fd)
    except OSError:
        return None
    if (st.st_mode & 0o170000) != 0o100000:  # not a regular file: size unknown in advance
        return None
    return max(st.st_size - offset, 0)


def _unlink_quietly(path: str) -> None:
    try:
        posix.unlink(path)
    except OSError:
        pass


def lexists(path: str) -> bool:
    """``os.path.lexists``: is there anything (a dangling link too) at ``path``?"""
    try:
        posix.lstat(path)
    except OSError:
        return False
    return True


def _fsync_dir(path: str) -> None:
    fd = posix.open(path, posix.O_RDONLY | posix.O_DIRECTORY | posix.O_CLOEXEC)
    try:
        posix.fsync(fd)
    except OSError as exc:
        if exc.errno not in _DIRSYNC_UNSUPPORTED:
            raise
    finally:
        posix.close(fd)


def _publish(tmp_path: str, new_dir: str, base: str, size: int) -> str:
    """Move the synced ``tmp_path`` into ``new/`` as ``base,S=size``; returns the new path.

    ``link`` never replaces an existing name; a clash (practically impossible with unique
    names) gets a fresh name.  ``rename`` is the fallback for file systems without hard
    links, and is used only when the target name is free.
    """
    for _attempt in range(_NAME_ATTEMPTS):
        new_path = join_path(new_dir, f"{base},S={size}")
        try:
            posix.link(tmp_path, new_path)
        except OSError as exc:
            if exc.errno == errno.EEXIST:
                base = unique_name()
                continue
            if exc.errno not in _LINK_UNSUPPORTED or lexists(new_path):
                raise _rename_error(exc, tmp_path, new_path) from exc
            try:
                posix.rename(tmp_path, new_path)
            except OSError as exc2:
                raise _rename_error(exc2, tmp_path, new_path) from exc2
            return new_path
        _unlink_quietly(tmp_path)  # vpopmail: "unlink failed ..." is printed but not fatal
        return new_path
    raise TemporaryFailure(f"rename failed {tmp_path} {new_path} errno = {errno.EEXIST}\n{SYSTEM_ERROR}")


def _rename_error(exc: OSError, tmp_path: str, new_path: str) -> Exception:
    if exc.errno == errno.EDQUOT:
        return PermanentFailure(OVER_QUOTA)
    return TemporaryFailure(f"rename failed {tmp_path} {new_path} errno = {exc.errno}\n{SYSTEM_ERROR}")


def deliver(
    maildir: str,
    headers: bytes,
    message_fd: int,
    *,
    message_offset: int = 0,
    chunk: int = 65536,
    name: str | None = None,
) -> str:
    """Deliver ``headers`` + the message on ``message_fd`` into ``maildir``; return the path in ``new/``.

    The message is read from ``message_offset`` (default: the start, whatever the file
    position) to end of file, in ``chunk``-byte pieces.  ``name`` is a base name to try
    first (tests; a taken name is never overwritten, a fresh one is used instead).  An empty
    message is delivered too (headers only).

    Raises ``PermanentFailure("user is over quota")`` when the file system reports EDQUOT,
    ``TemporaryFailure`` (vdelivermail's texts) for every other error.  On any failure after
    the temporary file was created it is removed, and nothing appears in ``new/``.
    """
    tmp_dir = join_path(maildir, "tmp")
    new_dir = join_path(maildir, "new")
    expected = _expected_size(message_fd, message_offset)
    expected = None if expected is None else expected + len(headers)

    tmp_path = ""
    base = name or unique_name()
    for _attempt in range(_NAME_ATTEMPTS):
        tmp_path = join_path(tmp_dir, base if expected is None else f"{base},S={expected}")
        try:
            fd = posix.open(tmp_path, posix.O_WRONLY | posix.O_CREAT | posix.O_EXCL | posix.O_CLOEXEC, 0o600)
            break
        except FileExistsError:
            base = unique_name()
        except OSError as exc:
            raise _open_error(exc, tmp_path) from exc
    else:
        raise _open_error(OSError(errno.EEXIST, "File exists"), tmp_path)

    try:
        try:
            if headers:
                write_all(fd, headers)
            size = len(headers) + _copy_message(fd, message_fd, message_offset, chunk)
            posix.fsync(fd)
        except OSError as exc:
            raise _write_error(exc) from exc
        finally:
            try:
                posix.close(fd)
            except OSError as exc:  # NFS reports delayed write errors on close
                raise _write_error(exc) from exc
        new_path = _publish(tmp_path, new_dir, base, size)
    except BaseException:
        _unlink_quietly(tmp_path)
        raise

    try:
        _fsync_dir(new_dir)
    except OSError as exc:
        # The name may not survive a crash: take the message back and let qmail retry.
        _unlink_quietly(new_path)
        raise _write_error(exc) from exc
    return new_path
