"""mbox delivery with qmail-local's ``mailfile`` semantics (reference qmail-delivery.md §5.8), improved.

One delivery appends::

    From <sender or MAILER-DAEMON> Www Mmm DD HH:MM:SS YYYY\\n   (GMT, zero-padded day)
    <headers given by the caller, verbatim: normally RPLINE + DTLINE>
    <message, lines matching ^>*From  prefixed with '>' (mboxrd)>
    \\n if the message did not end with one, then one more \\n

so a complete record always ends with an empty line (``\\n\\n``).

Differences from qmail-local, all deliberate:

* locking is a ``PATH.lock`` dot-lock (created with ``O_EXCL``, waited for up to 30 s, removed
  when older than 300 s or when the process it names is gone, see :func:`_take_dotlock`) plus an
  ``fcntl`` (``lockf``) lock on the file, the pair Debian's MUAs and Dovecot use; qmail-local took
  a single ``flock``.  No ``flock`` is added on top: on NFS Linux emulates it with ``fcntl``
  locks and the two would conflict within one process;
* the message is read with ``pread`` from the start in 64 KiB chunks and quoted with a small
  state machine, so memory stays flat and a ``From `` split across chunks is still quoted;
* any failure the delivery sees (a write, read or ``fsync`` error such as ENOSPC, EFBIG or EIO,
  and also an exception such as ``KeyboardInterrupt`` or ``MemoryError``) cuts the file back
  to the length it had, so it is byte for byte what it was.  Without a lock this is done only
  when nobody else appended meanwhile (the size is exactly the old one plus what this delivery
  wrote); qmail-local never cut back an unlocked file;
* a delivery that was killed (``SIGKILL``, a crash, a power cut) cannot clean up and leaves a
  record without its closing newlines.  The next delivery repairs the boundary first, see
  :func:`_separator`.

Messages keep qmail-local's wording, including its ``error_str`` texts for errno values.
"""

import errno
import fcntl
import os
import stat
import time

from vpop import clock
from vpop.errors import TemporaryFailure

__all__ = ["deliver_mbox", "error_str", "from_line"]

LOCK_WAIT = 30.0  # seconds, as qmail-local's alarm(30)
STALE_DOTLOCK = 300.0  # seconds after which a dot-lock is considered abandoned
CHUNK = 65536
_LOCK_READ = 256  # bytes of a dot-lock read to find its pid (liblockfile reads 16, Dovecot 511)
_PID_MAX = (1 << 31) - 1  # pid_t

_SLOWLOCK = "File has been locked for 30 seconds straight. (#4.3.0)"

# qmail's error_str() wording for the errno values a delivery can meet.
_ERROR_STR = {
    0: "no error",
    errno.EINTR: "interrupted system call",
    errno.ENOMEM: "out of memory",
    errno.ENOENT: "file does not exist",
    errno.ETXTBSY: "text busy",
    errno.EIO: "input/output error",
    errno.EEXIST: "file already exists",
    errno.ETIMEDOUT: "timed out",
    errno.EAGAIN: "temporary failure",
    errno.EPIPE: "broken pipe",
    errno.EPERM: "permission denied",
    errno.EACCES: "access denied",
    errno.EBADF: "file descriptor not open",
    errno.EDEADLK: "operation would cause deadlock",
    errno.EBUSY: "device busy",
    errno.EXDEV: "cross-device link",
    errno.ENOTDIR: "not a directory",
    errno.EISDIR: "is a directory",
    errno.EINVAL: "invalid argument",
    errno.ENFILE: "system cannot open more files",
    errno.EMFILE: "process cannot open more files",
    errno.EFBIG: "file too big",
    errno.ENOSPC: "out of disk space",
    errno.ESPIPE: "unseekable descriptor",
    errno.EROFS: "read-only file system",
    errno.EMLINK: "too many links",
    errno.ELOOP: "symbolic link loop",
    errno.ENAMETOOLONG: "file name too long",
    errno.EDQUOT: "disk quota exceeded",
    errno.ESTALE: "stale NFS file handle",
    errno.ENOLCK: "no locks available",
    errno.ENOSYS: "system call not available",
}


def error_str(code: int | None) -> str:
    """qmail's ``error_str``: its text for common errno values, else the C library's (lower case)."""
    if code is None:
        return "unknown error"
    text = _ERROR_STR.get(code)
    if text is None:
        text = os.strerror(code)
        text = text[:1].lower() + text[1:]
    return text


