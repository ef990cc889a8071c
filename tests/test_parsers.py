"""Property tests (hypothesis) of the parsers that read untrusted or operator-written input:
fd 3 (vchkpw.main.split_fd3), the settings file (vpop.config.parse_settings) and vpopmail.mysql
(vpop.credentials.parse_vpopmail_mysql).  No subprocess: these call the functions directly.
"""

from __future__ import annotations

import re

from hypothesis import example, given, settings
from hypothesis import strategies as st
from vpop.config import Settings, parse_settings
from vpop.credentials import DEFAULT_PORT, parse_vpopmail_mysql
from vpop.errors import ConfigError

from vchkpw.main import split_fd3

SETTINGS_PATH = "/etc/vpop/test.conf"
MYSQL_PATH = "/home/vpopmail/etc/vpopmail.mysql"

# ------------------------------------------------------------------------------------------------
# fd 3


@given(st.binary(max_size=700))
@example(b"")
@example(b"\0")
@example(b"\0\0")
@example(b"user\0pass")
@example(b"user\0pass\0ts\0extra\0more")
def test_split_fd3_any_bytes(data: bytes) -> None:
    """Each field ends at a NUL or at the end of the data (vpopmail); nothing raises."""
    login, password, timestamp = split_fd3(data)
    assert all(b"\0" not in f for f in (login, password, timestamp))
    nuls = data.count(b"\0")
    if nuls == 0:
        assert (login, password, timestamp) == (data, b"", b"")
    elif nuls == 1:
        assert (login + b"\0" + password, timestamp) == (data, b"")
    else:
        assert data.startswith(login + b"\0" + password + b"\0" + timestamp)
        assert data[len(login) + len(password) + len(timestamp) + 2:][:1] in (b"", b"\0")


no_nul = st.binary(max_size=200).filter(lambda b: b"\0" not in b)


@given(no_nul, no_nul, no_nul, st.binary(max_size=50))
def test_split_fd3_returns_the_fields(login: bytes, password: bytes, timestamp: bytes, rest: bytes) -> None:
    data = login + b"\0" + password + b"\0" + timestamp + b"\0" + rest
    assert split_fd3(data) == (login, password, timestamp)
    # the timestamp's NUL is optional (djb's checkpassword does not require it)
    assert split_fd3(login + b"\0" + password + b"\0" + timestamp) == (login, password, timestamp)


# ------------------------------------------------------------------------------------------------
# Settings

# The keys the issue documents, with generators of valid values and the value each should parse to.
BOOL = st.sampled_from(["yes", "no", "Yes", "NO", "yEs"]).map(lambda t: (t, t.lower() == "yes"))
SAFE_TEXT = st.text(
    st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), max_size=30
).filter(lambda t: t == t.strip())
PATH = st.tuples(st.text("abcxyz019._-/ ", max_size=30), st.sampled_from("abz09_/")).map(
    lambda p: ("/" + p[0] + p[1],) * 2)
NUMBER = st.integers(0, 999_999_999).map(lambda n: (str(n), n))


def choice(*values: str) -> st.SearchStrategy[tuple[str, str]]:
    return st.sampled_from(values).map(lambda v: (v, v))


VALID = {
    "vpopmail_home": PATH,
    "qmail_home": PATH,
    "store": choice("cdb", "mysql"),
    "logging": choice("n", "e", "y", "p", "v"),
    "log_name": SAFE_TEXT.map(lambda t: (t, t)),
    "syslog_socket": PATH,
    "auth_logging": BOOL,
    "clear_passwords": BOOL,
    "many_domains": BOOL,
    "ip_alias_domains": BOOL,
    "roaming_users": BOOL,
    "relay_clear_minutes": NUMBER,
    "exit_codes": choice("checkpassword", "vpopmail"),
    "tcp_file": PATH,
    "mysql_credentials": PATH,
    "mysql_limits": BOOL,
    "mysql_connect_timeout": NUMBER,
    "mysql_query_timeout": NUMBER,
    "rehash_on_login": BOOL,
    "vpopmaild_timeout": st.integers(1, 999_999_999).map(lambda n: (str(n), n)),
    "vpopmaild_service": choice("webmail", "pop", "imap", "smtp"),
}
PAD = st.sampled_from(["", " ", "\t", "  ", " \t "])
JUNK_LINE = st.one_of(
    st.just(""),
    st.sampled_from(["   ", "\t", "# comment", "#key = value", "  # indented comment"]),
    st.text(max_size=20).map(lambda t: "#" + t.replace("\n", " ")),
)


