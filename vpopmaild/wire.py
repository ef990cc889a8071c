"""vpopmaild's wire: CRLF lines in and out under a read timeout, strtok-style words, error lines.

tcpserver hands the connection over as fd 0 (read) and fd 1 (write).  A line ends at LF (a CR
before it is dropped); it must arrive whole within the read timeout (``vpopmaild_timeout``,
counted from the moment the server starts waiting for it, so a client that trickles bytes gains
nothing) and be at most :data:`MAX_LINE` bytes.  A longer line is read to its end and thrown
away, never kept in memory: :class:`TooLong`.  Both fds are non-blocking: a write waits (poll)
at most the same timeout for a client that does not read, then the session ends, so a client
that stops reading cannot hold a root process; a block of lines (``mod_user``'s parameters) is
given one deadline for all of them (:meth:`Connection.read_line`'s ``deadline``).
"""

import os
import select
import time

MAX_LINE = 8192  # bytes before the LF; vpopmail read 1024 and took the rest as further commands
TOKENS = b" \t\r\n"  # vpopmaild.c's TOKENS: words of a command
REST = b"\r\n"  # PASS_TOKENS: the rest of the line (a password may hold spaces)
PARAM_TOKENS = b" =:\r\n"  # the parameter name of a mod_user / set_limits line

# vpopmaild.msg's ErrorMessages, by major number; 37 and 38 had no text there (vpopmaild.c printed
# whatever followed the array), 39 on are this program's own.
MESSAGES = (
    "Dummy entry so it starts with 1",
    "Can't open authentication database",
    "Too many actions before login",
    "Read Timeout",
    "Invalid Command",
    "Too many invalid login attempts",
    "Email Address Required",
    "Password Required",
    "Invalid Login",
    "Not Authorized",
    "Invalid Email Address",
    "Not Authorized for domain",
    "User does not exist",
    "Domain Required",
    "Alias Name Required",
    "Invalid Alias Name Supplied",
    "Alias Line Required",
    "Alias Insertion Failed",
    "Alias Removal Failed",
    "Alias Deletion Failed",
    "Invalid Directory.  .. not allowed in path",
    "Invalid Directory.  % not allowed in path",
    "Invalid Directory.  Do you need a trailing '/'?",
    "Invalid Directory. Found / before @",
    "Invalid Directory. Can't parse email address",
    "Invalid Directory. Unknown email address",
    "Unauthorized Directory.",
    "Directory Required.",
    "Source File Name Required",
    "Destination File Name Required",
    "Filename Required",
    "Could not open assign file",
    "IP Required",
    "Not Available",
    "Could not get limits",
    "Could not set limits",
    "Not Implemented yet",
    "IP Required",
    "Invalid Domain",
    "Line too long",
    "Password change not allowed",
    "Invalid Parameter",
    "Temporary failure, try again later",
)
(CANT_OPEN_AUTH, TOO_MANY_ACTION, RD_TIMEOUT, INVALID_COMMAND, TOO_MANY_LOGIN, EMAIL_REQD, PASSWORD_REQD,
 INVALID_LOGIN, NOT_AUTHORIZED, INVALID_EMAIL, NOT_AUTH_DOMAIN, NO_USER, DOMAIN_REQD, ALIAS_REQD,
 INVALID_ALIAS, ALIAS_LINE_REQD, ALIAS_INSERT_FAIL, ALIAS_REMOVE_FAIL, ALIAS_DELETE_FAIL) = range(1, 20)
NO_OPEN_ASSIGN, IP_REQD, NOT_AVAIL, NO_GET_LIMITS, NO_SET_LIMITS, NOT_IMPLEMENT = range(31, 37)
IP_REQUIRED, INVALID_DOMAIN, LINE_TOO_LONG, PASSWD_CHNG_REFUSED, INVALID_PARAM, TEMPORARY = range(37, 43)

OK = "+OK "
OK_MORE = "+OK+"


class Terminator(str):
    """The ``.`` that ends a ``+OK+`` answer: :meth:`Connection.send` knows it by identity, so a
    line of data that happens to be ``.`` cannot end an answer early."""


END = Terminator(".")
UNSAFE = str.maketrans({"\r": "?", "\n": "?", "\0": "?"})


def safe_line(line: str) -> str:
    """One line as it may go on the wire: CR, LF and NUL (from stored data: a comment, a clear
    password, an alias line) become ``?``, so no text can start a line of its own; a line of data
    that is exactly ``.`` is sent as ``..`` (dot-stuffed: it would end the answer)."""
    if line is END:
        return line
    line = line.translate(UNSAFE)
    return ".." if line == "." else line