def from_line(sender: str, now: float | None = None) -> bytes:
    """qmail-local's UFLINE: ``From SENDER Www Mmm DD HH:MM:SS YYYY\\n`` (GMT).

    Blanks, tabs and newlines in the sender become ``-``; an empty sender is ``MAILER-DAEMON``.
    The sender is encoded back to the bytes it came from (``os.fsencode``).
    """
    raw = os.fsencode(sender).replace(b" ", b"-").replace(b"\t", b"-").replace(b"\n", b"-")
    date = clock.ctime_gmt(clock.now() if now is None else now)
    return b"From " + (raw or b"MAILER-DAEMON") + b" " + date.encode("ascii") + b"\n"


class _Quoter:
    """Streaming mboxrd quoting: a ``>`` before every line matching ``^>*From ``.

    Adding the ``>`` directly before ``From`` gives the same bytes as adding it at the start
    of the line (only ``>`` characters precede it), so a long run of ``>`` never has to be
    held back.  What can straddle a chunk border is at most four bytes of ``From``; they are
    held until the next chunk decides.  ``at_start`` means: everything of the current line
    before the next byte was ``>`` (or nothing).
    """

    __slots__ = ("at_start", "held")

    def __init__(self, at_start: bool = True) -> None:
        self.at_start = at_start
        self.held = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        data = self.held + chunk if self.held else chunk
        self.held = b""
        out: list[bytes] = []
        start = 0
        pos = data.find(b"From ")
        while pos >= 0:
            q = pos
            while q > 0 and data[q - 1] == 0x3E:  # '>'
                q -= 1
            if (q == 0 and self.at_start) or (q > 0 and data[q - 1] == 0x0A):
                out.append(data[start:pos])
                out.append(b">")
                start = pos
            pos = data.find(b"From ", pos + 5)
        nl = data.rfind(b"\n")
        rest = data[nl + 1 :].lstrip(b">")
        if (nl >= 0 or self.at_start) and len(rest) < 5 and b"From ".startswith(rest):
            cut = len(data) - len(rest)
            self.held = bytes(rest)
            self.at_start = True
            out.append(data[start:cut])
        else:
            self.at_start = False
            out.append(data[start:])
        return out

    def flush(self) -> bytes:
        held, self.held = self.held, b""
        return held


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino, a.st_mtime_ns, a.st_ctime_ns, a.st_size) == (
        b.st_dev, b.st_ino, b.st_mtime_ns, b.st_ctime_ns, b.st_size)


def _lock_contents() -> bytes:
    """What our dot-lock holds: ``PID:HOST\\n``.

    The pid first, in decimal, is what liblockfile (``dotlockfile -p``, Debian's ``maillock``)
    reads with ``atoi``; ``PID:HOST`` is Dovecot's format, whose reader checks the pid only when
    HOST is its own host name, and so does :func:`_holder_is_dead` here.  That keeps a
    delivery on another machine sharing the spool over NFS from taking our live lock for a
    dead one.  (mutt's ``mutt_dotlock``, procmail and Postfix write empty lock files and go by
    age only; qmail itself takes no dot-lock.)
    """
    return f"{os.getpid()}:{os.uname().nodename}\n".encode()


def _local_pid(data: bytes) -> int | None:
    """The pid a dot-lock names, when it can be checked on this machine; else None.

    Accepted: ``PID`` alone (optionally followed by blanks, newline or NUL: liblockfile,
    ``dotlockfile -p``, our format before the host was added) and ``PID:HOST`` (Dovecot, ours)
    with HOST equal to this machine's host name.  Anything else (empty, ``0`` -- the SVR4
    "no pid" value liblockfile writes without ``L_PID`` --, text, another host) is None.
    """
    text = data.rstrip(b" \t\r\n\0")
    pid_text, colon, host = text.partition(b":")
    if colon and host != os.uname().nodename.encode("utf-8", "surrogateescape"):
        return None
    pid_text = pid_text.strip(b" \t")
    if not (pid_text.isascii() and pid_text.isdigit() and len(pid_text) <= 10):
        return None
    pid = int(pid_text)
    return pid if 0 < pid <= _PID_MAX else None


def _holder_is_dead(lockpath: str, st: os.stat_result) -> bool:
    """Does the dot-lock ``lockpath`` (``lstat`` result ``st``) name a process that is gone?

    The file is opened ``O_NOFOLLOW | O_NONBLOCK`` (no symlink, no blocking on a FIFO), must be
    a regular file and the same one ``st`` describes, and at most ``_LOCK_READ`` bytes of it
    are read.  True only when it names a local pid (:func:`_local_pid`) and ``kill(pid, 0)``
    fails with ESRCH; a live process (also one of another user: EPERM), a zombie, an
    unreadable or empty file or one without a pid gives False.
    """
    if not stat.S_ISREG(st.st_mode):
        return False
    try:
        fd = os.open(lockpath, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode) or (opened.st_dev, opened.st_ino) != (st.st_dev, st.st_ino):
            return False
        data = os.read(fd, _LOCK_READ)
    except OSError:
        return False
    finally:
        os.close(fd)
    pid = _local_pid(data)
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # EPERM: it exists
    return False


