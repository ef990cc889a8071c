"""The queued message vdelivermail is given, and the loop check every delivery makes first.

qmail-local hands the message on fd 0 as a regular file; anything else (a pipe in a test, a
hand-run delivery) is copied into an unnamed temporary file first, so every delivery can read
it again from the start.  ``posix``, not ``os``: vdelivermail's quick path reads the message with
this module (see :mod:`vdelivermail.main`).
"""

import posix

from vpop.errors import TemporaryFailure
from vpop.fdio import write_all

DELIVERED_TO = b"Delivered-To: "
LOOP_HEADER_LIMIT = 1 << 20  # how much of the header section the loop check reads
_SEEK_SET = 0  # os.SEEK_SET (posix has no name for it)


class Message:
    """The queued message on a seekable descriptor (qmail-local gives a regular file)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        try:
            posix.lseek(fd, 0, _SEEK_SET)
        except OSError:
            self.fd = _spool(fd)
        self.size = posix.fstat(self.fd).st_size

    def header_lines(self):
        """The header lines (with their line ends), up to the empty line."""
        offset = 0
        pending = b""
        while offset < LOOP_HEADER_LIMIT:
            chunk = posix.pread(self.fd, 8192, offset)
            if not chunk:
                if pending:
                    yield pending
                return
            offset += len(chunk)
            pending += chunk
            while True:
                end = pending.find(b"\n")
                if end < 0:
                    break
                line, pending = pending[:end + 1], pending[end + 1:]
                if line in (b"\n", b"\r\n"):
                    return
                yield line

    def rewind(self) -> None:
        posix.lseek(self.fd, 0, _SEEK_SET)


def _spool(fd: int) -> int:
    """Copy a non-seekable stdin into an unnamed temporary file (vpopmail's make-seekable)."""
    try:
        spool = posix.open("/tmp", posix.O_TMPFILE | posix.O_RDWR, 0o600)
        while True:
            chunk = posix.read(fd, 65536)
            if not chunk:
                break
            write_all(spool, chunk)
        posix.lseek(spool, 0, _SEEK_SET)
        return spool
    except OSError as exc:
        raise TemporaryFailure(f"Unable to read message: {exc.strerror}. (#4.3.0)") from None


def return_path(environ: dict) -> bytes:
    """qmail-local's ``RPLINE``, else ``Return-Path: <SENDER>`` (no line breaks), else nothing."""
    rpline = environ.get("RPLINE")
    if rpline is None:
        sender = environ.get("SENDER")
        if sender is None:
            return b""
        rpline = f"Return-Path: <{sender.replace(chr(10), '_').replace(chr(13), '_')}>\n"
    return rpline.encode("utf-8", "surrogateescape")


def delivered_to(address: str) -> bytes:
    return (DELIVERED_TO.decode() + address + "\n").encode("utf-8", "surrogateescape")


def is_looping(message: Message, address: str, dtline: str) -> bool:
    """A ``Delivered-To: <address>`` line (case-insensitive) in DTLINE or the header."""
    wanted = (DELIVERED_TO.decode() + address).lower().encode("utf-8", "surrogateescape")
    if dtline.rstrip("\n").lower().encode("utf-8", "surrogateescape") == wanted:
        return True
    for line in message.header_lines():
        if line.rstrip(b"\r\n").lower() == wanted:
            return True
    return False
