"""Settings: what the C vpopmail fixed at ``./configure`` time, read at run time.

The settings file holds ``key = value`` lines, ``#`` comments and blank lines; values are
not quoted; booleans are ``yes``/``no``.  ``VPOP_CONFIG`` names the file, else
:data:`DEFAULT_PATH`.  A missing file means "all defaults" (vpopmail's own); a line that
does not parse or an unknown key raises :class:`ConfigError` naming file and line.

No ``os`` at import, and :mod:`vpop.errors` and :mod:`vpop.numbers` only when needed (vchkpw's
quick path reads the settings and must not pay for them).
"""

DEFAULT_PATH = "/etc/vpop/vpop.conf"

_BOOL = {"yes": True, "no": False}
_LOGGING_LEVELS = ("n", "e", "y", "p", "v")
_STORES = ("cdb", "mysql", "qmail-mysql", "vmail-sql")
_EXIT_CODES = ("checkpassword", "vpopmail")


def _text(value: str) -> str:
    return value


def _boolean(value: str) -> bool:
    try:
        return _BOOL[value.lower()]
    except KeyError:
        raise ValueError("expected yes or no") from None


def _number(value: str) -> int:
    from vpop.numbers import ascii_number

    number = ascii_number(value, 999_999_999)
    if number is None:
        raise ValueError("expected a whole number (ASCII digits, at most 999999999)")
    return number



def _seconds(value: str) -> int:
    number = _number(value)
    if number < 1:
        raise ValueError("expected a number of seconds, at least 1")
    return number


def _choice(*allowed: str):
    def parse(value: str) -> str:
        if value not in allowed:
            raise ValueError("expected one of " + ", ".join(allowed))
        return value

    return parse


def _policy_scheme(value: str) -> str:
    """One of :data:`vpop.passwords.POLICY_SCHEMES` (imported only when the key is set: a program
    that checks no password through its own code, as vchkpw asking vlookupd, never loads it)."""
    from vpop.passwords import POLICY_SCHEMES

    return _choice(*POLICY_SCHEMES)(value)


def _path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError("expected an absolute path")
    return value


def _paths(value: str) -> tuple[str, ...]:
    return tuple(_path(part) for part in value.split())


_PROCESS_NAME = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def _socket_path(value: str) -> str:
    """``none`` (no lookup daemon) or an absolute path short enough for a unix socket."""
    if value == "none":
        return value
    if len(value.encode()) > 107:
        raise ValueError("a unix socket path has at most 107 bytes")
    return _path(value)


def _users(value: str) -> tuple[str, ...]:
    """Space-separated user names or uids (resolved by the lookup daemon when it starts)."""
    names = tuple(value.split())
    if any(not _PROCESS_NAME.issuperset(name) for name in names):
        raise ValueError("expected user names or numbers separated by spaces")
    return names


def _signal_target(value: str) -> str:
    """``none``, a pid file (an absolute path), or the name of the processes to signal."""
    if value.startswith("/") or value == "none" or (value and _PROCESS_NAME.issuperset(value)):
        return value
    raise ValueError("expected none, an absolute pid file path or a process name")


# key -> (parser, default).  A default of None for a path means "derived" (see Settings).
_KEYS = {
    "vpopmail_home": (_path, "/home/vpopmail"),
    "qmail_home": (_path, "/var/qmail"),
    "domains_dir": (_text, "domains"),
    "user_dir_roots": (_paths, ()),
    "store": (_choice(*_STORES), "cdb"),
    "logging": (_choice(*_LOGGING_LEVELS), "e"),
    "log_name": (_text, "vpopmail"),
    "syslog_socket": (_path, "/dev/log"),
    "auth_logging": (_boolean, True),
    "clear_passwords": (_boolean, True),
    "many_domains": (_boolean, True),
    "ip_alias_domains": (_boolean, False),
    "roaming_users": (_boolean, False),
    "relay_clear_minutes": (_number, 180),
    "tcp_file": (_path, None),
    "rebuild_tcpserver_file": (_boolean, True),
    "exit_codes": (_choice(*_EXIT_CODES), "checkpassword"),
    "password_scheme": (_policy_scheme, "sha512-crypt"),
    "rehash_on_login": (_boolean, False),
    "mysql_credentials": (_path, None),
    "mysql_limits": (_boolean, False),
    "mysql_connect_timeout": (_number, 2),
    "mysql_query_timeout": (_number, 30),
    "mysql_default_socket": (_path, "/run/mysqld/mysqld.sock"),
    # vdelivermail
    "valias": (_boolean, False),
    "qmail_ext": (_boolean, False),
    "quota_small_message_bytes": (_number, 1024),
    "quota_warn_percent": (_number, 90),
    "qmail_inject": (_path, None),
    # the admin commands: how qmail-send learns of a changed virtualdomains (a SIGHUP)
    "qmail_send_signal": (_signal_target, "qmail-send"),
    # vpopmaild: how long it waits for a line, and whose NO_* flag refuses its logins
    "vpopmaild_timeout": (_seconds, 60),
    "vpopmaild_service": (_choice("webmail", "pop", "imap", "smtp"), "webmail"),
    # qmail-mysql
    "sqlserver": (_path, None),
    "sqlserver_world_readable": (_choice("warn", "refuse"), "warn"),
    "getpw_system_users": (_boolean, True),
    "rcpthosts_manual": (_path, None),
    "virtual_prefix": (_text, "qmysql"),
    # vmail-sql
    "vmail_sql_credentials": (_path, None),
    # vlookupd, the shared lookup daemon, and its clients
    "lookup_socket": (_socket_path, "none"),
    "lookup_timeout": (_number, 5),
    "lookup_workers": (_number, 4),
    "lookup_cache_seconds": (_number, 30),
    "lookup_cache_entries": (_number, 10000),
    "lookup_trusted_users": (_users, ("vpopmail",)),
    "lookup_getpw_users": (_users, ("qmailp",)),
}