def _take_dotlock(lockpath: str, deadline: float) -> int | None:
    """Create the dot-lock; returns its inode, or None when this directory allows no dot-lock.

    Our lock file holds :func:`_lock_contents`.  Someone else's lock is broken (removed, only
    if it is still the same file -- device, inode, size, mtime and ctime -- a moment later)
    when it is older than ``STALE_DOTLOCK`` seconds, or at once when it names a pid of this
    machine that no longer exists (:func:`_holder_is_dead`: a delivery that was killed or
    crashed).  A lock naming a live process, or whose contents say nothing checkable, is waited
    for as before.  Raises ``TemporaryFailure`` after waiting until ``deadline``.

    Limits of the pid check.  A pid is only meaningful on the machine (and in the pid
    namespace) that wrote it: a bare ``PID`` lock written on another NFS client, or in a
    container with its own pid namespace sharing the spool, cannot be checked here, and if its
    pid happens not to exist locally the lock is taken for a dead one (liblockfile has the same
    limit).  Locks in ``PID:HOST`` form from another host are not checked at all.  The
    ``fcntl`` lock taken next still keeps two of our own deliveries apart wherever the file
    system supports it.  A pid reused by an unrelated live process keeps the lock until it is
    ``STALE_DOTLOCK`` seconds old.
    """
    pause = 0.001
    while True:
        try:
            fd = os.open(lockpath, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except FileExistsError:
            try:
                st = os.lstat(lockpath)
                if time.time() - st.st_mtime > STALE_DOTLOCK or _holder_is_dead(lockpath, st):
                    if _same_file(os.lstat(lockpath), st):
                        os.unlink(lockpath)
                    continue
            except FileNotFoundError:
                continue
            except OSError:
                pass
            if time.monotonic() >= deadline:
                raise TemporaryFailure(_SLOWLOCK) from None
            time.sleep(pause)
            pause = min(pause * 2, 0.1)
            continue
        except OSError:
            return None  # e.g. spool directory not writable: rely on the fcntl lock
        try:
            os.write(fd, _lock_contents())
            return os.fstat(fd).st_ino
        except OSError:
            return os.lstat(lockpath).st_ino
        finally:
            os.close(fd)


def _drop_dotlock(lockpath: str, inode: int | None) -> None:
    if inode is None:
        return
    try:
        if os.lstat(lockpath).st_ino == inode:
            os.unlink(lockpath)
    except OSError:
        pass


def _take_fcntl_lock(fd: int, deadline: float) -> bool:
    """``lockf(fd, F_LOCK)`` waiting until ``deadline``; False when the file system has no locks."""
    pause = 0.001
    while True:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                return False  # like qmail-local: a locking error means "deliver unlocked"
        if time.monotonic() >= deadline:
            raise TemporaryFailure(_SLOWLOCK)
        time.sleep(pause)
        pause = min(pause * 2, 0.1)


class _Appender:
    """Writes to the mbox descriptor and counts what went out (for a safe cut-back)."""

    __slots__ = ("fd", "written")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.written = 0

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)  # a short write is continued, an error raised
            self.written += n
            view = view[n:]


