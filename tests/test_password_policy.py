"""The password policy: ``password_scheme`` for new hashes, ``rehash_on_login`` upgrading weaker ones.

Real logins through the installed vchkpw (a real fd 3), real vpasswd / vpasswd.cdb files read back,
real rows in the session's MariaDB.  Races are made deterministic by holding the lock the program
must take (the vpasswd lock, the row lock) while the stored hash is changed under it.
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import hmac
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest
from cdblib import Reader
from helpers import VPOPMAIL_GID, VPOPMAIL_UID, fd3_payload, program
from passlib import hash as ph
from tree import REMOTE_IP, Tree, load_schema, mysql_rows, snapshot
from vpop import passwords

PASSWORD = "secret"
WHO = f"bob@example.com:{REMOTE_IP}"
OK_LINE = f"vchkpw-pop3: (PLAIN) login success {WHO}"
MD5 = "$1$"
PREFIX = {"sha512-crypt": "$6$", "yescrypt": "$y$j9T$", "bcrypt": "$2b$12$", "md5-crypt": "$1$"}


def pop(password: str = PASSWORD, timestamp: bytes = b"<4242.1700000000@mail.example.com>") -> bytes:
    return fd3_payload("bob@example.com", password, timestamp)


def rehashed_line(old: str, scheme: str) -> str:
    return f"vchkpw-pop3: password rehashed {old} -> {scheme} {WHO}"


# ------------------------------------------------------------------------------------------------
# The hashes themselves (in-process, against the real libxcrypt)


def _crypt_gensalt(prefix: bytes, count: int, rbytes: bytes) -> str:
    """libxcrypt's own ``crypt_gensalt`` with the given random bytes: the reference format."""
    lib = ctypes.CDLL("libcrypt.so.1")
    gensalt = lib.crypt_gensalt
    gensalt.restype = ctypes.c_char_p
    gensalt.argtypes = [ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_int]
    result = gensalt(prefix, count, rbytes, len(rbytes))
    assert result is not None
    return result.decode()


def test_salt_encodings_match_libxcrypt() -> None:
    for _ in range(50):
        data = secrets.token_bytes(16)
        assert passwords.YESCRYPT_PARAMS + passwords._encode64(data, passwords._ITOA64, True) == \
            _crypt_gensalt(b"$y$", 0, data)  # count 0: libxcrypt's default, Debian's j9T
        assert "$2b$12$" + passwords._encode64(data, passwords._BCRYPT64, False) == \
            _crypt_gensalt(b"$2b$", 12, data)


@pytest.mark.parametrize("scheme", passwords.POLICY_SCHEMES)
def test_new_hash_each_scheme(scheme: str) -> None:
    made = {passwords.new_hash("pässword", scheme) for _ in range(3)}
    assert len(made) == 3  # a fresh salt every time
    for stored in made:
        assert stored.startswith(PREFIX[scheme])
        assert passwords.hash_scheme(stored)[0] == scheme
        assert passwords.verify("pässword".encode(), stored)
        assert not passwords.verify(b"password", stored)
        assert not passwords.weaker_than_policy(stored, scheme)
    if scheme == "sha512-crypt":  # crypt(3)'s default 5000 rounds: no rounds= field
        assert all("rounds=" not in h and len(h.split("$")[2]) == 16 for h in made)
        assert ph.sha512_crypt.verify("pässword", made.pop())  # and passlib agrees
    if scheme == "md5-crypt":
        assert all(len(h.split("$")[2]) == 8 for h in made)
        assert ph.md5_crypt.verify("pässword", made.pop())
    if scheme == "bcrypt":
        assert ph.bcrypt.verify("pässword", made.pop())


def test_new_hash_refuses_nul() -> None:
    with pytest.raises(ValueError):
        passwords.new_hash("a\0b", "sha512-crypt")


