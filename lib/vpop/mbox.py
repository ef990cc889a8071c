"""mbox delivery with qmail-local's ``mailfile`` semantics (reference qmail-delivery.md §5.8), improved.

One delivery appends::

    From <sender or MAILER-DAEMON> Www Mmm DD HH:MM:SS YYYY\\n   (GMT, zero-padded day)
    <headers given by the caller, verbatim: normally RPLINE + DTLINE>
    <message, lines matching ^>*From  prefixed with '>' (mboxrd)>
    \\n if the message did not end with one, then one more \\n

Differences from qmail-local, all deliberate:

* locking is a ``PATH.lock`` dot-lock (created with ``O_EXCL``, waited for up to 30 s, removed
  when older than 300 s) plus an ``fcntl`` (``lockf``) lock on the file, the pair Debian's MUAs
  and Dovecot use; qmail-local took a single ``flock``.  No ``flock`` is added on top: on NFS
  Linux emulates it with ``fcntl`` locks and the two would conflict within one process;
* the message is read with ``pread`` from the start in 64 KiB chunks and quoted with a small
  state machine, so memory stays flat and a ``From `` split across chunks is still quoted;
* a failure while *not* holding a lock still reports, but (as in qmail) leaves the file alone
  instead of truncating it under another writer.

Messages keep qmail-local's wording, including its ``error_str`` texts for errno values.
"""

import errno
import fcntl
import os
import time

from vpop import clock
from vpop.errors import TemporaryFailure
from vpop.files import write_all

__all__ = ["deliver_mbox", "error_str", "from_line"]

LOCK_WAIT = 30.0  # seconds, as qmail-local's alarm(30)
STALE_DOTLOCK = 300.0  # seconds after which a dot-lock is considered abandoned
CHUNK = 65536

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


def _take_dotlock(lockpath: str, deadline: float) -> int | None:
    """Create the dot-lock; returns its inode, or None when this directory allows no dot-lock.

    A lock file older than ``STALE_DOTLOCK`` seconds is removed (only if it is still the
    same file a moment later).  Raises ``TemporaryFailure`` after waiting until ``deadline``.
    """
    pause = 0.001
    while True:
        try:
            fd = os.open(lockpath, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except FileExistsError:
            try:
                st = os.lstat(lockpath)
                if time.time() - st.st_mtime > STALE_DOTLOCK:
                    again = os.lstat(lockpath)
                    if (again.st_ino, again.st_mtime_ns) == (st.st_ino, st.st_mtime_ns):
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
            os.write(fd, f"{os.getpid()}\n".encode())
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
    FILE: ERROR. (#4.3.0)`` or ``Unable to read message: ERROR. (#4.3.0)``; after a write or
    read error the file is cut back to its previous length (when locked).
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
        try:
            write_all(fd, first + headers)
            _copy_quoted(fd, message_fd, message_offset, chunk, not headers or headers.endswith(b"\n"))
            os.fsync(fd)
        except OSError as exc:
            if locked:
                _truncate(fd, pos)
            raise TemporaryFailure(f"Unable to write {path}: {error_str(exc.errno)}. (#4.3.0)") from exc
        except TemporaryFailure:
            if locked:
                _truncate(fd, pos)
            raise
    finally:
        os.close(fd)  # also releases the fcntl lock
        _drop_dotlock(lockpath, dot_inode)


def _truncate(fd: int, pos: int) -> None:
    try:
        os.ftruncate(fd, pos)
    except OSError:
        pass


def _copy_quoted(out_fd: int, in_fd: int, offset: int, chunk: int, at_start: bool) -> None:
    """Copy the message quoted, then the closing newline(s); read errors -> TemporaryFailure."""
    quoter = _Quoter(at_start)
    last = b"\n"  # an empty message gets no extra newline
    from vpop.files import read_chunks

    chunks = read_chunks(in_fd, offset, chunk)
    while True:
        try:
            data = next(chunks, b"")
        except OSError as exc:
            raise TemporaryFailure(f"Unable to read message: {error_str(exc.errno)}. (#4.3.0)") from exc
        if not data:
            break
        last = data[-1:]
        write_all(out_fd, b"".join(quoter.feed(data)))
    tail = quoter.flush()
    write_all(out_fd, tail + (b"\n" if last == b"\n" else b"\n\n"))