class Refusal(Exception):
    """An ``-ERR`` answer.  ``major`` 0 carries a library's text (``-ERR 0.305 User already
    exists``); otherwise the text is vpopmaild.msg's.  ``reason`` says more in the log line only."""

    def __init__(self, major: int, minor: int, text: str = "", reason: str = "") -> None:
        super().__init__(text or MESSAGES[major])
        self.major = major
        self.minor = minor
        self.text = text
        self.reason = reason

    def line(self) -> str:
        if self.major == 0:
            return f"-ERR 0.{self.minor} {self.text}"
        return f"-ERR {self.major}.{self.minor:03d} {MESSAGES[self.major]}"


class Closed(Exception):
    """The client went away (end of input, or a write that cannot be made)."""


class Timeout(Exception):
    """No whole line within the read timeout; ``writing``: a write blocked as long (a client that
    does not read)."""

    def __init__(self, writing: bool = False) -> None:
        super().__init__("write timeout" if writing else "read timeout")
        self.writing = writing


class TooLong(Exception):
    """A line longer than :data:`MAX_LINE` came and was thrown away."""


class Words:
    """``strtok`` over one line, as vpopmaild.c reads its commands: :meth:`next` skips leading
    delimiters, takes a word, and eats the one delimiter after it, so :meth:`rest` is everything
    after that single delimiter (``slogin a@b  pw`` has the password `` pw``)."""

    def __init__(self, line: bytes) -> None:
        self.line = line
        self.pos = 0

    def next(self, delims: bytes = TOKENS) -> bytes | None:
        line, pos = self.line, self.pos
        while pos < len(line) and line[pos] in delims:
            pos += 1
        if pos >= len(line):
            self.pos = pos
            return None
        end = pos
        while end < len(line) and line[end] not in delims:
            end += 1
        self.pos = end + 1
        return line[pos:end]

    def text(self, delims: bytes = TOKENS) -> str | None:
        """The next word as text (bytes that are not UTF-8 stay as surrogates: no name has them)."""
        word = self.next(delims)
        return None if word is None else word.decode("utf-8", "surrogateescape")

    def rest(self) -> bytes | None:
        return self.next(REST)


class Connection:
    """Lines from ``rfd``, answers to ``wfd``, each within ``timeout`` seconds."""

    def __init__(self, rfd: int, wfd: int, timeout: float, limit: int = MAX_LINE) -> None:
        self.rfd = rfd
        self.wfd = wfd
        self.timeout = timeout
        self.limit = limit
        self.buffer = bytearray()
        for fd in {rfd, wfd}:
            os.set_blocking(fd, False)  # a write must never wait longer than the poll allows
        self.read_poll = select.poll()
        self.read_poll.register(rfd, select.POLLIN)
        self.write_poll = select.poll()
        self.write_poll.register(wfd, select.POLLOUT)

    def read_line(self, deadline: float | None = None) -> bytes:
        """The next line without its CR LF, by ``deadline`` (``time.monotonic()``; default: the
        timeout from now); raises :class:`Closed`, :class:`Timeout`, :class:`TooLong`."""
        if deadline is None:
            deadline = time.monotonic() + self.timeout
        discarding = False
        buffer = self.buffer
        while True:
            end = buffer.find(b"\n")
            if end >= 0:
                line = bytes(buffer[:end])
                del buffer[:end + 1]
                if discarding or len(line) > self.limit + 1:
                    raise TooLong()
                return line[:-1] if line.endswith(b"\r") else line
            if len(buffer) > self.limit + 1:
                discarding = True
                buffer.clear()
            left = deadline - time.monotonic()
            if left <= 0 or not self.read_poll.poll(left * 1000):
                raise Timeout()
            try:
                chunk = os.read(self.rfd, 65536)
            except BlockingIOError:
                continue  # readable, then not (another reader of the socket): poll again
            except OSError:
                raise Closed() from None
            if not chunk:
                raise Closed()
            buffer += chunk

    def send(self, lines: list[str]) -> None:
        """Write lines (made :func:`safe_line`), each ended by CR LF, in as few writes as the socket takes."""
        text = "".join(safe_line(line) + "\r\n" for line in lines)
        data = memoryview(text.encode("utf-8", "surrogateescape"))
        deadline = time.monotonic() + self.timeout
        while data:
            left = deadline - time.monotonic()
            if left <= 0 or not self.write_poll.poll(left * 1000):
                raise Timeout(writing=True)
            try:
                data = data[os.write(self.wfd, data):]
            except BlockingIOError:
                continue
            except OSError:
                raise Closed() from None