def test_strength_order() -> None:
    des, md5 = ph.des_crypt.hash("x"), ph.md5_crypt.hash("x")
    sha256 = ph.sha256_crypt.using(rounds=5000).hash("x")
    sha512, sha512_1000 = (ph.sha512_crypt.using(rounds=r).hash("x") for r in (5000, 1000))
    sha512_more = ph.sha512_crypt.using(rounds=20000).hash("x")
    bcrypt10, bcrypt12 = (ph.bcrypt.using(rounds=r).hash("x") for r in (10, 12))
    yescrypt = passwords.new_hash("x", "yescrypt")
    weaker = {
        "md5-crypt": ["{PLAIN}x", "{SSHA}abcd", des, "{CRYPT}" + des],
        "sha512-crypt": ["{PLAIN}x", "{CLEAR}x", "{MD5}abcd", des, md5, "{MD5-CRYPT}" + md5, sha256,
                         sha512_1000],
        "bcrypt": ["{PLAIN}x", des, md5, sha256, sha512, sha512_more, bcrypt10],
        "yescrypt": ["{PLAIN}x", des, md5, sha256, sha512, sha512_more],
    }
    not_weaker = {
        "md5-crypt": [md5, sha256, sha512, sha512_1000, bcrypt10, yescrypt],
        "sha512-crypt": [sha512, "{SHA512-CRYPT}" + sha512, sha512_more, bcrypt10, bcrypt12, yescrypt],
        "bcrypt": [bcrypt12, yescrypt],
        "yescrypt": [yescrypt, bcrypt10, bcrypt12],
    }
    never = ["", "*", "!" + md5, "{ARGON2}xyz", "$7$abc", "{PLAIN}"[:-1]]
    for scheme in passwords.POLICY_SCHEMES:
        for stored in weaker[scheme]:
            assert passwords.weaker_than_policy(stored, scheme), (scheme, stored)
        for stored in not_weaker[scheme] + never:
            assert not passwords.weaker_than_policy(stored, scheme), (scheme, stored)


# ------------------------------------------------------------------------------------------------
# CDB


def vpasswd_hash(tree: Tree, user: str = "bob") -> tuple[str, str]:
    """bob's hash in vpasswd and in vpasswd.cdb."""
    domain_dir = tree.domain_dir("example.com")
    line = next(entry for entry in (domain_dir / "vpasswd").read_text().split("\n")
                if entry.startswith(user + ":"))
    value = Reader((domain_dir / "vpasswd.cdb").read_bytes()).get(user.encode())
    assert value is not None
    return line.split(":")[1], value.decode().split(":")[0]


def vpasswd_state(tree: Tree) -> tuple[bytes, bytes, int, int]:
    domain_dir = tree.domain_dir("example.com")
    return ((domain_dir / "vpasswd").read_bytes(), (domain_dir / "vpasswd.cdb").read_bytes(),
            (domain_dir / "vpasswd").stat().st_mtime_ns, (domain_dir / "vpasswd.cdb").stat().st_mtime_ns)


@pytest.fixture
def make_tree() -> Iterator[Callable[..., Tree]]:
    """A CDB tree with bob (password ``secret``, the given stored hash; MD5-crypt by default)."""
    trees: list[Tree] = []

    def make(stored: str | None = None, **settings: Any) -> Tree:
        settings.setdefault("rehash_on_login", True)
        tree = Tree(logging="y", **settings)
        trees.append(tree)
        tree.add_domain("example.com")
        tree.bob = tree.add_user("example.com", "bob", PASSWORD, passwd=stored)
        return tree

    yield make
    for tree in trees:
        tree.close()


OLD_FOR_POLICY = {"sha512-crypt": "md5-crypt", "yescrypt": "md5-crypt", "bcrypt": "md5-crypt",
                  "md5-crypt": "des"}


