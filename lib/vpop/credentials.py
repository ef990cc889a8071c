"""Database credentials files in their historic formats.

``vpopmail.mysql`` (vpopmail's ``~vpopmail/etc/vpopmail.mysql``): ``#`` lines and blank
lines are skipped; the first remaining line is the *read* server, an optional second line
the *update* server, each ``host|port-or-socket|user|password|database``.  A second field
starting with ``/`` is a unix socket; otherwise a TCP port, ``0`` meaning the default.

Unlike vpopmail (which tokenises with ``strtok`` and so silently shifts fields when one
is empty), fields are split exactly at ``|``: an empty password is a valid password.
Passwords never appear in an error message.

What the driver cannot send is refused here, with the file and line, rather than as a
``UnicodeEncodeError`` at connect time: PyMySQL sends the password as Latin-1 and the
user, database and host as UTF-8, so a password such as ``p\u20acss`` (or any byte that
is not UTF-8, which reaches us as a surrogate) cannot reach the server.
"""

from vpop.errors import ConfigError

DEFAULT_PORT = 3306


def check_password(path: str, number: int | None, password: str) -> None:
    """ConfigError unless PyMySQL can send the password (as Latin-1); the password is never shown."""
    try:
        password.encode("latin-1")
    except UnicodeEncodeError:
        raise ConfigError(path, number, "the password cannot be sent by the MySQL driver (it sends "
                                        "passwords as Latin-1; this file is read as UTF-8): "
                                        "use an ASCII password") from None


def check_utf8(path: str, number: int | None, name: str, value: str) -> None:
    """ConfigError unless ``value`` (user, database or host) is valid UTF-8 text."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError(path, number, f"the {name} is not valid UTF-8") from None


class Server:
    """Where and how to connect: one line of a credentials file."""

    __slots__ = ("host", "port", "socket", "user", "password", "database", "origin")

    def __init__(self, host: str, port: int, socket: str | None, user: str, password: str,
                 database: str, origin: str = "") -> None:
        self.host = host
        self.port = port
        self.socket = socket
        self.user = user
        self.password = password
        self.database = database
        self.origin = origin

    def __repr__(self) -> str:  # never show the password
        where = self.socket or f"{self.host}:{self.port}"
        return f"<Server {self.user}@{where}/{self.database} from {self.origin}>"


def parse_server_line(line: str, path: str, number: int) -> Server:
    """Parse one ``host|port-or-socket|user|password|database`` line."""
    fields = line.split("|")
    if len(fields) != 5:
        raise ConfigError(path, number, f"expected 5 fields host|port-or-socket|user|password|database, "
                                        f"found {len(fields)}")
    host, where, user, password, database = fields
    if not host or not user or not database:
        raise ConfigError(path, number, "host, user and database must not be empty")
    socket = None
    port = DEFAULT_PORT
    where = where.strip()
    if where.startswith("/"):
        socket = where
    elif where == "":
        port = DEFAULT_PORT
    elif where.isdigit():
        port = int(where) or DEFAULT_PORT
        if port > 65535:
            raise ConfigError(path, number, "port out of range")
    else:
        raise ConfigError(path, number, "second field must be a port number or a socket path")
    check_password(path, number, password)
    for name, value in (("host", host), ("user", user), ("database", database)):
        check_utf8(path, number, name, value)
    return Server(host.strip(), port, socket, user, password, database.strip(), f"{path}:{number}")


def parse_vpopmail_mysql(text: str, path: str) -> tuple[Server, Server]:
    """Return (read server, update server); the update server defaults to the read one."""
    servers: list[Server] = []
    for number, raw in enumerate(text.split("\n"), 1):
        line = raw.rstrip("\r")
        if not line.strip() or line.startswith("#"):
            continue
        if len(servers) == 2:
            raise ConfigError(path, number, "more than two server lines (read, update)")
        servers.append(parse_server_line(line, path, number))
    if not servers:
        raise ConfigError(path, None, "no server line")
    return servers[0], servers[-1]


def read_vpopmail_mysql(path: str) -> tuple[Server, Server]:
    """Read and parse a vpopmail.mysql-style file; unreadable -> ConfigError (111).

    A link, FIFO or foreign file there is a :class:`vpop.files.FileProblem` (also 111) naming it.
    """
    import os

    from vpop.files import ANY_OWNER, FileProblem, read_file

    # Root (vchkpw) reads it in ~vpopmail/etc, which the vpopmail uid can write: never through a
    # link, never blocking on a FIFO (vpop.files.UserDir).  The path is a setting: its directory
    # may belong to anyone.
    try:
        data = read_file(path, 65536, ANY_OWNER, truncate=True)
    except FileProblem as exc:
        if exc.reason.startswith("refused"):
            raise  # a planted link or FIFO: a TemporaryFailure the programs log, not a settings typo
        reason = os.strerror(exc.errno) if exc.errno else exc.reason
        raise ConfigError(path, None, f"cannot read credentials: {reason}") from None
    if data is None:
        raise ConfigError(path, None, "cannot read credentials: No such file or directory")
    return parse_vpopmail_mysql(data.decode("utf-8", "surrogateescape"), path)


_SQLSERVER_KEYS = ("server", "login", "password", "db", "port", "socket")
#: the primary of a site whose ``server`` is a local replica (our addition; see parse_sqlserver)
_UPDATE_KEYS = tuple("update_" + key for key in _SQLSERVER_KEYS)


def parse_sqlserver(text: str, path: str) -> Server:
    """The read server of qmail-mysql's ``control/sqlserver`` (see :func:`parse_sqlserver_pair`)."""
    return parse_sqlserver_pair(text, path)[0]


