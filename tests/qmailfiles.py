"""A small, independent reading of qmail's own formats, for tests of what our programs write.

Written from /work/shared/reference/qmail-delivery.md (qmail-send, qmail-lspawn, qmail-newu,
qmail-local), not from the project's code: it has its own cdb reader so that a users/cdb written
by the code under test is checked by something that did not write it.

* :func:`parse_assign` -- users/assign as qmail-newu reads it (format errors raise ValueError).
* :class:`Cdb` and :func:`lspawn_lookup` -- users/cdb as qmail-lspawn searches it.
* :func:`parse_virtualdomains` / :func:`rewrite` -- control/virtualdomains as qmail-send uses it.
* :func:`dot_qmail_candidates` / :func:`route` -- where an address ends up: which user, home,
  dash and ext, and which .qmail file qmail-local would read.
"""

from __future__ import annotations

import os
import stat
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

# ------------------------------------------------------------------------------------ users/assign


@dataclass(frozen=True)
class Assignment:
    """One users/assign line.  For a wildcard (``+``) line ``ext`` is the prefix qmail-lspawn extends."""

    wildcard: bool
    local: str
    user: str
    uid: int
    gid: int
    home: str
    dash: str
    ext: str

    def cdb_key(self) -> bytes:
        key = b"!" + self.local.lower().encode()
        return key if self.wildcard else key + b"\0"

    def cdb_data(self) -> bytes:
        return b"\0".join(str(v).encode() for v in (self.user, self.uid, self.gid, self.home, self.dash,
                                                     self.ext))


def parse_assign(text: str) -> dict[tuple[str, str], Assignment]:
    """users/assign -> {("=" or "+", local lower-cased): Assignment}, first line of a key winning.

    qmail-newu's rules: every line before the final ``.`` line ends in a newline, has at least seven
    ``:`` and a non-empty user.  Unlike qmail-newu, a line starting with neither ``=`` nor ``+`` is an
    error here: our writer has no business producing one.
    """
    if "\0" in text:
        raise ValueError("NUL in users/assign")
    lines = text.split("\n")
    result: dict[tuple[str, str], Assignment] = {}
    for number, line in enumerate(lines, 1):
        if line.startswith("."):
            return result
        if number == len(lines):
            raise ValueError(f"line {number}: no final '.' line")
        if line[:1] not in ("=", "+"):
            raise ValueError(f"line {number}: neither '=' nor '+': {line!r}")
        fields = line[1:].split(":")
        if len(fields) < 8:
            raise ValueError(f"line {number}: fewer than seven ':': {line!r}")
        local, user, uid, gid, home, dash, ext = fields[:7]
        if not user:
            raise ValueError(f"line {number}: empty user")
        entry = Assignment(line[0] == "+", local, user, int(uid), int(gid), home, dash, ext)
        result.setdefault((line[0], local.lower()), entry)
    raise ValueError("no final '.' line")


# ------------------------------------------------------------------------------------ cdb


def cdb_hash(key: bytes) -> int:
    h = 5381
    for byte in key:
        h = (((h << 5) + h) & 0xFFFFFFFF) ^ byte
    return h


class Cdb:
    """A read-only cdb (D. J. Bernstein's constant database), read whole into memory."""

    def __init__(self, data: bytes) -> None:
        if len(data) < 2048:
            raise ValueError("cdb shorter than its 2048-byte header")
        self.data = data
        self.tables = [struct.unpack_from("<II", data, 8 * i) for i in range(256)]
        self.end = min(pos for pos, _slots in self.tables)
        for pos, slots in self.tables:
            if pos < 2048 or pos + 8 * slots > len(data):
                raise ValueError("cdb hash table outside the file")

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Cdb:
        return cls(Path(path).read_bytes())

    def items(self) -> list[tuple[bytes, bytes]]:
        """Every record in file order."""
        out = []
        pos = 2048
        while pos < self.end:
            klen, dlen = struct.unpack_from("<II", self.data, pos)
            pos += 8
            out.append((self.data[pos:pos + klen], self.data[pos + klen:pos + klen + dlen]))
            pos += klen + dlen
        if pos != self.end:
            raise ValueError("cdb records overrun the hash tables")
        return out

    def get_all(self, key: bytes) -> list[bytes]:
        h = cdb_hash(key)
        pos, slots = self.tables[h & 255]
        found: list[bytes] = []
        if slots == 0:
            return found
        slot = (h >> 8) % slots
        for _ in range(slots):
            hh, rpos = struct.unpack_from("<II", self.data, pos + 8 * slot)
            if rpos == 0:
                break
            if hh == h:
                klen, dlen = struct.unpack_from("<II", self.data, rpos)
                if self.data[rpos + 8:rpos + 8 + klen] == key:
                    found.append(self.data[rpos + 8 + klen:rpos + 8 + klen + dlen])
            slot = (slot + 1) % slots
        return found

    def get(self, key: bytes) -> bytes | None:
        values = self.get_all(key)
        return values[0] if values else None


