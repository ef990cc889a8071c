"""Files written atomically: a temporary file, fsync, rename, fsync of the directory.

Every cdb the programs write (``users/cdb``, ``vpasswd.cdb``, ``tcp.smtp.cdb``,
``morercpthosts.cdb``) goes through :func:`write_cdb`, laid out exactly as djb's
``cdb_make`` lays it out.
"""

import os

from vpop.errors import TemporaryFailure

TYPE_CHECKING = False  # typing costs import time; the names below are only for annotations
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import BinaryIO


def fill_cdb(fileobj: "BinaryIO", pairs: "Iterable[tuple[bytes, bytes]]") -> None:
    """Write a cdb laid out exactly as djb's ``cdb_make`` does.

    Records go through ``cdblib.Writer.put``, but the hash tables are written here: pure-cdb's
    ``Writer.finalize`` takes a slot holding a key whose hash is 0 for empty and overwrites it
    (``=ctejawes`` is such a key), where ``cdb_make`` tests the record position, which is never 0.
    """
    import struct

    import cdblib

    pair = struct.Struct("<LL")
    writer = cdblib.Writer(fileobj)  # writes the 2048-byte header placeholder
    tables: list[list[tuple[int, int]]] = [[] for _ in range(256)]
    for key, data in pairs:
        position = fileobj.tell()
        writer.put(key, data)
        digest = cdblib.djb_hash(key) & 0xFFFFFFFF
        tables[digest & 0xFF].append((digest, position))
    index = []
    for table in tables:
        size = 2 * len(table)
        slots: list[tuple[int, int] | None] = [None] * size
        for entry in table:
            where = (entry[0] >> 8) % size
            while slots[where] is not None:
                where = (where + 1) % size
            slots[where] = entry
        index.append(pair.pack(fileobj.tell(), size))
        fileobj.write(b"".join(pair.pack(*(slot or (0, 0))) for slot in slots))
    fileobj.seek(0)
    fileobj.write(b"".join(index))


def replace_file(
    path: str, fill: "Callable[[BinaryIO], object]", uid: int | None = None, gid: int | None = None,
    mode: int = 0o644,
) -> None:
    """Atomically replace ``path`` with what ``fill(fileobj)`` writes.

    Written to ``<path>.tmp.<pid>``, set to ``mode`` whatever the umask, chowned to
    ``uid``/``gid`` when ``uid`` is given, fsynced, renamed over ``path``; then the directory is
    fsynced.  The tmp file is created with ``O_EXCL``: root writes into directories that mail
    users own, where a link, FIFO or file planted under the tmp name must never be opened --
    such a name is unlinked (which follows nothing) and the create tried again.  The tmp file
    is removed on any failure; an ``OSError`` becomes :class:`TemporaryFailure`.
    """
    tmp = f"{path}.tmp.{os.getpid()}"
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for attempt in range(3):
        try:
            fd = os.open(tmp, flags, mode)
            break
        except FileExistsError:
            if attempt == 2:
                raise TemporaryFailure(f"cannot create {tmp}: it keeps coming back") from None
            try:
                os.unlink(tmp)
            except OSError as exc:
                raise TemporaryFailure(f"cannot remove stale {tmp}: {exc}") from exc
        except OSError as exc:
            raise TemporaryFailure(f"cannot create {tmp}: {exc}") from exc
    try:
        with os.fdopen(fd, "w+b") as fileobj:
            fill(fileobj)
            fileobj.flush()
            os.fchmod(fileobj.fileno(), mode)
            if uid is not None:
                os.fchown(fileobj.fileno(), uid, -1 if gid is None else gid)
            os.fsync(fileobj.fileno())
        os.rename(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise TemporaryFailure(f"cannot write {path}: {exc}") from exc
        raise
    _fsync_dir(os.path.dirname(path) or ".")


def lock_file(path: str, uid: int | None = None, gid: int | None = None) -> int:
    """Open and ``lockf`` the lock file ``path``; returns the descriptor (close it to unlock).

    Never follows a symlink and accepts only a regular file: root takes these locks in
    directories the mail user owns.  A lock file created here is given to ``uid``/``gid``
    (so the domain's uid can take it later); an existing one is never chowned.
    """
    import fcntl
    import stat

    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC
    created = False
    try:
        try:
            fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o600)
            created = True
        except FileExistsError:
            fd = os.open(path, flags)
    except OSError as exc:
        raise TemporaryFailure(f"cannot open {path}: {exc}") from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise TemporaryFailure(f"{path} is not a regular file")
        if created and uid is not None:
            os.fchown(fd, uid, -1 if gid is None else gid)
        fcntl.lockf(fd, fcntl.LOCK_EX)
    except OSError as exc:
        os.close(fd)
        raise TemporaryFailure(f"cannot lock {path}: {exc}") from exc
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_regular(path: str, limit: int = 1 << 24) -> bytes | None:
    """The contents of a regular file, never following a symlink or blocking on a FIFO.

    None when there is no such file; OSError when ``path`` is anything but a regular file.
    """
    import stat

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path} is not a regular file")
        chunks = []
        while True:
            data = os.read(fd, 65536)
            if not data:
                return b"".join(chunks)
            chunks.append(data)
            limit -= len(data)
            if limit < 0:
                raise OSError(f"{path} is too large")
    finally:
        os.close(fd)


def _fsync_dir(directory: str) -> None:
    """Make a rename durable; failing here is not worth failing the update for."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes) -> None:
    """``os.write`` until all of ``data`` is written (a pipe or a signal may cut a write short)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def read_chunks(fd: int, offset: int, chunk: int):
    """Yield the contents of ``fd`` from ``offset`` to its end in pieces of at most ``chunk``.

    ``pread`` keeps the descriptor's position alone (a delivery program shares it); a
    descriptor that cannot seek (a pipe) is read sequentially instead.  Errors are raised as
    ``OSError`` for the caller to word.
    """
    import errno

    seekable = True
    while True:
        if seekable:
            try:
                data = os.pread(fd, chunk, offset)
            except OSError as exc:
                if exc.errno != errno.ESPIPE:
                    raise
                seekable = False
                data = os.read(fd, chunk)
        else:
            data = os.read(fd, chunk)
        if not data:
            return
        offset += len(data)
        yield data


def cdb_get(path: str, key: bytes) -> bytes | None:
    """The first record for ``key`` in the cdb ``path`` (memory-mapped, never read whole).

    FileNotFoundError when there is no such file (the caller decides what that means);
    TemporaryFailure when it cannot be read or is not a cdb.
    """
    from cdblib import Reader

    try:
        reader = Reader(file_path=path)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise TemporaryFailure(f"cannot read {path}: {exc.strerror or exc}") from None
    except Exception:  # ValueError: mmap of an empty file; struct.error: shorter than its table
        raise TemporaryFailure(f"cannot read {path}: damaged cdb (shorter than its table?)") from None
    try:
        return reader.get(key)
    except Exception as exc:  # a truncated or corrupt cdb: defer, do not guess
        raise TemporaryFailure(f"cannot read {path}: corrupt cdb ({exc})") from None
    finally:
        reader.close()


def write_cdb(path: str, pairs: "Iterable[tuple[bytes, bytes]]", uid: int | None = None,
              gid: int | None = None, mode: int = 0o644) -> None:
    """Atomically replace ``path`` with a cdb of the (key, data) ``pairs``, in their order."""
    replace_file(path, lambda fileobj: fill_cdb(fileobj, pairs), uid, gid, mode)
