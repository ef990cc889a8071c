"""Database credentials files in their historic formats.

``vpopmail.mysql`` (vpopmail's ``~vpopmail/etc/vpopmail.mysql``): ``#`` lines and blank
lines are skipped; the first remaining line is the *read* server, an optional second line
the *update* server, each ``host|port-or-socket|user|password|database``.  A second field
starting with ``/`` is a unix socket; otherwise a TCP port, ``0`` meaning the default.

Unlike vpopmail (which tokenises with ``strtok`` and so silently shifts fields when one
is empty), fields are split exactly at ``|``: an empty password is a valid password.
Passwords never appear in an error message.
"""

from vpop.errors import ConfigError

DEFAULT_PORT = 3306


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
    """Read and parse a vpopmail.mysql-style file; unreadable -> ConfigError (111)."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as handle:
            text = handle.read(65536)
    except OSError as exc:
        raise ConfigError(path, None, f"cannot read credentials: {exc.strerror}") from None
    return parse_vpopmail_mysql(text, path)
