"""Virtual domains as qmail knows them: ``users/cdb`` (compiled ``users/assign``).

vpopmail writes ``+D-:D:U:G:P:-::`` for a domain D and ``+A-:D:U:G:P:-::`` for an alias
domain A of D; ``vget_assign`` looks up the key ``!domain-`` and takes the user field as
the real domain.  When ``users/cdb`` is missing we read ``users/assign`` itself (the C code
would answer "no such domain"); a read error other than "missing" is a temporary failure.
"""

import posix

from vpop.errors import TemporaryFailure

#: records found in users/cdb, by (path, key): (the file's identity when read, the record).  A
#: process that resolves many domains (vlookupd) reads the cdb once per change of the file, not
#: once per question; qmail-newu replaces the file by a rename, so a new file is a new identity.
_found: dict[tuple[str, bytes], tuple[tuple, bytes]] = {}
_FOUND_LIMIT = 4096


class Domain:
    """A domain as resolved through users/assign: ``name`` as asked, ``real`` after aliases."""

    __slots__ = ("name", "real", "uid", "gid", "dir")

    def __init__(self, name: str, real: str, uid: int, gid: int, dir: str) -> None:
        self.name = name
        self.real = real
        self.uid = uid
        self.gid = gid
        self.dir = dir

    def __repr__(self) -> str:
        return f"<Domain {self.name}->{self.real} {self.uid}:{self.gid} {self.dir}>"


def _from_fields(name: str, fields: list[bytes], source: str) -> Domain:
    """A domain from its users/cdb record or users/assign line; a damaged one is 111, naming the file."""
    from vpop.numbers import UID_MAX, ascii_number

    if len(fields) < 4:
        raise TemporaryFailure(f"{source}: damaged entry for {name}: {len(fields)} fields, not 4 or more")
    uid, gid = ascii_number(fields[1], UID_MAX), ascii_number(fields[2], UID_MAX)
    if uid is None or gid is None:
        raise TemporaryFailure(f"{source}: damaged entry for {name}: uid and gid must be numbers "
                               f"from 0 to {UID_MAX}")
    try:
        real = fields[0].decode()
    except UnicodeDecodeError:
        raise TemporaryFailure(f"{source}: damaged entry for {name}: the user is not UTF-8") from None
    return Domain(name, real.lower(), uid, gid, fields[3].decode("utf-8", "surrogateescape"))


def lookup(qmail_home: str, domain: str) -> Domain | None:
    """Resolve ``domain`` (lower case) through users/cdb, else users/assign; None if unknown."""
    key = ("!" + domain + "-").encode()
    path = qmail_home + "/users/cdb"
    identity = _identity(path)
    known = _found.get((path, key))
    if identity is not None and known is not None and known[0] == identity:
        return _from_fields(domain, known[1].split(b"\0"), path)
    from vpop.files import cdb_get

    try:
        value = cdb_get(path, key)
    except FileNotFoundError:
        return _lookup_assign(qmail_home + "/users/assign", domain)
    if value is None:
        return None  # never remembered: a domain added a moment ago is found at once
    if identity is not None:
        if len(_found) >= _FOUND_LIMIT:
            _found.clear()
        # stat before the read: if the file was replaced in between, the record is the newer
        # file's under the older identity, and the next lookup reads again
        _found[(path, key)] = (identity, value)
    return _from_fields(domain, value.split(b"\0"), path)


def _identity(path: str) -> tuple | None:
    try:
        st = posix.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _lookup_assign(path: str, domain: str) -> Domain | None:
    try:
        with open(path, "rb") as handle:
            text = handle.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise TemporaryFailure(f"cannot read {path}: {exc.strerror}") from None
    wanted = ("+" + domain + "-:").encode()
    for line in text.split(b"\n"):
        if line.startswith(b"."):
            break
        if line.lower().startswith(wanted):
            return _from_fields(domain, line[len(wanted):].split(b":"), path)
    return None


def compile_assign(text: bytes, path: str = "users/assign") -> list[tuple[bytes, bytes]]:
    """qmail-newu's records for users/assign text: [(key, data)] with the wildchars record last.

    ``=local:user:uid:gid:home:dash:ext:`` -> key ``!local\\0``;
    ``+loc:user:uid:gid:home:dash:pre:`` -> key ``!loc`` and ``loc``'s last character joins
    the wildchars set stored under the empty key.  Data = the six fields joined by NUL.
    Raises ConfigError (qmail-newu's "bad format in users/assign") on a malformed line.
    """
    from vpop.errors import ConfigError

    records: list[tuple[bytes, bytes]] = []
    wildchars = bytearray()
    lines = text.split(b"\n")
    for number, line in enumerate(lines, 1):
        if line.startswith(b"."):
            break
        if number == len(lines):
            raise ConfigError(path, number, "bad format in users/assign: missing final '.' line")
        fields = line[1:].split(b":")
        if len(fields) < 8:
            raise ConfigError(path, number, "bad format in users/assign: fewer than seven ':'")
        local, data = fields[0], b"\0".join(fields[1:7])
        if not fields[1]:
            raise ConfigError(path, number, "bad format in users/assign: empty user")
        if line.startswith(b"+"):
            records.append((b"!" + local.lower(), data))
            if local and local[-1:] not in wildchars:
                wildchars += local[-1:]
        else:
            records.append((b"!" + local.lower() + b"\0", data))
    else:
        raise ConfigError(path, len(lines), "bad format in users/assign: missing final '.' line")
    records.append((b"", bytes(wildchars)))
    return records


def write_users_cdb(qmail_home: str) -> None:
    """Compile users/assign into users/cdb atomically, as qmail-newu does."""
    from vpop.files import write_cdb

    users = qmail_home + "/users"
    with open(users + "/assign", "rb") as handle:
        records = compile_assign(handle.read(), users + "/assign")
    write_cdb(users + "/cdb", records)
