"""vchkpw on the qmail-mysql ``mailbox`` table: the installed program with a real fd 3, the recorder as
the program it execs, the session's MariaDB, homes owned by 800:100 (the FAQ's popuser:users).

password_type: ``Password`` (clear), ``Crypt-Password`` (crypt(3)), ``MySQL-Password`` (both PASSWORD()
formats, either case) -- configuration page of the patch, qmail-mysql-and-vmail-sql.md §1.4.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from helpers import fd3_payload
from hypothesis import given, settings
from hypothesis import strategies as st
from passlib import hash as ph
from qmysql import (
    POPUSER_UID,
    USERS_GID,
    QmailMysqlTree,
    empty_tables,
    getpw_fields,
    sqlserver_text,
)
from tree import REMOTE_IP
from vpop.passwords import mysql41_hash, mysql323_hash, mysql_password_verify

VECTORS = [
    ("password", "5d2e19393cc5ef67", "*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19"),
    ("MariaDB42!", "0732aa4d6a3a72a8", "*07A469684341365CDFBADCAEF5FCD6B57F881A9A"),
]


# ------------------------------------------------------------------------------------------------
# The PASSWORD() hashes, against the published vectors, passlib and the server itself


@pytest.mark.parametrize(("password", "old", "new"), VECTORS)
def test_mysql_hash_vectors(password: str, old: str, new: str) -> None:
    assert mysql323_hash(password.encode()) == old == ph.mysql323.hash(password)
    assert mysql41_hash(password.encode()) == new == ph.mysql41.hash(password)
    for stored in (old, old.upper(), new, new.lower(), f" {new} "):
        assert mysql_password_verify(password.encode(), stored), stored
        assert not mysql_password_verify(b"not-" + password.encode(), stored), stored


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=0, max_size=40))
def test_mysql_hashes_agree_with_passlib(password: str) -> None:
    raw = password.encode()
    assert mysql323_hash(raw) == ph.mysql323.hash(password)
    assert mysql41_hash(raw) == ph.mysql41.hash(password)
    assert ph.mysql323.verify(password, mysql323_hash(raw))
    assert ph.mysql41.verify(password, mysql41_hash(raw))


def test_mysql323_ignores_blanks() -> None:
    # MySQL's pre-4.1 scramble skips spaces and tabs (its documented weakness).
    assert mysql323_hash(b"pass word") == mysql323_hash(b"password") == mysql323_hash(b"pass\tword")
    assert mysql_password_verify(b"pass word", VECTORS[0][1])


@pytest.mark.parametrize("stored", ["", "5d2e19393cc5ef6", "5d2e19393cc5ef67a",
                                    "2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19",
                                    "*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E1", "password"])
def test_mysql_password_verify_refuses_other_shapes(stored: str) -> None:
    assert not mysql_password_verify(b"password", stored)


# ------------------------------------------------------------------------------------------------
# vchkpw


@pytest.fixture
def site(qmail_db: dict[str, Any]) -> Iterator[QmailMysqlTree]:
    """mailbox: dmp (Password flibble, the configuration page's example) and bob@example.com."""
    empty_tables(qmail_db)
    with QmailMysqlTree(qmail_db) as t:
        t.dmp = t.home("mail/dmp")
        t.mailbox("dmp", POPUSER_UID, USERS_GID, t.dmp, "flibble", "Password")
        t.bob = t.home("mail/example.com/bob", uid=801, gid=101)
        t.mailbox("bob@example.com", 801, 101, t.bob, "bobpw", "Password")
        yield t


def pop(login: str, password: str) -> bytes:
    return fd3_payload(login, password, b"<4242.1700000000@mail.example.com>")


def accepted(site: QmailMysqlTree, login: str, password: str) -> dict[str, Any]:
    done, record = site.login(pop(login, password))
    assert done.returncode == 0 and record is not None, done
    return record


def refused(site: QmailMysqlTree, login: str, password: str, code: int = 1) -> None:
    done, record = site.login(pop(login, password))
    assert done.returncode == code and record is None, done


def test_login_success_runs_as_the_row(site: QmailMysqlTree) -> None:
    record = accepted(site, "dmp", "flibble")
    # POP as root: setgid/setgroups/setuid to the row's ids before the exec.
    assert (record["uid"], record["euid"], record["gid"], record["egid"], record["groups"]) == (
        800, 800, 100, 100, [100])
    assert record["cwd"] == site.dmp
    env = record["env"]
    assert (env["USER"], env["HOME"], env["SHELL"]) == ("dmp", site.dmp, "NOLOGIN")
    assert "VPOPUSER" not in env  # not a vpopmail domain user
    assert record["argv"][0] == site.recorder
    assert site.syslog_lines() == [f"vchkpw-pop3: (PLAIN) login success dmp@:{REMOTE_IP}"]


def test_login_as_user_at_domain_row(site: QmailMysqlTree) -> None:
    record = accepted(site, "bob@example.com", "bobpw")
    assert (record["uid"], record["gid"], record["cwd"]) == (801, 101, site.bob)
    assert (record["env"]["USER"], record["env"]["HOME"]) == ("bob@example.com", site.bob)
    record = accepted(site, "Bob@Example.COM", "bobpw")  # logins are matched in lower case
    assert record["env"]["USER"] == "bob@example.com"
    site.syslog_lines()
    refused(site, "bob", "bobpw")  # the bare name is another login
    assert site.syslog_lines() == [f"vchkpw-pop3: vpopmail user not found bob@:{REMOTE_IP}"]


DOVECOT = {"ORIG_UID": "0", "SERVICE": "imap", "TCPLOCALPORT": "10143"}  # Dovecot's checkpassword driver


@pytest.mark.parametrize("login", ["b\u00f6b@example.com", "B\u00d6B@example.com",
                                   "bob@ex\u00e4mple.com", "b\u00f3b@EXAMPLE.COM", "j\u00f6e", "J\u00d6E",
                                   "zoe"])
@pytest.mark.parametrize("dovecot", [False, True])
def test_names_are_not_matched_through_the_collation(site: QmailMysqlTree, login: str, dovecot: bool) -> None:
    """utf8mb4_general_ci takes jöe and JÖE for joe, zoe for zoë: none of them logs in as the row (under
    Dovecot that would also rename the session to the row's USER)."""
    password = "joepw" if "j" in login.lower() else "zoepw" if "z" in login else "bobpw"
    site.mailbox("joe", POPUSER_UID, USERS_GID, site.home("mail/joe"), "joepw", "Password")
    site.mailbox("zo\u00eb", POPUSER_UID, USERS_GID, site.home("mail/zoe"), "zoepw", "Password")
    done, record = site.login(pop(login, password), **(DOVECOT if dovecot else {}))
    assert (done.returncode, record) == (1, None), done
    lines = site.syslog_lines()
    assert len(lines) == 1 and "vpopmail user not found" in lines[0], lines


@pytest.mark.parametrize("dovecot", [False, True])
def test_exact_names_and_ascii_case_log_in(site: QmailMysqlTree, dovecot: bool) -> None:
    site.mailbox("zo\u00eb", POPUSER_UID, USERS_GID, site.home("mail/zoe"), "zoepw", "Password")
    site.mailbox("Carol", POPUSER_UID, USERS_GID, site.home("mail/carol"), "carolpw", "Password")
    for login, password, user in (("zo\u00eb", "zoepw", "zo\u00eb"), ("ZO\u00eb", "zoepw", "zo\u00eb"),
                                  ("DMP", "flibble", "dmp"), ("carol", "carolpw", "Carol")):
        done, record = site.login(pop(login, password), **(DOVECOT if dovecot else {}))
        assert done.returncode == 0 and record is not None, (login, done)
        assert record["env"]["USER"] == user  # the account's own name
    site.syslog_lines()


def test_bare_login_is_not_qualified(site: QmailMysqlTree) -> None:
    refused(site, "dmp@example.com", "flibble")
    assert site.syslog_lines() == [f"vchkpw-pop3: vpopmail user not found dmp@example.com:{REMOTE_IP}"]


def test_wrong_password(site: QmailMysqlTree) -> None:
    for password in ("Flibble", "flibble ", "flib", "x" * 200):
        refused(site, "dmp", password)
    assert site.syslog_lines() == [f"vchkpw-pop3: password fail dmp@:{REMOTE_IP}"] * 4


def test_unknown_login(site: QmailMysqlTree) -> None:
    refused(site, "nobody", "flibble")
    assert site.syslog_lines() == [f"vchkpw-pop3: vpopmail user not found nobody@:{REMOTE_IP}"]


# (password_type, stored value, the right password)
KINDS = [
    ("Password", "flibble", "flibble"),
    ("Crypt-Password", ph.md5_crypt.hash("md5-secret"), "md5-secret"),
    ("Crypt-Password", ph.des_crypt.hash("des-pw"), "des-pw"),
    ("Crypt-Password", ph.sha512_crypt.hash("sha-secret"), "sha-secret"),
    *[("MySQL-Password", stored, password) for password, old, new in VECTORS
      for stored in (old, old.upper(), new, new.lower())],
]


@pytest.mark.parametrize(("kind", "stored", "password"), KINDS,
                         ids=["plain", "md5-crypt", "des-crypt", "sha512-crypt",
                              *[f"{p}-{f}" for p, *_ in VECTORS for f in ("323", "323UP", "41", "41low")]])
def test_password_types(site: QmailMysqlTree, kind: str, stored: str, password: str) -> None:
    home = site.home("mail/typed")
    site.mailbox("typed", POPUSER_UID, USERS_GID, home, stored, kind)
    record = accepted(site, "typed", password)
    assert (record["uid"], record["gid"], record["cwd"], record["env"]["HOME"]) == (800, 100, home, home)
    refused(site, "typed", password + "x")
    refused(site, "typed", password.upper() if password != password.upper() else password.lower())
    lines = site.syslog_lines()
    assert lines == [f"vchkpw-pop3: (PLAIN) login success typed@:{REMOTE_IP}"] + [
        f"vchkpw-pop3: password fail typed@:{REMOTE_IP}"] * 2


def test_hashes_made_by_the_server(site: QmailMysqlTree) -> None:
    """Rows filled the way the configuration page recommends: the server's own PASSWORD()."""
    for name, function in (("new", "PASSWORD"), ("old", "OLD_PASSWORD")):
        site.sql(f"INSERT INTO mailbox (username, uid, gid, home, password, password_type) "
                 f"VALUES (%s, 800, 100, %s, {function}(%s), 'MySQL-Password')",
                 (name, site.home(f"mail/{name}"), "Server's 0wn pw"))
    stored = dict(site.sql("SELECT username, password FROM mailbox WHERE username IN ('new', 'old')"))
    assert stored == {"new": mysql41_hash(b"Server's 0wn pw"), "old": mysql323_hash(b"Server's 0wn pw")}
    for name in ("new", "old"):
        assert accepted(site, name, "Server's 0wn pw")["env"]["USER"] == name
        refused(site, name, "Server's 0wn pw!")


def test_crypt_type_does_not_take_the_clear_text(site: QmailMysqlTree) -> None:
    hashed = ph.md5_crypt.hash("secret")
    site.mailbox("crypted", POPUSER_UID, USERS_GID, site.home("mail/crypted"), hashed, "Crypt-Password")
    refused(site, "crypted", hashed)  # the hash itself is not a password
    site.mailbox("mysqled", POPUSER_UID, USERS_GID, site.home("mail/mysqled"), VECTORS[0][2],
                 "MySQL-Password")
    refused(site, "mysqled", VECTORS[0][2])
    site.mailbox("clear", POPUSER_UID, USERS_GID, site.home("mail/clear"), VECTORS[0][2], "Password")
    refused(site, "clear", "password")  # a clear-text row does not hash the login password


@pytest.mark.parametrize("kind", ["SHA-Password", "password", "", "Crypt"])
def test_unknown_password_type_is_refused_and_logged(site: QmailMysqlTree, kind: str) -> None:
    site.mailbox("odd", POPUSER_UID, USERS_GID, site.home("mail/odd"), "flibble", kind)
    refused(site, "odd", "flibble")
    lines = site.syslog_lines()
    assert len(lines) == 1 and f"unknown password_type {kind!r}" in lines[0] and "odd@" in lines[0], lines


def test_empty_stored_password_is_refused(site: QmailMysqlTree) -> None:
    site.mailbox("empty", POPUSER_UID, USERS_GID, site.home("mail/empty"), "", "Password")
    refused(site, "empty", "anything")
    site.sql("UPDATE mailbox SET password = NULL WHERE username = 'empty'")
    refused(site, "empty", "anything")


def test_suspended_refused_but_mail_still_delivered(site: QmailMysqlTree) -> None:
    site.sql("UPDATE mailbox SET suspended = 'Y' WHERE username = 'dmp'")
    refused(site, "dmp", "flibble")
    assert site.syslog_lines() == [f"vchkpw-pop3: suspended account refused dmp@:{REMOTE_IP}"]
    refused(site, "dmp", "wrong")
    assert site.syslog_lines() == [f"vchkpw-pop3: password fail dmp@:{REMOTE_IP}"]
    # qmail-getpw still finds the suspended user: mail is delivered.
    done = site.getpw("dmp-list")
    assert (done.returncode, done.stdout) == (0, getpw_fields("dmp", 800, 100, site.dmp, "-", "list"))
    site.sql("UPDATE mailbox SET suspended = 'N' WHERE username = 'dmp'")
    accepted(site, "dmp", "flibble")


@pytest.mark.parametrize("tcp", [False, True])
def test_dead_database_is_111_and_nothing_runs(site: QmailMysqlTree, dead_mysql: dict[str, Any],
                                               tcp: bool) -> None:
    site.write_sqlserver(sqlserver_text(dead_mysql, tcp=tcp))
    for login, password in (("dmp", "flibble"), ("nobody", "x")):
        done, record = site.login(pop(login, password))
        assert done.returncode == 111 and record is None, done
        lines = site.syslog_lines()
        assert len(lines) == 1 and "database" in lines[0] and f"{login}@:{REMOTE_IP}" in lines[0], lines


def test_missing_mailbox_table_is_111(site: QmailMysqlTree) -> None:
    site.sql("DROP TABLE mailbox")
    done, record = site.login(pop("dmp", "flibble"))
    assert done.returncode == 111 and record is None