@pytest.mark.parametrize("scheme", passwords.POLICY_SCHEMES)
def test_cdb_login_rehashes_to_each_policy(make_tree: Callable[..., Tree], scheme: str) -> None:
    old_kind = OLD_FOR_POLICY[scheme]
    stored = ph.des_crypt.hash(PASSWORD) if old_kind == "des" else ph.md5_crypt.hash(PASSWORD)
    tree = make_tree(stored, password_scheme=scheme)
    domain_dir = tree.domain_dir("example.com")
    before = (domain_dir / "vpasswd").read_text().split("\n")[0].split(":")
    done, record = tree.login(pop())
    assert done.returncode == 0, done.stderr
    assert record is not None and record["cwd"] == tree.bob.dir
    assert tree.syslog_lines() == [OK_LINE, rehashed_line(old_kind, scheme)]

    text_hash, cdb_hash = vpasswd_hash(tree)
    assert text_hash == cdb_hash != stored
    assert text_hash.startswith(PREFIX[scheme]) and passwords.hash_scheme(text_hash)[0] == scheme
    after = (domain_dir / "vpasswd").read_text().split("\n")[0].split(":")
    assert after[:1] + after[2:] == before[:1] + before[2:]  # only the hash changed (clear copy kept)
    for name in ("vpasswd", "vpasswd.cdb"):
        info = (domain_dir / name).stat()
        assert (info.st_uid, info.st_gid, info.st_mode & 0o777) == (VPOPMAIL_UID, VPOPMAIL_GID, 0o600)
    assert not [p for p in os.listdir(domain_dir) if p.startswith(".tmp") or p.endswith(".tmp")]

    # The same password logs in against the new hash, and an up-to-date hash is not rewritten.
    state = vpasswd_state(tree)
    done, record = tree.login(pop())
    assert done.returncode == 0 and record is not None, done.stderr
    assert tree.syslog_lines() == [OK_LINE]
    assert vpasswd_state(tree) == state
    done, record = tree.login(pop("wrong"))
    assert done.returncode == 1 and record is None


@pytest.mark.parametrize("stored", [
    "{PLAIN}" + PASSWORD,
    ph.des_crypt.hash(PASSWORD),
    ph.sha256_crypt.using(rounds=5000).hash(PASSWORD),
    ph.sha512_crypt.using(rounds=1000).hash(PASSWORD),
    "{MD5-CRYPT}" + ph.md5_crypt.hash(PASSWORD),
], ids=["plain", "des", "sha256-crypt", "sha512-crypt-1000-rounds", "prefixed-md5-crypt"])
def test_cdb_weaker_kinds_are_rehashed(make_tree: Callable[..., Tree], stored: str) -> None:
    tree = make_tree(stored)
    done, record = tree.login(pop())
    assert done.returncode == 0 and record is not None, done.stderr
    text_hash, cdb_hash = vpasswd_hash(tree)
    assert text_hash == cdb_hash and text_hash.startswith("$6$") and "rounds=" not in text_hash
    assert passwords.verify(PASSWORD.encode(), text_hash)


@pytest.mark.parametrize(("scheme", "stored"), [
    ("sha512-crypt", passwords.new_hash(PASSWORD, "sha512-crypt")),
    ("sha512-crypt", ph.sha512_crypt.using(rounds=20000).hash(PASSWORD)),  # more rounds than the policy
    ("sha512-crypt", ph.bcrypt.using(rounds=12).hash(PASSWORD)),  # stronger scheme
    ("sha512-crypt", passwords.new_hash(PASSWORD, "yescrypt")),
    ("bcrypt", passwords.new_hash(PASSWORD, "yescrypt")),  # alike: not rewritten
    ("yescrypt", ph.bcrypt.using(rounds=12).hash(PASSWORD)),
    ("md5-crypt", ph.md5_crypt.hash(PASSWORD)),
], ids=["sha512", "sha512-20000", "bcrypt-under-sha512", "yescrypt-under-sha512", "yescrypt-under-bcrypt",
        "bcrypt-under-yescrypt", "md5-under-md5"])
def test_cdb_hash_at_policy_is_not_rewritten(make_tree: Callable[..., Tree], scheme: str,
                                             stored: str) -> None:
    tree = make_tree(stored, password_scheme=scheme)
    lastauth = ("bob", "bob/lastauth")  # the login's lastauth, in the user's directory
    before = snapshot(tree.domain_dir("example.com"), ignore=lastauth)
    state = vpasswd_state(tree)
    done, record = tree.login(pop())
    assert done.returncode == 0 and record is not None, done.stderr
    assert tree.syslog_lines() == [OK_LINE]
    assert vpasswd_state(tree) == state
    assert snapshot(tree.domain_dir("example.com"), ignore=lastauth) == before