class LspawnExit(Exception):
    """qmail-lspawn (or the qmail-getpw it ran) would exit with ``code``."""

    def __init__(self, code: int, why: str = "") -> None:
        super().__init__(f"exit {code}: {why}")
        self.code = code


def lspawn_lookup(cdb: Cdb, local: str) -> tuple[str, int, int, str, str, str] | None:
    """qmail-lspawn's users/cdb search (nughde_get): exact ``!local\\0``, then wildcards; None = no hit."""
    lower = local.lower()
    data = cdb.get(b"!" + lower.encode() + b"\0")
    rest = ""
    if data is None:
        wildchars = cdb.get(b"")
        if wildchars is None:
            raise LspawnExit(117, "users/cdb has no wildchars record")
        for n in range(len(lower), -1, -1):
            if n and lower[n - 1] not in wildchars.decode("latin-1"):
                continue
            data = cdb.get(b"!" + lower[:n].encode())
            if data is not None:
                rest = local[n:]
                break
        else:
            return None
    fields = data.split(b"\0")
    if len(fields) != 6:
        raise LspawnExit(112, f"users/cdb record with {len(fields)} fields")
    user, uid, gid, home, dash, ext = (f.decode() for f in fields)
    return user, int(uid), int(gid), home, dash, ext + rest


def parse_getpw_output(out: bytes) -> tuple[str, int, int, str, str, str]:
    """qmail-lspawn's reading of qmail-getpw's stdout: six NUL-terminated fields, nothing after."""
    fields = out.split(b"\0")
    if len(fields) != 7 or fields[6] != b"":
        raise LspawnExit(112, f"qmail-getpw printed {out!r}")
    user, uid, gid, home, dash, ext = (f.decode() for f in fields[:6])
    return user, int(uid), int(gid), home, dash, ext


# ------------------------------------------------------------------------------------ control files


