"""Build tcpserver rules databases (``tcp.smtp.cdb``) the way ucspi-tcp 0.88's ``tcprules`` does.

vpopmail's roaming-users feature spawns ``tcprules``; we write the cdb ourselves instead, with the
same keys, values, record order and table layout, so the file is byte for byte what ``tcprules``
would have written from the same text.  The format, as confirmed against ``/usr/bin/tcprules``:

* Lines are split on ``\\n`` only; trailing spaces and TABs are dropped (``\\r`` is not).
* A line starting with ``#`` is a comment.  A line without ``:`` is skipped silently.
* ``ADDRESS:INSTRUCTION``, split at the first ``:``.  The address is taken verbatim (no case
  folding, no trimming).  The instruction is ``allow`` (data ``b""``) or ``deny`` (data ``b"D\\0"``),
  followed by any number of ``,NAME=QvalueQ``, where ``Q`` is whatever character follows the first
  ``=`` (usually ``"`` or ``'``) and the value runs to the next ``Q``; each adds
  ``b"+NAME=value\\0"``.  Anything else after the instruction makes ``tcprules`` fail the whole run.
* An address with a ``-`` and neither ``=`` nor ``@`` is a range: ``1.2.3.4-9`` or ``1.2.3-5.``.
  The numbers are all digits (empty counts as 0, arithmetic is C ``unsigned long``), the upper
  bound is cut to 255, the range ends at ``.`` or the end of the address, and one key per number
  is written (none when the lower bound is above the upper one).
* Duplicate keys are all written, in order; tcpserver finds the first.
"""


import errno
import os

from vpop.errors import ConfigError

TYPE_CHECKING = False  # typing costs import time; the names below are only for annotations
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import BinaryIO

    from vpop.files import UserDir

_ULONG = 1 << 64  # tcprules parses numbers into a 64-bit unsigned long (amd64), wrapping silently


class _BadLine(Exception):
    """This line makes tcprules exit 100 with ``unable to parse this line``."""


def _number(text: bytes) -> int:
    if text and not text.isdigit():
        raise _BadLine
    return int(text or b"0") % _ULONG


def _instruction(text: bytes) -> bytes:
    """The cdb value for the part after the first colon."""
    if text.startswith(b"deny"):
        data, i = b"D\0", 4
    elif text.startswith(b"allow"):
        data, i = b"", 5
    else:
        raise _BadLine
    parts = [data]
    while i < len(text):
        if text[i] != ord(","):
            raise _BadLine
        eq = text.find(b"=", i)
        if eq < 0 or eq + 1 >= len(text):
            raise _BadLine
        quote = text[eq + 1 : eq + 2]
        end = text.find(quote, eq + 2)
        if end < 0:
            raise _BadLine
        parts.append(b"+" + text[i + 1 : eq + 1] + text[eq + 2 : end] + b"\0")
        i = end + 1
    return b"".join(parts)


def _keys(address: bytes) -> list[bytes]:
    """The cdb keys for one address: itself, or one per number of a ``a-b`` range."""
    if b"=" in address or b"@" in address:
        return [address]
    dash = address.find(b"-")
    if dash < 0:
        return [address]
    left = address.rfind(b".", 0, dash) + 1
    right = address.find(b".", dash + 1)
    if right < 0:
        right = len(address)
    bottom = _number(address[left:dash])
    top = min(_number(address[dash + 1 : right]), 255)
    head, tail = address[:left], address[right:]
    return [head + str(n).encode() + tail for n in range(bottom, top + 1)]


def parse_rules(text: str, path: str) -> list[tuple[bytes, bytes]]:
    """The (key, data) records ``tcprules`` would write for ``text``, in its order.

    ``text`` is encoded back with UTF-8 and ``surrogateescape``, so text read from bytes with the
    same error handler round-trips exactly.  A line that ``tcprules`` rejects raises
    :class:`ConfigError` naming ``path`` and the 1-based line number.
    """
    pairs: list[tuple[bytes, bytes]] = []
    for number, line in enumerate(text.encode("utf-8", "surrogateescape").split(b"\n"), 1):
        if line.startswith(b"#"):
            continue
        line = line.rstrip(b" \t")
        address, colon, rest = line.partition(b":")
        if not colon:
            continue
        try:
            data = _instruction(rest)
            pairs.extend((key, data) for key in _keys(address))
        except _BadLine:
            # The line itself is never shown: the file may be a link to a secret (or hold one).
            raise ConfigError(path, number, "tcprules cannot parse this line") from None
    return pairs


def write_rules_cdb(
    pairs: "Iterable[tuple[bytes, bytes]]", cdb_path: str, uid: int | None = None, gid: int | None = None,
    directory: "UserDir | None" = None,
) -> None:
    """Atomically replace ``cdb_path`` with a cdb of the (key, data) ``pairs``, in their order.

    Written through :class:`vpop.files.UserDir` (``directory``, when it is already open): the
    directory may be ``~vpopmail/etc``, where a link is never followed.  See
    :func:`vpop.files.replace_file` for the tmp name, mode, ownership and errors.
    """
    from vpop.files import ANY_OWNER, UserDir, fill_cdb

    def fill(fileobj: "BinaryIO") -> None:
        fill_cdb(fileobj, pairs)

    if directory is not None:
        directory.replace(os.path.basename(cdb_path), fill, uid, gid)
        return
    with UserDir(os.path.dirname(cdb_path) or ".", ANY_OWNER) as opened:  # tcp_file is a setting
        opened.replace(os.path.basename(cdb_path), fill, uid, gid)


def build(
    rules_path: str,
    extra_lines: list[str],
    cdb_path: str,
    uid: int | None = None,
    gid: int | None = None,
    extra_source: str = "<added rules>",
    directory: "UserDir | None" = None,
) -> None:
    """Rebuild ``cdb_path`` from the rules file (missing = empty) followed by ``extra_lines``.

    Unlike vpopmail, which pipes the file and then the lines into tcprules, a rules file whose last
    line lacks a newline does not get the first extra line glued onto it.  A bad line in the file
    or in ``extra_lines`` (reported against ``extra_source``) raises :class:`ConfigError` and
    leaves the old cdb in place, as a failing tcprules run does.

    Both files are used through :class:`vpop.files.UserDir` (``directory`` when it is the open
    directory of both): a rules file that is a link, a FIFO or a foreign file is a ConfigError
    naming it, and its contents are never quoted.
    """
    from vpop.files import ANY_OWNER, FileProblem, UserDir

    rules_dir = os.path.dirname(rules_path) or "."
    try:
        if directory is not None and directory.path == rules_dir:
            raw = directory.read(os.path.basename(rules_path))
        else:
            with UserDir(rules_dir, ANY_OWNER) as opened:  # tcp_file is a setting: any owner
                raw = opened.read(os.path.basename(rules_path))
    except FileProblem as exc:
        if exc.errno != errno.ENOENT:  # no directory: no rules file
            raise ConfigError(exc.path, None, exc.reason) from None
        raw = None
    pairs = parse_rules((raw or b"").decode("utf-8", "surrogateescape"), rules_path)
    pairs += parse_rules("".join(line + "\n" for line in extra_lines), extra_source)
    same = directory is not None and directory.path == (os.path.dirname(cdb_path) or ".")
    write_rules_cdb(pairs, cdb_path, uid, gid, directory if same else None)
