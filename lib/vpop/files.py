"""Files written atomically (a temporary file, fsync, rename, fsync of the directory), and
:class:`UserDir`, the one way a root program uses a file in a directory a mail user can write.

Every cdb the programs write (``users/cdb``, ``vpasswd.cdb``, ``tcp.smtp.cdb``,
``morercpthosts.cdb``) goes through :func:`write_cdb`, laid out exactly as djb's
``cdb_make`` lays it out.
"""

import os
import stat  # already imported by os: costs nothing

from vpop.errors import TemporaryFailure
from vpop.fdio import read_chunks, write_all  # noqa: F401 - their old home

TYPE_CHECKING = False  # typing costs import time; the names below are only for annotations
if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Iterable
    from typing import BinaryIO


def fill_cdb(fileobj: "BinaryIO", pairs: "Iterable[tuple[bytes, bytes]]") -> None:
    """Write a cdb laid out exactly as djb's ``cdb_make`` does.

    pure-cdb's C ``djb_hash`` hashes the keys; records and hash tables are laid out here, in
    memory, and written in three writes (a 100,000-user vpasswd.cdb in a fraction of what
    ``cdblib.Writer`` takes).  pure-cdb's ``Writer.finalize`` would also lose a key whose hash
    is 0: it takes such a slot for empty and overwrites it (``=ctejawes`` is such a key), where
    ``cdb_make`` tests the record position, which is never 0.
    """
    import struct
    import sys
    from array import array

    from cdblib import djb_hash

    header = struct.Struct("<LL").pack
    parts: list[bytes] = []
    tables: list[list[tuple[int, int]]] = [[] for _ in range(256)]
    position = 2048
    for key, data in pairs:
        digest = djb_hash(key) & 0xFFFFFFFF
        tables[digest & 0xFF].append((digest, position))
        parts += (header(len(key), len(data)), key, data)
        position += 8 + len(key) + len(data)
    index = array("I")
    slots_out = array("I")
    for table in tables:
        size = 2 * len(table)
        index += array("I", (position + 4 * len(slots_out), size))
        hashes = [0] * size
        places = [0] * size
        for digest, where_record in table:
            where = (digest >> 8) % size
            while places[where]:  # a record's position is never 0: 0 is a free slot
                where = (where + 1) % size
            hashes[where] = digest
            places[where] = where_record
        interleaved = [0] * (2 * size)
        interleaved[0::2] = hashes
        interleaved[1::2] = places
        slots_out += array("I", interleaved)
    if position + 4 * len(slots_out) >= 1 << 32:
        raise ValueError("a cdb cannot be 4 GiB or more")
    if sys.byteorder == "big":
        index.byteswap()
        slots_out.byteswap()
    fileobj.write(index.tobytes())
    fileobj.write(b"".join(parts))
    fileobj.write(slots_out.tobytes())


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

    The directory is opened once and the tmp file, the rename and the fsync all go through that
    descriptor.  Its path is followed as given: in a directory a mail user can write, use
    :meth:`UserDir.replace`, which also refuses a directory swapped for a link.
    """
    directory = os.path.dirname(path) or "."
    try:
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise TemporaryFailure(f"cannot write {path}: {exc}") from exc
    try:
        _replace_at(dir_fd, os.path.basename(path), path, fill, uid, gid, mode)
    finally:
        os.close(dir_fd)


def _replace_at(dir_fd: int, name: str, path: str, fill: "Callable[[BinaryIO], object]",
                uid: int | None, gid: int | None, mode: int) -> None:
    """:func:`replace_file` for the entry ``name`` of the open directory ``dir_fd`` (``path`` names it)."""
    tmp = f"{name}.tmp.{os.getpid()}"
    shown = f"{path}.tmp.{os.getpid()}"
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for attempt in range(3):
        try:
            fd = os.open(tmp, flags, mode, dir_fd=dir_fd)
            break
        except FileExistsError:
            if attempt == 2:
                raise TemporaryFailure(f"cannot create {shown}: it keeps coming back") from None
            try:
                os.unlink(tmp, dir_fd=dir_fd)
            except OSError as exc:
                raise TemporaryFailure(f"cannot remove stale {shown}: {exc.strerror}") from exc
        except OSError as exc:
            raise TemporaryFailure(f"cannot create {shown}: {exc.strerror}") from exc
    try:
        with os.fdopen(fd, "w+b") as fileobj:
            fill(fileobj)
            fileobj.flush()
            os.fchmod(fileobj.fileno(), mode)
            if uid is not None:
                os.fchown(fileobj.fileno(), uid, -1 if gid is None else gid)
            os.fsync(fileobj.fileno())
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException as exc:
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise TemporaryFailure(f"cannot write {path}: {exc.strerror}") from exc
        raise
    try:
        os.fsync(dir_fd)  # make the rename durable; failing here is not worth failing the update for
    except OSError:
        pass


def lock_file(path: str, uid: int | None = None, gid: int | None = None) -> int:
    """Open and ``lockf`` the lock file ``path``; returns the descriptor (close it to unlock).

    Never follows a symlink and accepts only a regular file with one link: root takes these locks in
    directories the mail user owns.  A lock file created here is given to ``uid``/``gid``
    (so the domain's uid can take it later); an existing one is never chowned.
    """
    import fcntl

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
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise TemporaryFailure(f"{path} is not a regular file")
        if info.st_nlink != 1:  # a hard link a mail user made to a file of someone else's
            raise TemporaryFailure(f"{path} has {info.st_nlink} links: not a lock file")
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


def remove_tree(path: str) -> bool:
    """vpopmail's ``vdelfiles``: a directory tree removed without following a link in it (a link
    in its place: the link only).  False when there was nothing; an error is TemporaryFailure."""
    import shutil

    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise TemporaryFailure(f"cannot remove {path}: {exc.strerror}") from None
    try:
        if stat.S_ISDIR(info.st_mode):
            shutil.rmtree(path)  # fd-based: never descends through a link
        else:
            os.unlink(path)
    except OSError as exc:
        raise TemporaryFailure(f"cannot remove {path}: {exc.strerror}") from None
    return True


def read_regular(path: str, limit: int = 1 << 24) -> bytes | None:
    """The contents of a regular file, never following a symlink or blocking on a FIFO.

    None when there is no such file; OSError when ``path`` is anything but a regular file.
    """
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


class FileProblem(TemporaryFailure):
    """A file or directory that root refuses to use (or cannot): the message names the path, never
    the contents.  ``reason`` is the message without the path; ``errno`` is set for a system error."""

    def __init__(self, path: str, reason: str, errno: int | None = None) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
        self.errno = errno


_LINK = "refused: a symbolic link (never followed here)"


def _problem(path: str, doing: str, exc: OSError) -> FileProblem:
    import errno

    if exc.errno == errno.ELOOP:
        return FileProblem(path, _LINK, exc.errno)
    return FileProblem(path, f"cannot {doing}: {exc.strerror}", exc.errno)


def _refusal(path: str, mode: int, wanted: str) -> FileProblem:
    """Why ``path``, of file type ``mode``, is not the ``wanted`` kind (a regular file, a directory)."""
    import errno

    if stat.S_ISLNK(mode):
        return FileProblem(path, _LINK, errno.ELOOP)
    return FileProblem(path, f"refused: {_kind(mode)}, not {wanted}")


_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a character device",
          stat.S_IFBLK: "a block device", stat.S_IFDIR: "a directory", stat.S_IFLNK: "a symbolic link"}


def _kind(mode: int) -> str:
    return _KINDS.get(stat.S_IFMT(mode), "an unknown kind of file")


#: ``UserDir(owners=...)``: the directory may belong to anyone (only its path is checked).
ANY_OWNER = "any"
#: ``UserDir(owners=...)``, the default: root or the owner of the parent directory.
PARENT_OWNER = "parent"


def _may_follow(path: str, follow: bool) -> bool:
    """Whether a directory that is a link may be followed: when the caller only reads (``follow``),
    when this process is not root (it gains nothing), or when only root could have made the link
    (its parent is root's and no one else may write there).  Sites do link domain directories
    and ``~vpopmail/etc`` to other disks."""
    if follow or os.geteuid() != 0:
        return True
    try:
        parent = os.lstat(os.path.dirname(path) or ".")
    except OSError:
        return False
    shared = parent.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    return parent.st_uid == 0 and stat.S_ISDIR(parent.st_mode) and not shared


class UserDir:
    """A directory a mail user can write, opened so that root never follows what that user planted.

    Root programs (vchkpw, clearopensmtp) read and write files in directories owned by the vpopmail
    uid or a domain's uid: ``~vpopmail/etc``, domain and user directories.  The owner of such a
    directory can put a symlink, a hard link, a FIFO or a device under any name in it, and swap
    the directory itself for a link (its parent is theirs too).  So:

    * the directory is opened ``O_DIRECTORY | O_NOFOLLOW``: its last component is not a link
      (the components above are the administrator's, who may well link ``~vpopmail/domains``
      to another disk); its owner must be root or one of ``owners`` (default
      :data:`PARENT_OWNER`: root or the owner of its parent; :data:`ANY_OWNER`: unchecked);
    * each file is then reached through that descriptor (``dir_fd``) by a single name, and is
      first ``lstat``-ed: anything but a regular file (a link, FIFO, device) is refused without
      being opened, so an open never blocks and never follows; the file is opened
      ``O_NOFOLLOW | O_NONBLOCK`` and must be the inode that was seen;
    * the file must belong to the directory's owner, or to root with a single link (a hard
      link to a root file planted by the user has two: with ``fs.protected_hardlinks`` off,
      the owner of the directory can link any file it can see); in a root directory that
      no one else may write, anything goes (only root can have put it there);
    * every error is a :class:`FileProblem` naming the path, never a file's contents.

    Use as a context manager (or call :meth:`close`).
    """

    def __init__(self, path: str, owners: "Collection[int] | str" = PARENT_OWNER,
                 follow: bool = False) -> None:
        self.path = path.rstrip("/") or "/"
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
        try:
            try:
                self.fd = os.open(self.path, flags | os.O_NOFOLLOW)
            except OSError as exc:
                import errno

                if exc.errno not in (errno.ENOTDIR, errno.ELOOP) or not _may_follow(self.path, follow):
                    raise
                self.fd = os.open(self.path, flags)  # a link we may follow: the owner check below still holds
        except OSError as exc:
            import errno

            if exc.errno in (errno.ENOTDIR, errno.ELOOP):  # a link, or no directory: say which
                try:
                    mode = os.lstat(self.path).st_mode
                except OSError:
                    mode = stat.S_IFDIR
                if not stat.S_ISDIR(mode):
                    raise _refusal(self.path, mode, "a directory") from None
            raise _problem(self.path, "open the directory", exc) from None
        try:
            info = os.fstat(self.fd)
            if owners == PARENT_OWNER:
                owners = (os.stat(os.path.dirname(self.path)).st_uid,)
            elif owners == ANY_OWNER:
                owners = (info.st_uid,)
            if info.st_uid != 0 and info.st_uid not in owners:
                expected = " or ".join(str(uid) for uid in sorted({0, *owners}))
                raise FileProblem(self.path, f"refused: a directory owned by uid {info.st_uid}, "
                                             f"expected uid {expected}")
        except OSError as exc:
            os.close(self.fd)
            raise _problem(self.path, "check the directory", exc) from None
        except BaseException:
            os.close(self.fd)
            raise
        #: owner and group of the directory itself
        self.uid = info.st_uid
        self.gid = info.st_gid
        # Only root can have put anything in a root directory that no one else may write.
        self.root_only = info.st_uid == 0 and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)

    def __enter__(self) -> "UserDir":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def name(self, name: str) -> str:
        """The path of an entry, for messages."""
        return self.path + "/" + name if self.path != "/" else "/" + name

    def stat(self, name: str) -> "os.stat_result | None":
        """``lstat`` of an entry (a link is not followed); None when there is none."""
        self._check_name(name)
        try:
            return os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _problem(self.name(name), "stat", exc) from None

    def open(self, name: str, flags: int = os.O_RDONLY, create_mode: int | None = None) -> int:
        """Open the regular file ``name`` (flags such as ``O_RDONLY``, ``O_RDWR``); returns the fd.

        FileNotFoundError when there is none, unless ``create_mode`` is given: then a missing file
        is created (``O_EXCL``, so nothing planted meanwhile is opened) with that mode.  Never
        give ``O_TRUNC`` (it would act before the checks); truncate the returned fd instead.
        """
        import errno

        if flags & (os.O_CREAT | os.O_TRUNC | os.O_EXCL):
            raise ValueError("UserDir.open: pass create_mode, and truncate after the checks")
        path = self.name(name)
        flags |= os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        for _ in range(3):
            seen = self.stat(name)
            if seen is None:
                if create_mode is None:
                    raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
                try:
                    return os.open(name, flags | os.O_CREAT | os.O_EXCL, create_mode, dir_fd=self.fd)
                except FileExistsError:
                    continue  # planted since the lstat: look again
                except OSError as exc:
                    raise _problem(path, "create", exc) from None
            if not stat.S_ISREG(seen.st_mode):
                raise _refusal(path, seen.st_mode, "a regular file")
            try:
                fd = os.open(name, flags, dir_fd=self.fd)
            except FileNotFoundError:
                continue  # removed since the lstat: look again
            except OSError as exc:
                raise _problem(path, "open", exc) from None
            info = os.fstat(fd)
            if (info.st_dev, info.st_ino) != (seen.st_dev, seen.st_ino):
                os.close(fd)
                continue  # renamed over since the lstat (a writer's atomic replace): look again
            try:
                self._check_file(fd, path, seen)
            except BaseException:
                os.close(fd)
                raise
            return fd
        raise FileProblem(path, "refused: it keeps changing under us")

    def _check_file(self, fd: int, path: str, seen: "os.stat_result") -> None:
        info = os.fstat(fd)
        if (info.st_dev, info.st_ino) != (seen.st_dev, seen.st_ino):
            raise FileProblem(path, "refused: replaced while it was being opened")
        if info.st_uid == self.uid or self.root_only:
            return
        if info.st_uid != 0:
            raise FileProblem(path, f"refused: owned by uid {info.st_uid}, neither root nor the "
                                    f"directory's owner (uid {self.uid})")
        if info.st_nlink != 1:
            raise FileProblem(path, f"refused: owned by root with {info.st_nlink} links, in a "
                                    f"directory uid {self.uid} can write")

    def read(self, name: str, limit: int = 1 << 24, truncate: bool = False) -> bytes | None:
        """The contents of the regular file ``name``; None when there is none.

        More than ``limit`` bytes is an error, or (``truncate``) the first ``limit`` bytes.
        """
        try:
            fd = self.open(name)
        except FileNotFoundError:
            return None
        try:
            chunks = []
            left = limit
            while left > 0:
                data = os.read(fd, min(left, 65536))
                if not data:
                    return b"".join(chunks)
                chunks.append(data)
                left -= len(data)
            if truncate or not os.read(fd, 1):
                return b"".join(chunks)
            raise FileProblem(self.name(name), f"refused: larger than {limit} bytes")
        except OSError as exc:
            raise _problem(self.name(name), "read", exc) from None
        finally:
            os.close(fd)

    def rewrite(self, name: str, data: bytes, mode: int = 0o600, uid: int | None = None,
                gid: int | None = None, mtime: int | None = None) -> None:
        """Overwrite (or create) the regular file ``name`` in place with ``data``.

        For small files where an atomic replace is not worth it (``lastauth``): truncated only
        after the checks; ``uid``/``gid`` (when ``uid`` is given) own it; ``mtime`` stamps it.
        """
        fd = self.open(name, os.O_WRONLY, create_mode=mode)
        try:
            os.ftruncate(fd, 0)
            write_all(fd, data)
            if uid is not None:
                os.fchown(fd, uid, -1 if gid is None else gid)
            if mtime is not None:
                os.utime(fd, (mtime, mtime))
        except OSError as exc:
            raise _problem(self.name(name), "write", exc) from None
        finally:
            os.close(fd)

    def replace(self, name: str, fill: "Callable[[BinaryIO], object]", uid: int | None = None,
                gid: int | None = None, mode: int = 0o644) -> None:
        """:func:`replace_file` for the entry ``name`` of this directory."""
        self._check_name(name)
        _replace_at(self.fd, name, self.name(name), fill, uid, gid, mode)

    def lock(self, name: str, uid: int | None = None, gid: int | None = None) -> int:
        """Open (creating it 0600) and ``lockf`` the lock file ``name``; returns the fd (close it to unlock).

        A lock created here is given to ``uid``/``gid`` when ``uid`` is given, so the tools that
        run as that uid can take it too.  So is one left root's by an older run (vpopmail itself
        creates it root 0600): only when it is empty and has one link, so nothing but a lock
        file ever changes hands.
        """
        import fcntl

        fd = self.open(name, os.O_RDWR, create_mode=0o600)
        try:
            if uid is not None and os.geteuid() == 0:
                info = os.fstat(fd)
                if info.st_uid != uid and (info.st_uid == 0 and info.st_nlink == 1 and info.st_size == 0):
                    os.fchown(fd, uid, -1 if gid is None else gid)
            fcntl.lockf(fd, fcntl.LOCK_EX)
        except OSError as exc:
            os.close(fd)
            raise _problem(self.name(name), "lock", exc) from None
        except BaseException:
            os.close(fd)
            raise
        return fd

    def cdb_get(self, name: str, key: bytes) -> bytes | None:
        """:func:`cdb_get` on the cdb ``name`` of this directory (FileNotFoundError when there is none)."""
        fd = self.open(name)
        try:
            return _cdb_lookup(fd, key, self.name(name))
        finally:
            os.close(fd)

    @staticmethod
    def _check_name(name: str) -> None:
        if not name or "/" in name or name in (".", ".."):
            raise ValueError(f"not a name in a directory: {name!r}")


def read_file(path: str, limit: int = 1 << 24, owners: "Collection[int] | str" = PARENT_OWNER,
              truncate: bool = False) -> bytes | None:
    """The contents of the regular file ``path``, read as :class:`UserDir` reads; None when the file
    or its directory does not exist.  For one file of a directory a mail user can write."""
    import errno

    try:
        directory = UserDir(os.path.dirname(path) or ".", owners, follow=True)  # reads only
    except FileProblem as exc:
        if exc.errno == errno.ENOENT:
            return None
        raise
    with directory:
        return directory.read(os.path.basename(path), limit, truncate)


def cdb_get(path: str, key: bytes) -> bytes | None:
    """The first record for ``key`` in the cdb ``path`` (memory-mapped, never read whole).

    FileNotFoundError when there is no such file (the caller decides what that means);
    TemporaryFailure when it cannot be read or is not a cdb.  The path is followed as given: in a
    directory a mail user can write, use :meth:`UserDir.cdb_get`.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise TemporaryFailure(f"cannot read {path}: {exc}") from None
    try:
        return _cdb_lookup(fd, key, path)
    finally:
        os.close(fd)


def _cdb_lookup(fd: int, key: bytes, path: str) -> bytes | None:
    import mmap

    from cdblib import Reader

    try:
        data = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
    except ValueError:  # mmap of an empty file
        raise TemporaryFailure(f"cannot read {path}: damaged cdb (empty)") from None
    except OSError as exc:
        raise TemporaryFailure(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return Reader(data).get(key)
    except Exception:  # struct.error: shorter than its 2048-byte table; a corrupt cdb: defer, do not guess
        raise TemporaryFailure(f"cannot read {path}: damaged cdb (shorter than its table, or corrupt)") \
            from None
    finally:
        data.close()


def write_cdb(path: str, pairs: "Iterable[tuple[bytes, bytes]]", uid: int | None = None,
              gid: int | None = None, mode: int = 0o644) -> None:
    """Atomically replace ``path`` with a cdb of the (key, data) ``pairs``, in their order."""
    replace_file(path, lambda fileobj: fill_cdb(fileobj, pairs), uid, gid, mode)