def _separator(path: str, fd: int, size: int) -> bytes:
    """The newline(s) to write before our ``From `` line so that it starts a record of its own.

    A record qmail-local (and this module) writes ends with ``\\n\\n``: its last line and an
    empty line.  A file that ends otherwise holds the start of a record whose delivery was
    killed before it could finish or clean up (or was written by something else).  Appending
    directly would glue our ``From `` to its last line (``...xxxxFrom s@r.org Tue Dec ...``)
    and hide our message inside it.  So the end is completed to the form of a finished record:

    * empty file, or it ends with ``\\n\\n`` (or is just ``\\n``): nothing;
    * it ends with ``\\n`` (a line, but no empty line): ``\\n``;
    * it ends inside a line: ``\\n\\n``.

    Why an empty line and not only a newline: Python's ``mailbox.mbox`` splits at any line
    starting with ``From `` and takes an empty line before it as the separator, not as part of
    the message, so every earlier complete message reads exactly as before and the cut-off one
    reads as itself (its last line ended).  mutt splits at any line that parses as a ``From_``
    line and always takes the one byte before it as the separator (a message ends one byte
    before the next ``From_``), so it needs that empty line too, or it cuts the newline off the
    last line.  Stricter readers (RFC 4155's "default" mbox, ``From_`` parsers that want an
    empty line first) would, with a lone newline, still run the two messages together.
    Nothing is removed: the partial record may be all that is left of a message (qmail
    retries the delivery, so at worst a fragment appears next to the complete copy).

    The tail is read through a second, read-only descriptor, opened only when ``fd`` is a
    regular file and checked to be the same file (``fd`` stays ``O_WRONLY`` as qmail-local
    opens it, so a FIFO or a write-only file behaves as before).  When the end cannot be read,
    nothing is added.  The repair is part of this delivery: a failure cuts it back with the rest.
    """
    if size <= 0:
        return b""
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return b""
        rfd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return b""
    try:
        opened = os.fstat(rfd)
        if (opened.st_dev, opened.st_ino) != (st.st_dev, st.st_ino):
            return b""
        tail = os.pread(rfd, 2, max(size - 2, 0))
    except OSError:
        return b""
    finally:
        os.close(rfd)
    if not tail or tail.endswith(b"\n\n") or tail == b"\n":
        return b""
    return b"\n" if tail.endswith(b"\n") else b"\n\n"


def deliver_mbox(
    path: str,
    sender: str,
    headers: bytes,
    message_fd: int,
    now: float | None = None,
    *,
    message_offset: int = 0,
    chunk: int = CHUNK,
) -> None:
    """Append the message on ``message_fd`` (from ``message_offset``) to the mbox ``path``.

    Raises ``TemporaryFailure`` with qmail-local's text: ``Unable to open FILE: ERROR.
    (#4.2.1)``, ``File has been locked for 30 seconds straight. (#4.3.0)``, ``Unable to write
    FILE: ERROR. (#4.3.0)`` or ``Unable to read message: ERROR. (#4.3.0)``.  After any failure
    (those errors, or another exception, which is re-raised) the file is cut back to its
    previous length (see the module docstring for the unlocked case).  A file whose last
    record was left unfinished by a killed delivery first gets the newline(s) it lacks
    (:func:`_separator`).
    """
    first = from_line(sender, now)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise TemporaryFailure(f"Unable to open {path}: {error_str(exc.errno)}. (#4.2.1)") from exc
    lockpath = path + ".lock"
    dot_inode: int | None = None
    try:
        deadline = time.monotonic() + LOCK_WAIT
        dot_inode = _take_dotlock(lockpath, deadline)
        locked = _take_fcntl_lock(fd, deadline) or dot_inode is not None
        pos = os.lseek(fd, 0, os.SEEK_END)
        out = _Appender(fd)
        try:
            out.write(_separator(path, fd, pos) + first + headers)
            _copy_quoted(out, message_fd, message_offset, chunk, not headers or headers.endswith(b"\n"))
            os.fsync(fd)
        except OSError as exc:
            _cut_back(fd, pos, out.written, locked)
            raise TemporaryFailure(f"Unable to write {path}: {error_str(exc.errno)}. (#4.3.0)") from exc
        except BaseException:
            _cut_back(fd, pos, out.written, locked)
            raise
    finally:
        os.close(fd)  # also releases the fcntl lock
        _drop_dotlock(lockpath, dot_inode)


def _cut_back(fd: int, pos: int, written: int, locked: bool) -> None:
    """Truncate to ``pos``; unlocked only if the file is exactly ``pos`` + what we wrote."""
    try:
        if locked or os.fstat(fd).st_size == pos + written:
            os.ftruncate(fd, pos)
            os.fsync(fd)
    except OSError:
        pass


def _copy_quoted(out: _Appender, in_fd: int, offset: int, chunk: int, at_start: bool) -> None:
    """Copy the message quoted, then the closing newline(s); read errors -> TemporaryFailure."""
    quoter = _Quoter(at_start)
    last = b"\n"  # an empty message gets no extra newline
    from vpop.fdio import read_chunks

    chunks = read_chunks(in_fd, offset, chunk)
    while True:
        try:
            data = next(chunks, b"")
        except OSError as exc:
            raise TemporaryFailure(f"Unable to read message: {error_str(exc.errno)}. (#4.3.0)") from exc
        if not data:
            break
        last = data[-1:]
        out.write(b"".join(quoter.feed(data)))
    tail = quoter.flush()
    out.write(tail + (b"\n" if last == b"\n" else b"\n\n"))