def test_cdb_no_rehash_without_a_plain_login(make_tree: Callable[..., Tree]) -> None:
    """A wrong password, APOP, CRAM-MD5, and the setting off: nothing is written."""
    tree = make_tree()
    state = vpasswd_state(tree)
    done, record = tree.login(pop("wrong"))
    assert done.returncode == 1 and record is None
    challenge = b"<1.2@host>"
    done, record = tree.login(pop(hashlib.md5(challenge + PASSWORD.encode()).hexdigest(), challenge))
    assert done.returncode == 0 and record is not None, done.stderr
    digest = hmac.new(PASSWORD.encode(), challenge, "md5").hexdigest()
    done, record = tree.login(pop(digest, challenge), TCPLOCALPORT="25")
    assert done.returncode == 0 and record is not None, done.stderr
    assert tree.syslog_lines() == [f"vchkpw-pop3: password fail {WHO}",
                                   f"vchkpw-pop3: (APOP) login success {WHO}",
                                   f"vchkpw-smtp: (CRAM-MD5) login success {WHO}"]
    assert vpasswd_state(tree) == state
    tree.write_settings(rehash_on_login=False)
    done, record = tree.login(pop())
    assert done.returncode == 0 and record is not None, done.stderr
    assert tree.syslog_lines() == [OK_LINE]
    assert vpasswd_state(tree) == state
    assert vpasswd_hash(tree)[0].startswith(MD5)


def test_cdb_des_with_a_long_password_is_left_alone(make_tree: Callable[..., Tree]) -> None:
    """DES checks 8 bytes: "secret12" and "secret12-and-more" both log in; neither is chosen."""
    tree = make_tree(ph.des_crypt.hash("secret12"))
    state = vpasswd_state(tree)
    done, record = tree.login(fd3_payload("bob@example.com", "secret12-and-more", b""))
    assert done.returncode == 0 and record is not None, done.stderr
    assert tree.syslog_lines() == [OK_LINE, f"vchkpw-pop3: password not rehashed: DES and more than 8 "
                                            f"bytes {WHO}"]
    assert vpasswd_state(tree) == state


def _lock_waiter(path: Path) -> bool:
    """Whether some process waits for a POSIX lock on ``path`` (a ``->`` line in /proc/locks)."""
    inode = f":{path.stat().st_ino} "
    return any("->" in line and inode in line for line in Path("/proc/locks").read_text().split("\n"))


def _login_in_thread(tree: Tree, fd3: bytes) -> tuple[threading.Thread, dict[str, Any]]:
    result: dict[str, Any] = {}

    def run() -> None:
        result["done"], result["record"] = tree.login(fd3)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, result


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 20
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_cdb_concurrent_change_is_not_overwritten(make_tree: Callable[..., Tree]) -> None:
    """vchkpw read the MD5 hash; an admin changes the password before vchkpw gets the lock."""
    from vpop.stores.cdb import read_lines, write_vpasswd

    tree = make_tree()
    domain_dir = tree.domain_dir("example.com")
    lock = domain_dir / ".vpasswd.lock"
    admin_hash = passwords.new_hash("changed-by-admin", "sha512-crypt")
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX)
        thread, result = _login_in_thread(tree, pop())
        _wait_for(lambda: _lock_waiter(lock), "vchkpw to wait for the vpasswd lock")
        lines = [line if not line.startswith("bob:") else
                 "bob:" + admin_hash + ":" + line.split(":", 2)[2] for line in read_lines(str(domain_dir))]
        write_vpasswd(str(domain_dir), lines, VPOPMAIL_UID, VPOPMAIL_GID)
    finally:
        os.close(fd)
    thread.join(30)
    assert not thread.is_alive()
    assert result["done"].returncode == 0 and result["record"] is not None, result["done"].stderr
    assert tree.syslog_lines() == [OK_LINE, f"vchkpw-pop3: password not rehashed: changed meanwhile {WHO}"]
    assert vpasswd_hash(tree) == (admin_hash, admin_hash)
    done, record = tree.login(pop())
    assert done.returncode == 1 and record is None
    done, record = tree.login(pop("changed-by-admin"))
    assert done.returncode == 0 and record is not None


