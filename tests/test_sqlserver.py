"""qmail-mysql's control/sqlserver: the parser (vpop.credentials.parse_sqlserver) and the file as the
installed programs read it (real MariaDB, real modes, real syslog socket).

The patch accepted ``key value`` (one space) or ``key=value``; the FAQ calls the parser "pants" and
asks for tabs, several spaces, comments and so on.  We accept all of that (issue 4).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import fd3_payload
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from qmysql import POPUSER_UID, USERS_GID, QmailMysqlTree, empty_tables, getpw_fields, sqlserver_text
from syslogrecord import SEVERITY
from tree import REMOTE_IP, Tree
from vpop.credentials import (
    Server,
    parse_sqlserver,
    parse_sqlserver_pair,
    parse_vpopmail_mysql,
    read_sqlserver,
)
from vpop.errors import ConfigError

PATH = "/var/qmail/control/sqlserver"
BASIC = {"host": "localhost", "user": "qmail", "password": "s3cret", "database": "qmail"}


def fields(server: Server) -> dict[str, Any]:
    return {"host": server.host, "port": server.port, "socket": server.socket, "user": server.user,
            "password": server.password, "database": server.database}


def parse(text: str) -> dict[str, Any]:
    server = parse_sqlserver(text, PATH)
    assert server.origin == PATH
    return fields(server)


def error(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_sqlserver(text, PATH)
    assert info.value.path == PATH
    assert str(info.value) == info.value.message
    return info.value


# ------------------------------------------------------------------------------------------------
# Accepted forms


@pytest.mark.parametrize("text", [
    # The patch's two documented forms.
    "server localhost\nlogin qmail\npassword s3cret\ndb qmail\n",
    "server=localhost\nlogin=qmail\npassword=s3cret\ndb=qmail\n",
    # What the patch wrongly refused.
    "server\tlocalhost\nlogin\t\tqmail\npassword \t s3cret\ndb\tqmail\n",
    "server    localhost\nlogin  qmail\npassword   s3cret\ndb     qmail\n",
    "server = localhost\nlogin= qmail\npassword =s3cret\ndb\t=\tqmail\n",
    "# qmail's database\n\nserver localhost\n   # indented comment\nlogin qmail\n\n\npassword s3cret\n"
    "db qmail\n#",
    "server localhost\r\nlogin qmail\r\npassword s3cret\r\ndb qmail\r\n",
    "server localhost  \nlogin qmail\t\npassword s3cret \t \ndb qmail   \n",
    "  server localhost\n\tlogin qmail\n password s3cret\n\t db qmail",  # leading blanks; no final newline
    "SERVER localhost\nLogin qmail\nPassword s3cret\nDB qmail\n",  # keys in any case
    "db qmail\npassword s3cret\nlogin qmail\nserver localhost\n",  # any order
    "\n\n \t \nserver localhost\n \nlogin qmail\n\t\npassword s3cret\ndb qmail\n\n",  # blank lines
    "server localhost\r\n\r\n# comment\r\nlogin\tqmail \r\npassword = s3cret\r\ndb=qmail\r\n",  # all at once
], ids=["space", "equals", "tabs", "spaces", "spaced-equals", "comments", "crlf", "trailing", "leading",
        "key-case", "order", "blank-lines", "mixed"])
def test_accepted_forms(text: str) -> None:
    assert parse(text) == {**BASIC, "port": 3306, "socket": None}


def test_port_and_socket() -> None:
    base = "server db.example.com\nlogin qmail\npassword s3cret\ndb qmail\n"
    assert parse(base + "port 3309\n")["port"] == 3309
    assert parse(base + "port=3309\r\n")["port"] == 3309
    assert parse(base + "port\t65535 \n")["port"] == 65535
    got = parse(base + "socket /tmp/mysql.sock\n")
    assert (got["socket"], got["port"], got["host"]) == ("/tmp/mysql.sock", 3306, "db.example.com")
    assert parse(base + "socket = /run/mysqld/mysqld.sock  \n")["socket"] == "/run/mysqld/mysqld.sock"


def test_password_values() -> None:
    base = "server localhost\nlogin qmail\ndb qmail\n"
    assert parse(base + "password two words\n")["password"] == "two words"  # inner blanks are kept
    assert parse(base + "password a=b#c d\n")["password"] == "a=b#c d"  # '=' and '#' inside are data
    assert parse(base + "password=#hash\n")["password"] == "#hash"
    assert parse(base + "password==x\n")["password"] == "=x"
    assert parse(base + "password\n")["password"] == ""  # an empty password is a password
    assert parse(base + "password=\n")["password"] == ""
    assert parse(base)["password"] == ""  # no password line: empty password


def test_repr_never_shows_the_password() -> None:
    server = parse_sqlserver("server h\nlogin u\npassword Zq9-very-secret\ndb d\n", PATH)
    assert "Zq9-very-secret" not in repr(server)


# ------------------------------------------------------------------------------------------------
# Refused forms: clear messages naming the file and line


def test_port_and_socket_together() -> None:
    text = "server localhost\nlogin qmail\npassword s3cret\ndb qmail\nport 3306\nsocket /tmp/mysql.sock\n"
    exc = error(text)
    assert exc.line in (5, 6)
    assert exc.message.startswith(f"{PATH}:{exc.line}: ")
    assert "port" in exc.message and "socket" in exc.message and "exclusive" in exc.message
    exc = error("socket /tmp/mysql.sock\n" + text.replace("socket /tmp/mysql.sock\n", ""))
    assert exc.line in (1, 6) and exc.message.startswith(f"{PATH}:{exc.line}: ")


@pytest.mark.parametrize(("text", "line", "words"), [
    ("server localhost\nuser qmail\npassword p\ndb qmail\n", 2, ["unknown key", "login"]),
    ("server localhost\nlogin qmail\npassword p\ndb qmail\nhost x\n", 5, ["unknown key"]),
    ("server localhost\nlogin qmail\npassword p\ndb qmail\ndatabase x\n", 5, ["unknown key"]),
    ("server localhost\nlogin qmail\npassword p\ndb qmail\nserver other\n", 5, ["server", "twice"]),
    ("server\nlogin qmail\npassword p\ndb qmail\n", 1, ["server", "no value"]),
    ("server localhost\nlogin =\npassword p\ndb qmail\n", 2, ["login", "no value"]),
    ("server localhost\nlogin qmail\npassword p\ndb qmail\nport 0\n", 5, ["port"]),
    ("server localhost\nlogin qmail\npassword p\ndb qmail\nport 65536\n", 5, ["port"]),
    ("server localhost\nlogin qmail\npassword p\ndb qmail\nport 33o6\n", 5, ["port"]),
    ("server localhost\nlogin qmail\npassword p\ndb qmail\nsocket tmp/my.sock\n", 5, ["socket", "absolute"]),
])
def test_refused_lines(text: str, line: int, words: list[str]) -> None:
    exc = error(text)
    assert exc.line == line
    assert exc.message.startswith(f"{PATH}:{line}: ")
    for word in words:
        assert word in exc.message
    assert "password p" not in exc.message


def test_unknown_key_is_named_unless_it_may_hold_a_password() -> None:
    base = "server localhost\nlogin qmail\ndb qmail\n"
    assert "unknown key 'user'" in error(base + "user qmail\n").message
    for line in ("password:hunter2", "password\vhunter2", "passwordhunter2", "pass-hunter2", "passwd hunter2",
                 "password\u00a0hunter2"):
        exc = error(base + line + "\n")
        assert exc.line == 4 and "unknown key" in exc.message and "hunter2" not in exc.message, exc.message


@pytest.mark.parametrize("missing", ["server", "login", "db"])
def test_missing_required_key(missing: str) -> None:
    lines = {"server": "server localhost", "login": "login qmail", "password": "password p", "db": "db qmail"}
    del lines[missing]
    exc = error("\n".join(lines.values()) + "\n")
    assert exc.line is None
    assert exc.message == f"{PATH}: missing '{missing}' line"


def test_empty_file() -> None:
    assert "missing 'server' line" in error("").message
    assert "missing 'server' line" in error("# nothing here\n\n").message


# ------------------------------------------------------------------------------------------------
# What the MySQL driver cannot send: refused with the file and line (PyMySQL sends the password as
# Latin-1, the user and database as UTF-8; it raised UnicodeEncodeError at connect time)

NOT_LATIN1 = "p\u20acss"  # p€ss


def assert_unsendable_password(text: str, path: str, line: int) -> None:
    """``text`` (a message the program gave) names path:line and says why, without the password."""
    assert f"{path}:{line}: the password cannot be sent by the MySQL driver" in text, text
    assert NOT_LATIN1 not in text and "\u20ac" not in text, text


@pytest.mark.parametrize("password", [NOT_LATIN1, "\u0100", "pass\U0001f511", "zq9\ufeff"])
def test_password_outside_latin1_is_refused(password: str) -> None:
    exc = error(f"server localhost\nlogin qmail\n\n# the password\npassword {password}\ndb qmail\n")
    assert exc.line == 5
    assert_unsendable_password(exc.message, PATH, 5)
    assert password not in exc.message and password not in repr(exc)


def test_latin1_password_is_kept() -> None:
    text = "server localhost\nlogin qmail\npassword p\u00e4ss\u00ff\ndb qmail\n"
    assert parse(text)["password"] == "p\u00e4ss\u00ff"  # sent as Latin-1, as the driver does


def test_bytes_that_are_not_utf8(tmp_path: Path) -> None:
    """A file in Latin-1 (byte 0xE4): the password cannot be sent; a login or db cannot be either."""
    path = tmp_path / "sqlserver"
    path.write_bytes(b"server localhost\nlogin qmail\npassword p\xe4ss\ndb qmail\n")
    with pytest.raises(ConfigError) as info:
        read_sqlserver(str(path))
    assert info.value.line == 3
    assert_unsendable_password(info.value.message, str(path), 3)
    for key, line in (("login", 2), ("db", 4), ("server", 1)):
        lines = [b"server localhost", b"login qmail", b"password secret", b"db qmail"]
        lines[line - 1] = key.encode() + b" q\xe4m"
        path.write_bytes(b"\n".join(lines) + b"\n")
        with pytest.raises(ConfigError) as info:
            read_sqlserver(str(path))
        assert (info.value.line, info.value.message) == (line, f"{path}:{line}: the {key} is not valid UTF-8")


def test_vpopmail_mysql_password_outside_latin1() -> None:
    path = "/home/vpopmail/etc/vpopmail.mysql"
    update = f"db2|3306|writer|{NOT_LATIN1}|vpopmail\n"
    for text, line in ((f"localhost|0|vpopmail|{NOT_LATIN1}|vpopmail\n", 1),
                       ("# read\nlocalhost|0|vpopmail|secret|vpopmail\n" + update, 3)):
        with pytest.raises(ConfigError) as info:
            parse_vpopmail_mysql(text, path)
        assert info.value.line == line
        assert_unsendable_password(info.value.message, path, line)
    with pytest.raises(ConfigError) as info:
        parse_vpopmail_mysql("localhost|0|vp\udce4|secret|vpopmail\n", path)
    assert info.value.message == f"{path}:1: the user is not valid UTF-8"


# ------------------------------------------------------------------------------------------------
# Properties: whatever the text, a Server or a ConfigError -- and the password never in a message

SECRET = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zs", "Zl", "Zp")), min_size=1, max_size=20)
LINES = st.lists(st.text(max_size=30), max_size=8)
# Separators after "password": the good ones and typos that make the line unparseable.
SEPARATORS = st.sampled_from([" ", "\t", "=", " = ", "  \t", ":", ": ", "\v", "\f", "\u00a0", "-", "",
                              "\r", "#", "\x00"])


@settings(max_examples=300, deadline=None)
@given(before=LINES, after=LINES, secret=SECRET, separator=SEPARATORS, eol=st.sampled_from(["\n", "\r\n"]))
def test_password_never_in_a_message(before: list[str], after: list[str], secret: str, separator: str,
                                     eol: str) -> None:
    secret = "zq9" + secret  # a value no message text or key name could contain by chance
    others = "\n".join(before + after)
    assume(secret.lower() not in others.lower() and "\n" not in separator + secret)
    text = eol.join([*before, "password" + separator + secret, *after]) + eol
    try:
        server = parse_sqlserver(text, PATH)
    except ConfigError as exc:
        # Not even lower-cased (keys are shown lower-cased).
        for shown in (exc.message, repr(exc), str(exc.args)):
            assert secret.lower() not in shown.lower()
    else:
        assert isinstance(server, Server)
        assert secret not in repr(server)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_text(text: str) -> None:
    try:
        server = parse_sqlserver(text, PATH)
    except ConfigError as exc:
        assert exc.path == PATH and exc.message.startswith(PATH)
    else:
        assert server.host and server.user and server.database
        assert server.socket is None or server.socket.startswith("/")
        assert 0 < server.port < 65536


VALUE = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zs", "Zl", "Zp")), min_size=1, max_size=12
                ).filter(lambda v: not v.startswith(("=", "#")))
# What the driver can send as a password: Latin-1 (see test_password_outside_latin1_is_refused).
LATIN1_VALUE = VALUE.filter(lambda v: max(map(ord, v)) < 256)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(host=VALUE, user=VALUE, password=LATIN1_VALUE, database=VALUE, port=st.integers(1, 65535),
       seps=st.lists(st.sampled_from([" ", "\t", "=", " = ", "  ", "\t=", "= "]), min_size=5, max_size=5),
       eol=st.sampled_from(["\n", "\r\n"]), pad=st.sampled_from(["", " ", "\t", " \t "]),
       extra=st.lists(st.sampled_from(["", "# comment", "   ", "\t# x y z"]), min_size=5, max_size=5),
       order=st.permutations(range(5)))
def test_well_formed_files_round_trip(host: str, user: str, password: str, database: str, port: int,
                                      seps: list[str], eol: str, pad: str, extra: list[str],
                                      order: list[int]) -> None:
    pairs = [("server", host), ("login", user), ("password", password), ("db", database), ("port", str(port))]
    lines = []
    for index in order:
        key, value = pairs[index]
        lines += [extra[index], f"{pad}{key}{seps[index]}{value}{pad}"]
    got = parse(eol.join(lines) + eol)
    assert got == {"host": host, "user": user, "password": password, "database": database, "port": port,
                   "socket": None}


# ------------------------------------------------------------------------------------------------
# The file as the programs read it


@pytest.fixture
def site(qmail_db: dict[str, Any]) -> Iterator[QmailMysqlTree]:
    """iain (800:100, Password 'flibble') in mailbox; control/sqlserver 0640."""
    empty_tables(qmail_db)
    with QmailMysqlTree(qmail_db) as t:
        t.iain = t.home("home/mail/iain")
        t.mailbox("iain", POPUSER_UID, USERS_GID, t.iain, "flibble", "Password")
        yield t


def test_read_sqlserver_unreadable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        read_sqlserver(str(tmp_path / "sqlserver"))
    assert info.value.path == str(tmp_path / "sqlserver") and "cannot read" in info.value.message


def test_programs_read_every_form(site: QmailMysqlTree, qmail_db: dict[str, Any]) -> None:
    db = qmail_db
    expected = getpw_fields("iain", 800, 100, site.iain, "-", "x")
    forms = [
        f"# qmail-mysql\r\n\r\nserver\tlocalhost\r\nlogin = {db['user']}\r\npassword={db['password']}  \r\n"
        f"db   {db['database']}\r\nsocket {db['unix_socket']}\r\n",
        f"server=127.0.0.1\nlogin={db['user']}\npassword={db['password']}\ndb={db['database']}\n"
        f"port={db['port']}\n",
        # "localhost" without a socket line means the default socket (libmysqlclient's rule).
        f"server localhost\nlogin {db['user']}\npassword {db['password']}\ndb {db['database']}\n",
    ]
    site.write_settings(mysql_default_socket=db["unix_socket"])
    for text in forms:
        site.write_sqlserver(text)
        done = site.getpw("iain-x")
        assert (done.returncode, done.stdout) == (0, expected), (text, done)
    site.write_sqlserver(forms[0] + "port 3306\n")  # now both port and socket
    done = site.getpw("iain-x")
    assert (done.returncode, done.stdout) == (111, b"")


def login(site: QmailMysqlTree, password: str = "flibble") -> tuple[Any, Any]:
    return site.login(fd3_payload("iain", password, b"<1.2@x>"))


def test_world_readable_warning_with_vchkpw(site: QmailMysqlTree) -> None:
    done, record = login(site)
    assert done.returncode == 0 and record is not None
    assert site.syslog_lines() == [f"vchkpw-pop3: (PLAIN) login success iain@:{REMOTE_IP}"]
    os.chmod(site.sqlserver, 0o644)
    for _ in range(2):  # once per run, every run
        done, record = login(site)
        assert done.returncode == 0 and record is not None
        records = site.syslog_parsed()
        warnings = [r.message for r in records if r.severity == SEVERITY["warning"]]
        assert len(warnings) == 1 and len(records) == 2, records
        assert str(site.sqlserver) in warnings[0] and "chmod 640" in warnings[0]
        assert "readable by every local user" in warnings[0]
    os.chmod(site.sqlserver, 0o640)
    login(site)
    assert not any(str(site.sqlserver) in line for line in site.syslog_lines())


def test_world_readable_refused_by_vchkpw(site: QmailMysqlTree) -> None:
    site.write_settings(sqlserver_world_readable="refuse")
    done, record = login(site)
    assert done.returncode == 0 and record is not None
    site.syslog_lines()
    os.chmod(site.sqlserver, 0o644)
    done, record = login(site)
    assert done.returncode == 111 and record is None
    lines = site.syslog_lines()
    assert len(lines) == 1 and str(site.sqlserver) in lines[0] and "refused" in lines[0], lines
    assert b"world-readable" in done.stderr
    done, record = login(site, "wrong")  # refused before any password is looked at
    assert done.returncode == 111 and record is None


def test_sqlserver_error_in_vchkpw_is_111(site: QmailMysqlTree) -> None:
    site.write_sqlserver("server localhost\nlogin x\ndb y\nsocket /tmp/x.sock\nport 1\n")
    done, record = login(site)
    assert done.returncode == 111 and record is None
    assert str(site.sqlserver).encode() in done.stderr and b"exclusive" in done.stderr
    site.sqlserver.unlink()
    done, record = login(site)
    assert done.returncode == 111 and record is None


# ------------------------------------------------------------------------------------------------
# A password the driver cannot send, as each program meets it: 111 and the file and line


def test_unsendable_password_qmail_getpw(site: QmailMysqlTree, qmail_db: dict[str, Any]) -> None:
    site.write_sqlserver(sqlserver_text({**qmail_db, "password": NOT_LATIN1}))  # line 3
    site.syslog_records()
    for local in ("iain", "nobody"):
        done = site.getpw(local)
        assert (done.returncode, done.stdout, done.stderr) == (111, b"", b""), done  # was exit 1: a bounce
        (record,) = site.syslog_parsed()  # stderr is closed under qmail-lspawn: syslog says why
        assert record.severity == SEVERITY["err"] and record.message.endswith(", deferred"), record
        assert_unsendable_password(record.message, str(site.sqlserver), 3)


def test_unsendable_password_qmail_mysql_sync(site: QmailMysqlTree, qmail_db: dict[str, Any]) -> None:
    site.write_sqlserver(sqlserver_text({**qmail_db, "password": NOT_LATIN1}))
    done = site.sync()
    assert done.returncode == 111 and done.stdout == "", done
    assert "Traceback" not in done.stderr
    assert_unsendable_password(done.stderr, str(site.sqlserver), 3)
    assert not (site.qmail_home / "users" / "assign").exists()


def test_unsendable_password_vchkpw_qmail_mysql(site: QmailMysqlTree, qmail_db: dict[str, Any]) -> None:
    site.write_sqlserver(sqlserver_text({**qmail_db, "password": NOT_LATIN1}))
    done, record = login(site)
    assert done.returncode == 111 and record is None
    assert_unsendable_password(done.stderr.decode(), str(site.sqlserver), 3)


@pytest.fixture
def vpopmail_tree() -> Iterator[Tree]:
    """example.com in users/assign; the MySQL credentials files hold a password the driver cannot send."""
    with Tree() as t:
        t.add_domain("example.com")
        t.write_etc("vpopmail.mysql", f"# read\nlocalhost|0|vpopmail|{NOT_LATIN1}|vpopmail\n", mode=0o644)
        t.write_etc("vmail-sql.mysql", f"localhost|0|vmail|{NOT_LATIN1}|vmail\n", mode=0o644)
        yield t


@pytest.mark.parametrize(("store", "name", "line"), [("mysql", "vpopmail.mysql", 2),
                                                      ("vmail-sql", "vmail-sql.mysql", 1)])
def test_unsendable_password_vchkpw_and_vdelivermail(vpopmail_tree: Tree, store: str, name: str,
                                                     line: int) -> None:
    tree = vpopmail_tree
    tree.write_settings(store=store)
    path = str(tree.etc / name)
    done, record = tree.login(fd3_payload("bob@example.com", "secret", b"<1.2@x>"))
    assert done.returncode == 111 and record is None
    assert_unsendable_password(done.stderr.decode(), path, line)
    done = tree.deliver("bob@example.com", b"Subject: hi\n\nhello\n", domain_dir=tree.domains)
    assert done.returncode == 111, done
    assert_unsendable_password(done.stdout.decode(), path, line)  # qmail-local logs vdelivermail's stdout


# ------------------------------------------------------------------------------------------------
# A primary beside a local replica: the update_ keys (our addition)


def test_without_update_keys_one_server_does_both() -> None:
    read, update = parse_sqlserver_pair("server h\nlogin u\npassword p\ndb d\n", PATH)
    assert update is read


def test_update_keys_name_the_primary_and_the_rest_is_inherited() -> None:
    read, update = parse_sqlserver_pair("server replica\nlogin u\npassword p\ndb d\nport 3307\n"
                                        "update_server primary\nupdate_password other pass\n", PATH)
    assert fields(read) == {"host": "replica", "port": 3307, "socket": None, "user": "u", "password": "p",
                            "database": "d"}
    assert fields(update) == {"host": "primary", "port": 3307, "socket": None, "user": "u",
                              "password": "other pass", "database": "d"}


def test_update_socket_replaces_the_read_port() -> None:
    _read, update = parse_sqlserver_pair("server localhost\nlogin u\ndb d\nport 3307\n"
                                         "update_socket /run/p.sock\nupdate_login w\nupdate_db e\n", PATH)
    assert (update.socket, update.user, update.database, update.password) == ("/run/p.sock", "w", "e", "")


@pytest.mark.parametrize(("text", "message"), [
    ("update_port 1\nupdate_socket /s\n", "'update_port' and 'update_socket' are mutually exclusive"),
    ("update_port 99999\n", "'update_port' must be a number from 1 to 65535"),
    ("update_socket relative\n", "'update_socket' must be an absolute path"),
    ("update_server\n", "'update_server' has no value"),
    ("update_bogus x\n", "unknown key 'update_bogus'"),
])
def test_bad_update_keys(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_sqlserver_pair("server h\nlogin u\ndb d\n" + text, PATH)
    assert message in info.value.message