class Settings:
    """The parsed settings.  Attribute names are the keys of the settings file."""

    vpopmail_home: str
    qmail_home: str
    domains_dir: str
    user_dir_roots: tuple[str, ...]
    store: str
    logging: str
    log_name: str
    syslog_socket: str
    auth_logging: bool
    clear_passwords: bool
    many_domains: bool
    ip_alias_domains: bool
    roaming_users: bool
    relay_clear_minutes: int
    tcp_file: str
    rebuild_tcpserver_file: bool
    exit_codes: str
    password_scheme: str
    rehash_on_login: bool
    mysql_credentials: str
    mysql_limits: bool
    mysql_connect_timeout: int
    mysql_query_timeout: int
    mysql_default_socket: str
    valias: bool
    qmail_ext: bool
    quota_small_message_bytes: int
    quota_warn_percent: int
    qmail_inject: str
    qmail_send_signal: str
    vpopmaild_timeout: int
    vpopmaild_service: str
    sqlserver: str
    sqlserver_world_readable: str
    getpw_system_users: bool
    rcpthosts_manual: str
    virtual_prefix: str
    vmail_sql_credentials: str
    lookup_socket: str
    lookup_timeout: int
    lookup_workers: int
    lookup_cache_seconds: int
    lookup_cache_entries: int
    lookup_trusted_users: tuple[str, ...]
    lookup_getpw_users: tuple[str, ...]

    def __init__(self, values: dict | None = None, path: str = "") -> None:
        self.path = path
        for key, (_parse, default) in _KEYS.items():
            setattr(self, key, default)
        for key, value in (values or {}).items():
            setattr(self, key, value)
        etc = self.vpopmail_home + "/etc"
        if self.tcp_file is None:
            self.tcp_file = etc + "/tcp.smtp"
        if self.qmail_inject is None:
            self.qmail_inject = self.qmail_home + "/bin/qmail-inject"
        if self.sqlserver is None:
            self.sqlserver = self.qmail_home + "/control/sqlserver"
        if self.rcpthosts_manual is None:
            self.rcpthosts_manual = self.qmail_home + "/control/rcpthosts.manual"
        if self.vmail_sql_credentials is None:
            self.vmail_sql_credentials = etc + "/vmail-sql.mysql"
        if self.mysql_credentials is None:
            self.mysql_credentials = etc + "/vpopmail.mysql"

    @property
    def etc_dir(self) -> str:
        return self.vpopmail_home + "/etc"

    @property
    def domains_path(self) -> str:
        """``~vpopmail/domains``: where domain directories and global message files live."""
        return self.vpopmail_home + "/" + self.domains_dir

    def allows_user_dir(self, domain_dir: str, user_dir: str) -> bool:
        """Is ``user_dir`` a place a user directory may be: an absolute path without ``..`` below
        ``~vpopmail/domains``, the domain's own directory or one of ``user_dir_roots``?"""
        if user_dir.startswith("/") and ".." not in user_dir.split("/"):
            for root in (self.domains_path, domain_dir, *self.user_dir_roots):
                if root and user_dir.startswith(root.rstrip("/") + "/"):
                    return True
        return False


def _error(path: str, number: int | None, text: str) -> Exception:
    from vpop.errors import ConfigError

    return ConfigError(path, number, text)


def parse_settings(text: str, path: str) -> Settings:
    """Parse settings text; ``path`` is only used in error messages."""
    values: dict = {}
    # Lines end at \n only: str.splitlines() would also split at \x0b, \x0c, \x1c-\x1e, \x85 and
    # \u2028, breaking comments apart and numbering lines unlike an editor.
    for number, raw in enumerate(text.split("\n"), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            raise _error(path, number, "expected 'key = value'")
        if key not in _KEYS:
            raise _error(path, number, f"unknown setting '{key}'")
        if key in values:
            raise _error(path, number, f"'{key}' is set twice")
        parse = _KEYS[key][0]
        try:
            values[key] = parse(value)
        except ValueError as exc:
            raise _error(path, number, f"bad value for '{key}': {exc}") from None
    return Settings(values, path)


def load_settings(environ: dict | None = None) -> Settings:
    """Read the settings file named by ``VPOP_CONFIG`` (else :data:`DEFAULT_PATH`)."""
    if environ is None:  # the process's own, from posix.environ (os.environ is not imported)
        import posix
        import sys

        named = posix.environ.get(b"VPOP_CONFIG", b"").decode(sys.getfilesystemencoding(), "surrogateescape")
    else:
        named = environ.get("VPOP_CONFIG")
    path = named or DEFAULT_PATH
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        if path != DEFAULT_PATH:
            raise _error(path, None, "settings file not found") from None
        return Settings(None, path)
    except (OSError, UnicodeDecodeError) as exc:
        raise _error(path, None, f"cannot read settings: {exc}") from None
    return parse_settings(text, path)