def test_cdb_failed_write_is_logged_and_login_succeeds(make_tree: Callable[..., Tree]) -> None:
    tree = make_tree()
    domain_dir = tree.domain_dir("example.com")
    state = vpasswd_state(tree)
    domain_dir.chmod(0o555)  # the domain's uid cannot make the temporary files
    try:
        done, record = tree.login(pop())
    finally:
        domain_dir.chmod(0o750)
    assert done.returncode == 0 and record is not None, done.stderr
    assert record["cwd"] == tree.bob.dir
    lines = tree.syslog_lines()
    assert lines[0] == OK_LINE and len(lines) == 2
    assert lines[1].startswith(f"vchkpw-pop3: password not rehashed {WHO}: "
                               f"cannot create {domain_dir}/vpasswd.tmp.")
    assert lines[1].endswith(": Permission denied")
    assert vpasswd_state(tree) == state


def _importtime_login(tree: Tree) -> str:
    """A login through the launcher under ``-X importtime``: the modules vchkpw imported."""
    launcher = program("vchkpw")
    python = Path(launcher).read_text().split("\n")[0][2:].split()[0]
    out = tree.record_path()
    done = tree.run([python, "-IS", "-X", "importtime", launcher, tree.recorder, str(out)], pop(), tree.env())
    assert done.returncode == 0, done.stderr
    return done.stderr.decode()


def test_no_passlib_on_the_login_path(make_tree: Callable[..., Tree]) -> None:
    """Neither a login that needs no rehash nor one that rehashes imports passlib."""
    tree = make_tree()
    rehashing = _importtime_login(tree)
    assert vpasswd_hash(tree)[0].startswith("$6$")
    plain = _importtime_login(tree)
    assert "import time:" in plain and "_crypt" in rehashing
    assert "passlib" not in rehashing and "passlib" not in plain
    assert "secrets" not in rehashing and "hashlib" not in rehashing  # os.urandom, not their 9 ms


# ------------------------------------------------------------------------------------------------
# MySQL


@pytest.fixture
def db(mysql_db: dict[str, Any]) -> dict[str, Any]:
    load_schema(mysql_db)
    return mysql_db


@pytest.fixture(params=[True, False], ids=["many-domains", "table-per-domain"])
def mysql_tree(request: pytest.FixtureRequest, db: dict[str, Any]) -> Iterator[Tree]:
    """store = mysql, bob with an MD5-crypt hash, rehash_on_login on."""
    with Tree(store="mysql", mysql=db, many_domains=request.param, rehash_on_login=True) as tree:
        tree.add_domain("example.com")
        tree.bob = tree.add_user("example.com", "bob", PASSWORD)
        tree.table = "vpopmail" if request.param else "example_com"
        yield tree


def row(tree: Tree, db: dict[str, Any]) -> tuple[Any, ...]:
    rows = mysql_rows(db, f"SELECT pw_passwd, pw_uid, pw_gid, pw_gecos, pw_dir, pw_shell, pw_clear_passwd "
                          f"FROM `{tree.table}` WHERE pw_name = 'bob'")
    assert len(rows) == 1
    return rows[0]


def test_mysql_login_rehashes(mysql_tree: Tree, db: dict[str, Any]) -> None:
    tree = mysql_tree
    before = row(tree, db)
    assert before[0].startswith(MD5)
    done, record = tree.login(pop())
    assert done.returncode == 0 and record is not None, done.stderr
    assert tree.syslog_lines() == [OK_LINE, rehashed_line("md5-crypt", "sha512-crypt")]
    after = row(tree, db)
    assert after[0].startswith("$6$") and passwords.verify(PASSWORD.encode(), after[0])
    assert after[1:] == before[1:]  # only the hash (the clear copy too is kept)
    done, record = tree.login(pop())
    assert done.returncode == 0 and record is not None, done.stderr
    assert tree.syslog_lines() == [OK_LINE]
    assert row(tree, db) == after


def test_mysql_no_rehash_without_a_plain_login(mysql_tree: Tree, db: dict[str, Any]) -> None:
    tree = mysql_tree
    before = row(tree, db)
    done, _ = tree.login(pop("wrong"))
    assert done.returncode == 1
    challenge = b"<1.2@host>"
    done, record = tree.login(pop(hashlib.md5(challenge + PASSWORD.encode()).hexdigest(), challenge))
    assert done.returncode == 0 and record is not None, done.stderr
    tree.write_settings(rehash_on_login=False)
    done, record = tree.login(pop())
    assert done.returncode == 0 and record is not None, done.stderr
    assert row(tree, db) == before


