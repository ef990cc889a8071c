"""vchkpw under Dovecot 2.3: a real Dovecot with ``passdb { driver = checkpassword }`` runs the
installed vchkpw for IMAP and POP3 logins (imaplib, poplib), and Dovecot's lookup protocol
(``AUTHORIZED=1``) is exercised directly with a real fd 3.

Dovecot hands the program no environment of its own; ``import_environment`` passes VPOP_CONFIG.
The userdb is ``prefetch``: the mail uid/gid (89) come from vchkpw's ``EXTRA=userdb_uid userdb_gid``.
"""

from __future__ import annotations

import imaplib
import os
import poplib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import fd3_payload, program, wait_for_log
from tree import Tree, read_record

PASSWORD = "secret"
MESSAGE = b"From: a@example.net\r\nTo: bob@example.com\r\nSubject: hello\r\n\r\nbody\r\n"


@pytest.fixture(scope="module")
def dovecot_tree(dovecot_factory: Callable[..., dict[str, Any]]) -> Iterator[tuple[Tree, dict[str, Any]]]:
    """One tree (example.com, uid/gid 89) and one Dovecot for the module (a stop costs ~1 s)."""
    with Tree(logging="y") as tree:
        tree.add_domain("example.com")
        tree.add_user("example.com", "bob", PASSWORD)
        tree.add_user("example.com", "carol", "carol-pw")
        tree.add_user("example.com", "dave", "dave-pw")
        tree.write_etc("defaultdomain", "example.com\n")
        server = dovecot_factory(program("vchkpw"), import_env={"VPOP_CONFIG": str(tree.config)})
        try:
            yield tree, server
        finally:
            server["stop"]()


@pytest.fixture
def tree(dovecot_tree: tuple[Tree, dict[str, Any]]) -> Tree:
    tree, _server = dovecot_tree
    tree.syslog_lines()  # forget earlier tests' lines
    return tree


@pytest.fixture
def server(dovecot_tree: tuple[Tree, dict[str, Any]]) -> dict[str, Any]:
    return dovecot_tree[1]


def user_dir(tree: Tree, name: str) -> Path:
    return tree.domain_dir("example.com") / name


def put_message(tree: Tree, name: str) -> None:
    """Deliver one message into the user's Maildir/new as vdelivermail would (owner 89)."""
    new = user_dir(tree, name) / "Maildir" / "new"
    path = new / f"{time.time_ns()}.test.{name}"
    path.write_bytes(MESSAGE)
    os.chown(path, 89, 89)


def test_imap_login(tree: Tree, server: dict[str, Any]) -> None:
    put_message(tree, "bob")
    imap = imaplib.IMAP4("127.0.0.1", server["imap_port"])
    try:
        typ, _ = imap.login("bob@example.com", PASSWORD)
        assert typ == "OK"
        typ, data = imap.select("INBOX")
        assert typ == "OK" and data == [b"1"]
        typ, data = imap.fetch("1", "(BODY[HEADER.FIELDS (SUBJECT)])")
        assert typ == "OK" and b"Subject: hello" in data[0][1]
    finally:
        imap.logout()
    # Dovecot worked in the vpopmail user's Maildir, as uid 89.
    maildir = user_dir(tree, "bob") / "Maildir"
    uidlist = maildir / "dovecot-uidlist"
    assert uidlist.exists()
    assert (uidlist.stat().st_uid, uidlist.stat().st_gid) == (89, 89)
    assert any("login success bob@example.com:127.0.0.1" in line for line in tree.syslog_lines())


def test_pop3_login(tree: Tree, server: dict[str, Any]) -> None:
    put_message(tree, "carol")
    pop = poplib.POP3("127.0.0.1", server["pop3_port"])
    try:
        pop.user("carol@example.com")
        assert pop.pass_("carol-pw").startswith(b"+OK")
        count, size = pop.stat()
        assert count == 1 and size == len(MESSAGE)
    finally:
        pop.quit()
    assert (user_dir(tree, "carol") / "Maildir" / "dovecot-uidlist").exists()


def test_bare_login_keeps_the_full_address(tree: Tree, server: dict[str, Any]) -> None:
    # etc/defaultdomain completes "dave"; Dovecot must see dave@example.com, not a renamed "dave".
    imap = imaplib.IMAP4("127.0.0.1", server["imap_port"])
    try:
        typ, _ = imap.login("dave", "dave-pw")
        assert typ == "OK"
        assert imap.select("INBOX")[0] == "OK"
    finally:
        imap.logout()
    log = wait_for_log(server["log"], "user=<dave@example.com>")
    assert "Login: user=<dave@example.com>" in log
    assert "user=<dave>" not in log


def test_imap_wrong_password(tree: Tree, server: dict[str, Any]) -> None:
    imap = imaplib.IMAP4("127.0.0.1", server["imap_port"])
    try:
        with pytest.raises(imaplib.IMAP4.error) as failed:
            imap.login("bob@example.com", "wrong")
    finally:
        imap.logout()
    assert "[AUTHENTICATIONFAILED]" in str(failed.value)
    assert any("password fail bob@example.com:127.0.0.1" in line for line in tree.syslog_lines())