@st.composite
def settings_file(draw: st.DrawFn) -> tuple[str, dict[str, object]]:
    keys = draw(st.lists(st.sampled_from(sorted(VALID)), unique=True))
    lines: list[str] = []
    expected: dict[str, object] = {}
    for key in keys:
        lines.extend(draw(st.lists(JUNK_LINE, max_size=2)))
        text, value = draw(VALID[key])
        lines.append(f"{draw(PAD)}{key}{draw(PAD)}={draw(PAD)}{text}{draw(PAD)}")
        expected[key] = value
    lines.extend(draw(st.lists(JUNK_LINE, max_size=2)))
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    return newline.join(lines) + draw(st.sampled_from(["", newline])), expected


@given(settings_file())
def test_valid_settings_round_trip(case: tuple[str, dict[str, object]]) -> None:
    text, expected = case
    parsed = parse_settings(text, SETTINGS_PATH)
    defaults = Settings()
    for key in VALID:
        if key in expected:
            assert getattr(parsed, key) == expected[key], key
        elif key not in ("tcp_file", "mysql_credentials"):  # derived from vpopmail_home
            assert getattr(parsed, key) == getattr(defaults, key), key
    home = expected.get("vpopmail_home", "/home/vpopmail")
    assert parsed.tcp_file == expected.get("tcp_file", f"{home}/etc/tcp.smtp")
    assert parsed.mysql_credentials == expected.get("mysql_credentials", f"{home}/etc/vpopmail.mysql")


def test_empty_settings_are_vpopmail_defaults() -> None:
    parsed = parse_settings("", SETTINGS_PATH)
    assert (parsed.vpopmail_home, parsed.qmail_home, parsed.store, parsed.logging, parsed.log_name) == (
        "/home/vpopmail", "/var/qmail", "cdb", "e", "vpopmail")
    assert (parsed.auth_logging, parsed.clear_passwords, parsed.many_domains) == (True, True, True)
    assert (parsed.ip_alias_domains, parsed.roaming_users, parsed.relay_clear_minutes) == (False, False, 180)
    assert parsed.exit_codes == "checkpassword"


SETTINGS_LINE = st.one_of(
    st.text(max_size=40),
    st.tuples(st.sampled_from([*VALID, "frobnicate", ""]), PAD, st.text(max_size=20)).map(
        lambda t: f"{t[0]}{t[1]}={t[2]}"),
    st.tuples(st.sampled_from(sorted(VALID)),
              st.sampled_from(["yes", "no", "/x", "12", "y", "cdb", "", "-1", "²", "٣", "1e3"])).map(
        lambda t: f"{t[0]} = {t[1]}"),
    JUNK_LINE,
)


def _line_number(message: str, path: str) -> int:
    assert message.startswith(path + ":"), message
    match = re.match(r"(\d+):", message[len(path) + 1:])
    assert match, message
    return int(match.group(1))


@given(st.one_of(st.text(max_size=300), st.lists(SETTINGS_LINE, max_size=8).map("\n".join)))
@example("a = b\rlogging = x")
@example("logging = y\x1clogging = x")
@example("\u2028frobnicate = 1")
@settings(max_examples=300)
def test_parse_settings_any_text(text: str) -> None:
    try:
        parsed = parse_settings(text, SETTINGS_PATH)
    except ConfigError as exc:
        number = _line_number(exc.message, SETTINGS_PATH)
        # the line an editor (or sed -n Np) shows: lines are separated by \n only
        assert 1 <= number <= text.count("\n") + 1, (number, text)
        assert exc.exit_code == 111
    else:
        assert isinstance(parsed, Settings)


# ------------------------------------------------------------------------------------------------
# vpopmail.mysql

# Passwords are drawn from characters no error message or field of the other generators contains,
# so "the message shows no part of a password" is checked character by character.
SECRET_CHARS = "ÆØÅæøå§¤"
SECRET = st.text(SECRET_CHARS + "|", min_size=1, max_size=12)
HOST = st.sampled_from(["localhost", "db.example.com", "127.0.0.1", "", " "])
WHERE = st.sampled_from(["0", "", "3306", "/run/mysqld/mysqld.sock", "port", "99999", "-1", " 12 ", "/"])
USER = st.sampled_from(["vpopmail", "", "u"])
DB = st.sampled_from(["vpopmail", "", "mail db"])