def test_mysql_concurrent_change_is_not_overwritten(mysql_tree: Tree, db: dict[str, Any]) -> None:
    """The test holds bob's row lock; vchkpw has read the MD5 hash and waits in its UPDATE; the
    password is changed and committed; the UPDATE then finds another hash and changes nothing."""
    tree = mysql_tree
    admin_hash = passwords.new_hash("changed-by-admin", "sha512-crypt")
    holder = pymysql.connect(unix_socket=db["unix_socket"], user=db["user"], password=db["password"],
                             database=db["database"], autocommit=False)
    watcher = pymysql.connect(**db["root"], autocommit=True)
    try:
        with holder.cursor() as cur:
            cur.execute(f"SELECT pw_passwd FROM `{tree.table}` WHERE pw_name = 'bob' FOR UPDATE")
            thread, result = _login_in_thread(tree, pop())

            def waiting() -> bool:
                with watcher.cursor() as wcur:
                    wcur.execute("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = %s "
                                 "AND INFO LIKE 'UPDATE%%pw_passwd%%'", (db["user"],))
                    return wcur.fetchone()[0] == 1

            _wait_for(waiting, "vchkpw's UPDATE to wait for the row lock")
            cur.execute(f"UPDATE `{tree.table}` SET pw_passwd = %s WHERE pw_name = 'bob'", (admin_hash,))
        holder.commit()
    finally:
        holder.close()
        watcher.close()
    thread.join(30)
    assert not thread.is_alive()
    assert result["done"].returncode == 0 and result["record"] is not None, result["done"].stderr
    assert tree.syslog_lines() == [OK_LINE, f"vchkpw-pop3: password not rehashed: changed meanwhile {WHO}"]
    assert row(tree, db)[0] == admin_hash


def test_mysql_compare_and_set_is_exact(mysql_tree: Tree, db: dict[str, Any]) -> None:
    """In-process against the real server: the old hash must match byte for byte (the column's
    collation would take another case or trailing spaces as equal)."""
    from vpop import assign
    from vpop.stores import open_store

    tree = mysql_tree
    settings = tree.settings()
    domain = assign.lookup(settings.qmail_home, "example.com")
    store = open_store(settings)
    try:
        record = store.get_user("bob", domain)
        old = record.passwd
        new = passwords.new_hash(PASSWORD, "sha512-crypt")
        assert not store.replace_password_hash(record, domain, old.upper(), new)
        assert not store.replace_password_hash(record, domain, old + " ", new)
        assert row(tree, db)[0] == old and record.passwd == old
        assert store.replace_password_hash(record, domain, old, new)
        assert row(tree, db)[0] == new == record.passwd
        assert not store.replace_password_hash(record, domain, old, passwords.new_hash("x", "md5-crypt"))
        assert row(tree, db)[0] == new
    finally:
        store.close()


def test_mysql_update_without_privilege_is_logged(mysql_tree: Tree, db: dict[str, Any]) -> None:
    tree = mysql_tree
    name, secret = f"ro_{secrets.token_hex(4)}", secrets.token_hex(8)
    root = pymysql.connect(**db["root"], autocommit=True)
    try:
        with root.cursor() as cur:
            cur.execute("CREATE USER %s@'localhost' IDENTIFIED BY %s", (name, secret))
            cur.execute(f"GRANT SELECT ON `{db['database']}`.* TO %s@'localhost'", (name,))
        tree.write_mysql_credentials(db, dict(db, user=name, password=secret))
        tree.write_settings(auth_logging=False)
        before = row(tree, db)
        done, record = tree.login(pop())
        assert done.returncode == 0 and record is not None, done.stderr
        lines = tree.syslog_lines()
        assert lines[0] == OK_LINE and len(lines) == 2
        assert lines[1].startswith(f"vchkpw-pop3: password not rehashed {WHO}: database update failed")
        assert secret not in lines[1]
        assert row(tree, db) == before
    finally:
        with root.cursor() as cur:
            cur.execute("DROP USER IF EXISTS %s@'localhost'", (name,))
        root.close()