def test_pop3_wrong_password(tree: Tree, server: dict[str, Any]) -> None:
    pop = poplib.POP3("127.0.0.1", server["pop3_port"])
    try:
        pop.user("bob@example.com")
        with pytest.raises(poplib.error_proto) as failed:
            pop.pass_("wrong")
    finally:
        pop.close()
    assert str(failed.value).startswith("b'-ERR [AUTH]")


def test_imap_unknown_user(tree: Tree, server: dict[str, Any]) -> None:
    imap = imaplib.IMAP4("127.0.0.1", server["imap_port"])
    try:
        with pytest.raises(imaplib.IMAP4.error) as failed:
            imap.login("nobody@example.com", PASSWORD)
    finally:
        imap.logout()
    assert "[AUTHENTICATIONFAILED]" in str(failed.value)


# ------------------------------------------------------------------------------------------------
# Dovecot's side of the protocol, driven directly


def dovecot_env(tree: Tree, **extra: str) -> dict[str, str]:
    """What Dovecot 2.3's checkpassword driver sets (no PATH, no HOME)."""
    env = {"VPOP_CONFIG": str(tree.config), "PROTO": "TCP", "ORIG_UID": "0", "SERVICE": "imap",
           "TCPLOCALIP": "127.0.0.1", "TCPLOCALPORT": "10143", "TCPREMOTEIP": "192.0.2.10",
           "TCPREMOTEPORT": "50000", "AUTH_USER": "bob@example.com", "AUTH_SERVICE": "imap"}
    env.update(extra)
    return env


def run(tree: Tree, fd3: bytes, env: dict[str, str]) -> tuple[Any, dict[str, Any] | None]:
    out = tree.record_path()
    done = tree.run([program("vchkpw"), tree.recorder, str(out)], fd3, env)
    return done, read_record(out)


def test_userdb_lookup_existing_user(tree: Tree) -> None:
    done, record = run(tree, b"bob@example.com\0\0\0", dovecot_env(tree, AUTHORIZED="1"))
    assert done.returncode == 0, done.stderr
    assert record is not None
    env = record["env"]
    assert env["AUTHORIZED"] == "2"
    assert env["USER"] == "bob@example.com"
    assert env["HOME"] == str(user_dir(tree, "bob"))
    assert {"userdb_uid", "userdb_gid"} <= set(env["EXTRA"].split())
    assert (env["userdb_uid"], env["userdb_gid"]) == ("89", "89")
    assert record["uid"] == 0, "no setuid under Dovecot: checkpassword-reply refuses that"


def test_userdb_lookup_bare_name(tree: Tree) -> None:
    done, record = run(tree, b"carol\0\0\0", dovecot_env(tree, AUTHORIZED="1"))
    assert done.returncode == 0, done.stderr
    assert record["env"]["USER"] == "carol@example.com"


@pytest.mark.parametrize("login", [b"nobody@example.com", b"bob@nowhere.test"])
def test_userdb_lookup_unknown_user(tree: Tree, login: bytes) -> None:
    done, record = run(tree, login + b"\0\0\0", dovecot_env(tree, AUTHORIZED="1"))
    assert done.returncode == 3
    assert record is None


def test_authorized_with_a_password_still_checks_it(tree: Tree) -> None:
    done, record = run(tree, b"bob@example.com\0wrong\0\0", dovecot_env(tree, AUTHORIZED="1"))
    assert (done.returncode, record) == (1, None)


def test_authorized_without_orig_uid_is_not_a_lookup(tree: Tree) -> None:
    # Not Dovecot (no ORIG_UID): AUTHORIZED means nothing, an empty password is refused.
    env = dovecot_env(tree, AUTHORIZED="1")
    del env["ORIG_UID"]
    done, record = run(tree, b"bob@example.com\0\0\0", env)
    assert (done.returncode, record) == (1, None)


def test_userdb_lookup_keeps_extra(tree: Tree) -> None:
    done, record = run(tree, b"bob@example.com\0\0\0",
                       dovecot_env(tree, AUTHORIZED="1", EXTRA="userdb_mail", userdb_mail="maildir:~/M"))
    assert done.returncode == 0, done.stderr
    assert record["env"]["EXTRA"].split() == ["userdb_mail", "userdb_uid", "userdb_gid"]


def test_passdb_request_under_dovecot(tree: Tree) -> None:
    done, record = run(tree, fd3_payload("bob@example.com", PASSWORD), dovecot_env(tree))
    assert done.returncode == 0, done.stderr
    env = record["env"]
    assert record["uid"] == 0 and "AUTHORIZED" not in env
    assert env["USER"] == "bob@example.com" and env["userdb_uid"] == "89"
    assert record["cwd"] == str(user_dir(tree, "bob"))
    done, record = run(tree, fd3_payload("bob@example.com", "wrong"), dovecot_env(tree))
    assert done.returncode == 1 and record is None
    # a lookup-less request with an empty password is a null password, not a login
    done, record = run(tree, b"bob@example.com\0\0\0", dovecot_env(tree))
    assert done.returncode == 1 and record is None