@st.composite
def credentials_line(draw: st.DrawFn) -> str:
    fields = [draw(HOST), draw(WHERE), draw(USER), draw(SECRET), draw(DB)]
    shape = draw(st.sampled_from(["ok", "drop", "extra"]))
    if shape == "drop":
        del fields[draw(st.integers(0, 4))]
    elif shape == "extra":
        fields.insert(draw(st.integers(0, 5)), draw(st.sampled_from(["x", "", "3306"])))
    return "|".join(fields)


# vpopmail skips lines that begin with '#' and empty lines (an indented '#' is not a comment there).
MYSQL_JUNK = st.sampled_from(["", "# comment", "#|||", "#localhost|0|u|p|db"])
CREDENTIALS_FILE = st.lists(st.one_of(credentials_line(), MYSQL_JUNK), max_size=5).map("\n".join)


@given(CREDENTIALS_FILE)
@settings(max_examples=300)
def test_vpopmail_mysql_never_shows_a_password(text: str) -> None:
    try:
        read, update = parse_vpopmail_mysql(text, MYSQL_PATH)
    except ConfigError as exc:
        assert exc.message.startswith(MYSQL_PATH)
        assert not set(exc.message) & set(SECRET_CHARS), exc.message
        assert not set(str(exc)) & set(SECRET_CHARS)
        if exc.line is not None:
            assert 1 <= exc.line <= text.count("\n") + 1
    else:
        for server in (read, update):
            # The password may coincide with a shown field (user, host, database): strip those first.
            shown = repr(server)
            for field in (server.user, server.host, server.database, server.socket or "", server.origin):
                if field:
                    shown = shown.replace(field, "")
            assert not server.password or server.password not in shown


@given(st.text(max_size=300))
@example("#only a comment\n\n")
@example("a|b|c|d|e\nf|g|h|i|j\nk|l|m|n|o")
def test_vpopmail_mysql_any_text(text: str) -> None:
    try:
        servers = parse_vpopmail_mysql(text, MYSQL_PATH)
    except ConfigError as exc:
        assert exc.message.startswith(MYSQL_PATH)
        assert exc.exit_code == 111
    else:
        assert len(servers) == 2


NAME = st.text("abcdefghijklmnopqrstuvwxyz0123456789._-", min_size=1, max_size=20)
# Latin-1: what the MySQL driver can send (tests/test_sqlserver.py: the refusal of the rest).
PASSWORD = st.text(st.characters(blacklist_characters="|\n\r", blacklist_categories=("Cs",),
                                 max_codepoint=255), max_size=20)


@given(NAME, st.one_of(st.integers(0, 65535).map(str), st.just(""), NAME.map(lambda n: "/run/" + n)),
       NAME, PASSWORD, NAME, st.lists(MYSQL_JUNK, max_size=3), st.booleans())
def test_vpopmail_mysql_round_trip(host: str, where: str, user: str, password: str, database: str,
                                   junk: list[str], second: bool) -> None:
    line = f"{host}|{where}|{user}|{password}|{database}"
    other = "update.example.com|3307|writer|w-pass|vpopmail"
    text = "\n".join([*junk, line, *junk, *([other] if second else [])]) + "\n"
    read, update = parse_vpopmail_mysql(text, MYSQL_PATH)
    assert (read.host, read.user, read.password, read.database) == (host, user, password, database)
    if where.startswith("/"):
        assert read.socket == where
    else:
        assert read.socket is None
        assert read.port == (int(where) if where not in ("", "0") else DEFAULT_PORT)
    if second:
        assert (update.host, update.port, update.user, update.password) == (
            "update.example.com", 3307, "writer", "w-pass")
    else:
        assert update is read


def test_vpopmail_mysql_examples() -> None:
    text = "# vpopmail.mysql\n\nlocalhost|0|vpopmail|s3cret|vpopmail\n"
    read, update = parse_vpopmail_mysql(text, MYSQL_PATH)
    assert read is update
    assert (read.host, read.port, read.socket, read.user, read.password, read.database) == (
        "localhost", DEFAULT_PORT, None, "vpopmail", "s3cret", "vpopmail")
    # an empty password is a password (vpopmail's strtok would have shifted the fields)
    read, _ = parse_vpopmail_mysql("localhost|/run/mysqld/mysqld.sock|vpopmail||vpopmail\n", MYSQL_PATH)
    assert (read.socket, read.password, read.database) == ("/run/mysqld/mysqld.sock", "", "vpopmail")