def control_lines(path: str | os.PathLike[str]) -> list[str] | None:
    """control_readfile: trailing blanks stripped, empty and ``#`` lines skipped; None if missing."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return None
    lines = [line.rstrip(" \t\r") for line in text.split("\n")]
    return [line for line in lines if line and not line.startswith("#")]


def parse_virtualdomains(text: str) -> dict[str, str]:
    """control/virtualdomains -> {key lower-cased: prepend}; a line without ':' or a repeated key raises."""
    result: dict[str, str] = {}
    for line in text.split("\n"):
        line = line.rstrip(" \t")
        if not line or line.startswith("#"):
            continue
        if ":" not in line:
            raise ValueError(f"virtualdomains line without ':': {line!r}")
        key, prepend = line.split(":", 1)
        if key.lower() in result:
            raise ValueError(f"virtualdomains key twice: {key!r}")
        result[key.lower()] = prepend
    return result


def rewrite(address: str, locals_: list[str], virtualdomains: dict[str, str]) -> str | None:
    """qmail-send: the local part qmail-lspawn gets for ``address``; None when the address is remote."""
    local, _, domain = address.rpartition("@")
    if domain.lower() in {h.lower() for h in locals_}:
        return local
    keys = [address.lower(), domain.lower()]
    keys += [domain.lower()[i:] for i, c in enumerate(domain) if c == "."]
    keys.append("")
    for key in keys:
        if key in virtualdomains:
            prepend = virtualdomains[key]
            return None if prepend == "" else f"{prepend}-{local}"
    return None


# ------------------------------------------------------------------------------------ qmail-local


def dot_qmail_candidates(dash: str, ext: str) -> list[str]:
    """The file names qmail-local tries, in order (dot-qmail.9, qmail-local.c)."""
    safe = ext.lower().replace(".", ":")
    names = [".qmail" + dash + safe]
    for i in range(len(safe), -1, -1):
        if i == 0 or safe[i - 1] == "-":
            names.append(".qmail" + dash + safe[:i] + "default")
    return names


def instruction(line: str) -> tuple[str, str]:
    """One .qmail line -> (kind, argument): comment, maildir, mbox, program, forward."""
    if line.startswith("#"):
        return "comment", line[1:]
    if line.startswith((".", "/")):
        return ("maildir" if line.endswith("/") else "mbox"), line
    if line.startswith("|"):
        return "program", line[1:]
    if line.startswith("&"):
        return "forward", line[1:]
    return "forward", line


@dataclass
class Delivery:
    """Where qmail would take an address: the qmail-local arguments and the .qmail file it reads."""

    address: str
    local: str  # the local part qmail-lspawn saw (after virtualdomains)
    source: str  # "users/cdb" or "qmail-getpw"
    user: str
    uid: int
    gid: int
    home: str
    dash: str
    ext: str
    dot_qmail: str | None  # file name in home, or None
    lines: list[str] = field(default_factory=list)  # non-blank lines, trailing blanks stripped
    default_delivery: bool = False  # no file and dash empty: ~qmail/rc's default delivery
    bounce: bool = False  # no file and dash non-empty: "Sorry, no mailbox here by that name."

    @property
    def instructions(self) -> list[tuple[str, str]]:
        return [instruction(line) for line in self.lines if not line.startswith("#")]


def read_dot_qmail(home: str, dash: str, ext: str) -> tuple[str | None, list[str]]:
    """The first existing regular candidate file (by name) and its lines, as qmail-local chooses."""
    for name in dot_qmail_candidates(dash, ext):
        path = os.path.join(home, name)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        if st.st_mode & 0o002:
            raise LspawnExit(111, f"{path} is writable (conf-patrn)")
        text = Path(path).read_text()
        lines = [line.rstrip(" \t") for line in text.split("\n")]
        if lines and lines[0] == "" and text != "":
            raise LspawnExit(111, f"first line of {path} is blank")
        return name, [line for line in lines if line]
    return None, []


def route(address: str, qmail_home: str | os.PathLike[str],
          getpw: Callable[[str], tuple[str, int, int, str, str, str]]) -> Delivery | None:
    """qmail-send + qmail-lspawn + qmail-local's file choice for ``address``; None when it is remote.

    ``getpw(local)`` stands for qmail-lspawn's run of qmail-getpw (the tests pass one that runs the
    installed program); it returns the six fields or raises :class:`LspawnExit`.
    """
    control = Path(qmail_home) / "control"
    locals_ = control_lines(control / "locals")
    if locals_ is None:
        locals_ = control_lines(control / "me") or []
    vd_path = control / "virtualdomains"
    virtualdomains = parse_virtualdomains(vd_path.read_text()) if vd_path.exists() else {}
    local = rewrite(address, locals_, virtualdomains)
    if local is None:
        return None
    if local == "":
        raise LspawnExit(0, "trash address")
    cdb_path = Path(qmail_home) / "users" / "cdb"
    found = lspawn_lookup(Cdb.open(cdb_path), local) if cdb_path.exists() else None
    source = "users/cdb"
    if found is None:
        found = getpw(local)
        source = "qmail-getpw"
    user, uid, gid, home, dash, ext = found
    if uid == 0:
        raise LspawnExit(113, "delivery as root")
    name, lines = read_dot_qmail(home, dash, ext)
    empty = name is not None and os.path.getsize(os.path.join(home, name)) == 0  # 0 bytes: default
    return Delivery(address, local, source, user, uid, gid, home, dash, ext, name, lines,
                    default_delivery=(name is None and dash == "") or empty,
                    bounce=name is None and dash != "")