def parse_sqlserver_pair(text: str, path: str) -> tuple[Server, Server]:
    """qmail-mysql's ``control/sqlserver``: (read server, update server).

    Keys ``server``, ``login``, ``password``, ``db`` and one of ``port``/``socket``.  The
    patch accepted exactly one space or one ``=``; we also accept what it wrongly refused:
    tabs, several spaces, blanks around ``=``, ``#`` comments, blank lines, CRLF, trailing
    blanks.  A password keeps inner spaces (everything after the separator, right-trimmed).

    The patch named one server.  A site whose ``server`` is a local replica names its primary
    with ``update_server`` (and, where they differ, ``update_login``, ``update_password``,
    ``update_db``, ``update_port`` or ``update_socket``; the others are taken from the read
    server's keys).  Without any ``update_`` key, one server does both.
    """
    values: dict[str, tuple[str, int]] = {}
    for number, raw in enumerate(text.split("\n"), 1):
        line = raw.rstrip("\r").strip(" \t")
        if not line or line.startswith("#"):
            continue
        key = line
        value = ""
        for i, char in enumerate(line):
            if char in " \t=":
                key = line[:i]
                value = line[i:].lstrip(" \t")
                if value.startswith("=") and char != "=":
                    value = value[1:].lstrip(" \t")
                elif char == "=":
                    value = value[1:].lstrip(" \t")
                break
        key = key.lower()
        if key not in _SQLSERVER_KEYS + _UPDATE_KEYS:
            expected = ", ".join(_SQLSERVER_KEYS) + " (and update_ forms)"
            # Never echo what may be a password run into its key ("password:secret").
            shown = f" '{key}'" if len(key) <= 20 and key.replace("_", "").isalnum() and key.isascii() \
                and not key.startswith("pass") else ""
            raise ConfigError(path, number, f"unknown key{shown} (expected one of {expected}; "
                                            f"key and value are separated by blanks or '=')")
        if key in values:
            raise ConfigError(path, number, f"'{key}' is given twice")
        if value == "" and not key.endswith("password"):
            raise ConfigError(path, number, f"'{key}' has no value")
        values[key] = (value, number)
    read = _sqlserver_entry(values, "", path, None)
    if not any(key in values for key in _UPDATE_KEYS):
        return read, read
    return read, _sqlserver_entry(values, "update_", path, read)


def _sqlserver_entry(values: dict[str, tuple[str, int]], prefix: str, path: str,
                     fallback: Server | None) -> Server:
    """The :class:`Server` of the ``prefix`` keys; missing ones come from ``fallback``."""
    def given(key: str) -> tuple[str, int] | None:
        return values.get(prefix + key)

    if given("port") and given("socket"):
        raise ConfigError(path, given("socket")[1], f"'{prefix}port' and '{prefix}socket' are mutually "
                                                    "exclusive")
    found: dict[str, str] = {}
    attributes = (("server", "host"), ("login", "user"), ("db", "database"), ("password", "password"))
    for key, attribute in attributes:
        if given(key):
            found[key] = given(key)[0]
        elif fallback is not None:
            found[key] = getattr(fallback, attribute)
        elif key != "password":
            raise ConfigError(path, None, f"missing '{key}' line")
        else:
            found[key] = ""
    port, socket = DEFAULT_PORT, None
    if given("port"):
        text_port, number = given("port")
        if not text_port.isdigit() or not 0 < int(text_port) < 65536:
            raise ConfigError(path, number, f"'{prefix}port' must be a number from 1 to 65535")
        port = int(text_port)
    elif given("socket"):
        socket, number = given("socket")
        if not socket.startswith("/"):
            raise ConfigError(path, number, f"'{prefix}socket' must be an absolute path")
    elif fallback is not None:
        port, socket = fallback.port, fallback.socket
    check_password(path, given("password")[1] if given("password") else None, found["password"])
    for key in ("server", "login", "db"):
        if given(key):
            check_utf8(path, given(key)[1], prefix + key, found[key])
    return Server(found["server"], port, socket, found["login"], found["password"], found["db"], path)


def read_sqlserver(path: str, log=None, fatal_if_world_readable: bool = False) -> tuple[Server, Server]:
    """Read ``control/sqlserver`` (read, update server); warn (or refuse) when "other" may read it
    (the FAQ's complaint)."""
    import os
    import stat

    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise ConfigError(path, None, f"cannot read credentials: {exc.strerror}") from None
    try:
        mode = os.fstat(fd).st_mode
        if mode & stat.S_IROTH:
            text = (f"{path} is readable by every local user and holds the database password; "
                    f"fix: chgrp it to a group of qmaild/qmailp/qmails and chmod 640")
            # Logged in both cases: qmail-getpw runs with stderr closed, so a refusal that is not
            # logged would defer every delivery without a word.
            if fatal_if_world_readable:
                error = ConfigError(path, None, "world-readable (sqlserver_world_readable = refuse)")
                if log is not None:
                    log.send(text + "; refused (sqlserver_world_readable = refuse)", "err")
                    error.logged = True  # the caller need not log it again
                raise error
            if log is not None:
                log.send(text, "warning")
        data = os.read(fd, 65536)
    finally:
        os.close(fd)
    return parse_sqlserver_pair(data.decode("utf-8", "surrogateescape"), path)
