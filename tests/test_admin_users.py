"""The user commands (vadduser, vdeluser, vpasswd, vmoduser, vsetuserquota, vuserinfo), installed,
run as root on a sandbox tree: the CDB store and the MySQL store (both ``many_domains`` layouts,
on the session's real MariaDB).  Files are read back with independent readers (cdblib for
``vpasswd.cdb``), logins go through the installed vchkpw and deliveries through vdelivermail.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cdblib import Reader
from helpers import VPOPMAIL_GID, VPOPMAIL_UID, fd3_payload, program, strace_held
from passlib import hash as ph
from tree import Tree, load_schema, mysql_connect, mysql_rows, snapshot

CLOCK = 1_700_000_000  # Tue Nov 14 22:13:20 2023 UTC
MESSAGE = b"From: alice@example.org\nTo: bob@example.com\nSubject: hi\n\n" + b"x" * 2000 + b"\n"
NO_USER = b"Sorry, no mailbox here by that name. (#5.1.1)\n"


def run(tree: Tree, name: str, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    env = tree.env(TZ="UTC")
    env["VPOP_CLOCK"] = str(CLOCK)
    return subprocess.run([program(name), *args], env=env, capture_output=True, timeout=60,
                          input=stdin if stdin is not None else b"", cwd=tree.root)


def vpasswd_lines(tree: Tree, domain: str = "example.com") -> list[str]:
    return (tree.domain_dir(domain) / "vpasswd").read_text().splitlines()


def cdb_entries(tree: Tree, domain: str = "example.com") -> dict[bytes, bytes]:
    with open(tree.domain_dir(domain) / "vpasswd.cdb", "rb") as handle:
        reader = Reader(handle.read())
    return dict(reader.iteritems())


def login_ok(tree: Tree, address: str, password: str) -> bool:
    done, record = tree.login(fd3_payload(address, password))
    return done.returncode == 0 and record is not None


def credentials(tree: Tree, db: dict[str, Any]) -> None:
    tree.write_mysql_credentials(db, tcp=True)
    os.chown(tree.etc / "vpopmail.mysql", VPOPMAIL_UID, VPOPMAIL_GID)


@pytest.fixture
def cdb_tree() -> Iterator[Tree]:
    with Tree() as tree:
        tree.add_domain("example.com")
        yield tree


@pytest.fixture(params=["cdb", "mysql", "mysql-per-domain"])
def any_tree(request: pytest.FixtureRequest) -> Iterator[Tree]:
    if request.param == "cdb":
        with Tree() as tree:
            tree.add_domain("example.com")
            tree.kind = "cdb"
            yield tree
        return
    db = request.getfixturevalue("mysql_db")
    load_schema(db)
    many = request.param == "mysql"
    with Tree(store="mysql", many_domains=many) as tree:
        credentials(tree, db)
        tree.add_domain("example.com")
        tree.kind = request.param
        tree.db = db
        yield tree


def user_rows(tree: Tree, user: str = "bob") -> list[tuple[Any, ...]]:
    if tree.kind == "mysql":
        return mysql_rows(tree.db, "SELECT pw_name, pw_passwd, pw_uid, pw_gid, pw_gecos, pw_dir, pw_shell, "
                          "pw_clear_passwd FROM vpopmail WHERE pw_name = %s AND pw_domain = 'example.com'",
                          (user,))
    return mysql_rows(tree.db, "SELECT pw_name, pw_passwd, pw_uid, pw_gid, pw_gecos, pw_dir, pw_shell, "
                      "pw_clear_passwd FROM example_com WHERE pw_name = %s", (user,))


# ------------------------------------------------------------------ end to end


def test_end_to_end(any_tree: Tree) -> None:
    """vadduser -> login -> delivery -> vuserinfo -Q -> vpasswd (old refused, new accepted) ->
    vdeluser -> login refused, mail bounces, directory gone; on every store."""
    tree = any_tree
    done = run(tree, "vadduser", "-q", "1M", "bob@example.com", "first-pw")
    assert (done.returncode, done.stdout, done.stderr) == (0, b"", b"")
    home = tree.domain_dir("example.com") / "bob"
    assert home.is_dir() and (home / "Maildir" / "new").is_dir()
    assert (home.stat().st_uid, home.stat().st_gid, home.stat().st_mode & 0o777) == \
        (VPOPMAIL_UID, VPOPMAIL_GID, 0o750)
    if tree.kind == "cdb":
        [line] = vpasswd_lines(tree)
        fields = line.split(":")
        assert fields[:1] + fields[2:] == ["bob", "1", "0", "bob", str(home), "1048576S", "first-pw"]
        assert ph.sha512_crypt.verify("first-pw", fields[1]) and fields[1].startswith("$6$")
        assert cdb_entries(tree) == {b"bob": line[4:].encode()}
    else:
        [row] = user_rows(tree)
        assert row[0] == "bob" and row[2:] == (0, 0, "bob", str(home), "1048576S", "first-pw")
        assert ph.sha512_crypt.verify("first-pw", row[1])
    # maildirsize written from the quota, as vsetuserquota does
    assert (home / "Maildir" / "maildirsize").read_text() == "1048576S\n0 0\n"
    assert login_ok(tree, "bob@example.com", "first-pw")

    delivered = tree.deliver("bob@example.com", MESSAGE)
    assert delivered.returncode == 0, delivered.stdout
    [message] = list((home / "Maildir" / "new").iterdir())
    size = message.stat().st_size
    usage = run(tree, "vuserinfo", "-Q", "bob@example.com")
    assert (usage.returncode, usage.stdout) == (0, f"{size * 100 // 1048576}%\n".encode())
    assert size * 100 // 1048576 == 0  # 2 KB of 1 MB: the C integer percentage
    quota_line = run(tree, "vuserinfo", "-q", "-d", "bob@example.com")
    assert quota_line.stdout == f"{home}\n1048576S\n".encode()

    changed = run(tree, "vpasswd", "bob@example.com", "second-pw")
    assert (changed.returncode, changed.stdout) == (0, b"")
    assert not login_ok(tree, "bob@example.com", "first-pw")
    assert login_ok(tree, "bob@example.com", "second-pw")

    deleted = run(tree, "vdeluser", "bob@example.com")
    assert (deleted.returncode, deleted.stdout, deleted.stderr) == (0, b"", b"")
    assert not home.exists()
    assert not login_ok(tree, "bob@example.com", "second-pw")
    bounced = tree.deliver("bob@example.com", MESSAGE)
    assert (bounced.returncode, bounced.stdout) == (100, NO_USER)
    if tree.kind == "cdb":
        assert vpasswd_lines(tree) == [] and cdb_entries(tree) == {}
    else:
        assert user_rows(tree) == []
        assert mysql_rows(tree.db, "SELECT * FROM lastauth WHERE user = 'bob'") == []
    missing = run(tree, "vdeluser", "bob@example.com")
    assert (missing.returncode, missing.stdout) == (246, b"Error: User does not exist\n")


# ------------------------------------------------------------------ vuserinfo


def test_vuserinfo_all_fields(cdb_tree: Tree) -> None:
    """Field for field as vuserinfo.c prints them, with the account-created lastauth of vadduser."""
    tree = cdb_tree
    assert run(tree, "vadduser", "-c", "Bob B", "bob@example.com", "pw1").returncode == 0
    home = tree.domain_dir("example.com") / "bob"
    passwd = vpasswd_lines(tree)[0].split(":")[1]
    done = run(tree, "vuserinfo", "bob@example.com")
    assert done.returncode == 0
    assert done.stdout.decode().split("\n") == [
        "name:   bob", f"passwd: {passwd}", "clear passwd: pw1", "comment/gecos: Bob B",
        "uid:    1", "gid:    0", "flags:  0", "gecos: Bob B", "limits: No user limits set.",
        f"dir:       {home}", "quota:     NOQUOTA", "usage:     NOQUOTA",
        "account created: Tue Nov 14 22:13:20 2023", "last auth: Never logged in", ""]
    # a login records the IP; then "last auth" and "last auth ip"
    tree.clock = CLOCK + 60
    assert login_ok(tree, "bob@example.com", "pw1")
    last = run(tree, "vuserinfo", "-l", "bob@example.com")
    assert last.stdout == b"last auth: Tue Nov 14 22:14:20 2023\nlast auth ip: 192.0.2.10\n"


def test_vuserinfo_limits_and_domain_listing(cdb_tree: Tree) -> None:
    """vmoduser's flags show as limits lines; the domain's limits carry (*); -D lists every user."""
    tree = cdb_tree
    for user in ("carol", "alice"):
        assert run(tree, "vadduser", f"{user}@example.com", "pw").returncode == 0
    assert run(tree, "vmoduser", "-p", "-i", "alice@example.com").returncode == 0
    limits = tree.domain_dir("example.com") / ".qmailadmin-limits"
    limits.write_text("disable_smtp\n")
    os.chown(limits, VPOPMAIL_UID, VPOPMAIL_GID)
    lines = run(tree, "vuserinfo", "alice@example.com").stdout.decode().split("\n")
    start = lines.index("limits:")
    assert lines[start - 3:start + 5] == [
        "gid:    10", "flags:  2058", "gecos: alice", "limits:", "        pop access closed",
        "        imap access closed", "        smtp access is closed (*)",
        "        * = set by domain-wide limits"]
    listing = run(tree, "vuserinfo", "-n", "-g", "-D", "example.com")
    assert listing.stdout == b"-" * 42 + b"\nalice\n10\n" + b"-" * 42 + b"\ncarol\n0\n"
    assert [line.split(":")[0] for line in vpasswd_lines(tree)] == ["alice", "carol"]  # sorted


# ------------------------------------------------------------------ vmoduser, vsetuserquota


def test_vmoduser_flags_comment_password(any_tree: Tree) -> None:
    tree = any_tree
    assert run(tree, "vadduser", "bob@example.com", "pw").returncode == 0
    assert run(tree, "vmoduser", "-b", "-r", "-c", "Robert", "bob@example.com").returncode == 0
    assert run(tree, "vuserinfo", "-g", "-c", "bob@example.com").stdout == b"48\nRobert\n"
    assert run(tree, "vmoduser", "-x", "-d", "bob@example.com").returncode == 0
    assert run(tree, "vuserinfo", "-g", "bob@example.com").stdout == b"1\n"
    # NO_PASSWD_CHNG: vpasswd refuses, vmoduser -C (the administrator) still sets it
    refused = run(tree, "vpasswd", "bob@example.com", "other")
    assert refused.returncode == 255 and refused.stdout.startswith(b"Error: password changes are disabled")
    assert login_ok(tree, "bob@example.com", "pw")
    assert run(tree, "vmoduser", "-x", "-C", "newpw", "bob@example.com").returncode == 0
    assert login_ok(tree, "bob@example.com", "newpw") and not login_ok(tree, "bob@example.com", "pw")
    crypted = ph.md5_crypt.hash("hashed")
    assert run(tree, "vmoduser", "-e", crypted, "bob@example.com").returncode == 0
    assert run(tree, "vuserinfo", "-p", "-C", "bob@example.com").stdout == f"{crypted}\n\n".encode()
    assert login_ok(tree, "bob@example.com", "hashed")
    nobody = run(tree, "vmoduser", "-p", "nobody@example.com")
    assert (nobody.returncode, nobody.stdout) == (255, b"no such user nobody@example.com\n")


def test_vsetuserquota_user_and_domain(any_tree: Tree) -> None:
    """format_maildirquota (K = 1024, M = 1048576, upper-cased first); maildirsize follows;
    a domain name sets every user; NOQUOTA removes maildirsize."""
    tree = any_tree
    for user in ("ann", "bob"):
        assert run(tree, "vadduser", f"{user}@example.com", "pw").returncode == 0
    home = tree.domain_dir("example.com")
    assert not (home / "bob" / "Maildir" / "maildirsize").exists()  # NOQUOTA: none
    assert run(tree, "vsetuserquota", "bob@example.com", "5mb").returncode == 0
    assert run(tree, "vuserinfo", "-q", "bob@example.com").stdout == b"5242880S\n"
    size = home / "bob" / "Maildir" / "maildirsize"
    assert size.read_text() == "5242880S\n0 0\n"
    assert (size.stat().st_uid, size.stat().st_gid) == (VPOPMAIL_UID, VPOPMAIL_GID)
    assert run(tree, "vsetuserquota", "example.com", "2k,10c").returncode == 0
    for user in ("ann", "bob"):
        assert run(tree, "vuserinfo", "-q", f"{user}@example.com").stdout == b"2048S,10C\n"
        assert (home / user / "Maildir" / "maildirsize").read_text() == "2048S,10C\n0 0\n"
    assert run(tree, "vmoduser", "-q", "NOQUOTA", "bob@example.com").returncode == 0
    assert not size.exists()
    missing = run(tree, "vsetuserquota", "nobody@example.com", "1M")
    assert (missing.returncode, missing.stdout) == (246, b"Error: User does not exist\n")
    no_domain = run(tree, "vsetuserquota", "nowhere.test", "1M")
    assert (no_domain.returncode, no_domain.stdout) == (245, b"Error: Domain does not exist\n")


# ------------------------------------------------------------------ refusals change nothing


@pytest.mark.parametrize(("argv", "code", "out"), [
    (("vadduser", "bob@example.com", "pw"), 255, b"Error: User already exists\n"),
    (("vadduser", "new@nowhere.test", "pw"), 255, b"Error: Domain does not exist\n"),
    (("vadduser", "new", "pw"), 255,
     b"You did not use a full email address for the user name\nOnly full email addresses should be used\n"),
    (("vadduser", "a/b@example.com", "pw"), 255, b"Error: Illegal username\n"),
    (("vadduser", "..@example.com", "pw"), 255, b"Error: Illegal username\n"),
    (("vadduser", "a b@example.com", "pw"), 255, b"Error: Illegal username\n"),
    (("vadduser", "../../etc@example.com", "pw"), 255, b"Error: Illegal username\n"),
    (("vadduser", "-q", "lots", "new@example.com", "pw"), 255, None),
    (("vadduser", "-r", "new@example.com", "pw"), 255,
     b"Error: don't use -r option when giving password on command line\n"),
    (("vadduser", "-r200", "new@example.com"), 229, b"Error: password too long (max=128)\n"),
    (("vadduser",), 2, None),
    (("vadduser", "-z", "new@example.com", "pw"), 2, None),
    (("vdeluser", "nobody@example.com"), 246, b"Error: User does not exist\n"),
    (("vdeluser", "bob@nowhere.test"), 245, b"Error: Domain does not exist\n"),
    (("vdeluser",), 2, None),
    (("vpasswd", "nobody@example.com", "pw"), 255, b"Error: User does not exist\n"),
    (("vsetuserquota", "bob@example.com", "abc"), 255, None),
    (("vsetuserquota", "bob@example.com"), 2, None),
    (("vuserinfo", "nobody@example.com"), 255, b"no such user nobody@example.com\n"),
    (("vuserinfo", "bob@nowhere.test"), 255, b"no such user bob@nowhere.test\n"),
    (("vuserinfo",), 2, None),
    (("vmoduser", "-Z", "bob@example.com"), 2, None),
    # what would split or break the vpasswd line (a ':' or a newline in a field)
    (("vmoduser", "-C", "new:pw", "bob@example.com"), 236, b"Error: bad character\n"),
    (("vmoduser", "-C", "new\npw", "bob@example.com"), 236, b"Error: bad character\n"),
    (("vmoduser", "-c", "Bob\nx:y", "bob@example.com"), 236, b"Error: bad character\n"),
    (("vmoduser", "-e", "$1$ab$c:d", "bob@example.com"), 255,
     b"Error: invalid encrypted password (one word, no ':', at most 128 characters)\n"),
])
def test_refusals_change_nothing(cdb_tree: Tree, argv: tuple[str, ...], code: int, out: bytes | None) -> None:
    tree = cdb_tree
    assert run(tree, "vadduser", "bob@example.com", "pw").returncode == 0
    before = snapshot(tree.root)
    done = run(tree, *argv)
    assert done.returncode == code, (done.stdout, done.stderr)
    if out is not None:
        assert done.stdout == out
    elif code == 2:
        assert done.stdout.startswith(argv[0].encode() + b":")  # the usage text
    else:
        assert done.stdout.startswith(b"Error: invalid quota")
    assert snapshot(tree.root) == before


def test_help_says_how_it_differs(cdb_tree: Tree) -> None:
    for name in ("vadduser", "vdeluser", "vpasswd", "vmoduser", "vsetuserquota", "vuserinfo"):
        done = run(cdb_tree, name, "--help")
        assert done.returncode == 0
        assert b"usage error exits 2" in done.stdout and b"secrets" in done.stdout


# ------------------------------------------------------------------ options


def test_vadduser_random_encrypted_and_no_password(cdb_tree: Tree) -> None:
    tree = cdb_tree
    done = run(tree, "vadduser", "-r16", "ran@example.com")
    assert done.returncode == 0 and done.stdout.startswith(b"Random password: ")
    password = done.stdout.decode().split(": ", 1)[1].strip()
    assert len(password) == 16 and password.isalnum()
    assert login_ok(tree, "ran@example.com", password)
    crypted = ph.md5_crypt.hash("given")
    assert run(tree, "vadduser", "-e", crypted, "enc@example.com").returncode == 0
    assert vpasswd_lines(tree)[0].split(":")[1] == crypted
    assert vpasswd_lines(tree)[0].endswith(":NOQUOTA:")  # the clear field emptied
    assert login_ok(tree, "enc@example.com", "given")
    assert run(tree, "vadduser", "-n", "nop@example.com").returncode == 0
    nop = next(line for line in vpasswd_lines(tree) if line.startswith("nop:"))
    assert nop.split(":")[1] == ""
    assert not login_ok(tree, "nop@example.com", "")


def test_vadduser_default_domain(cdb_tree: Tree) -> None:
    tree = cdb_tree
    tree.write_etc("defaultdomain", "example.com\n")
    assert run(tree, "vadduser", "plain", "pw").returncode == 0
    assert login_ok(tree, "plain@example.com", "pw")


# ------------------------------------------------------------------ safety


def test_vdeluser_never_follows_a_planted_link(cdb_tree: Tree, world_tmp: Path) -> None:
    """A link the mail user planted in its directory is removed, its target left alone."""
    tree = cdb_tree
    assert run(tree, "vadduser", "bob@example.com", "pw").returncode == 0
    victim = world_tmp / "victim"
    victim.mkdir()
    (victim / "keep").write_text("precious")
    home = tree.domain_dir("example.com") / "bob"
    os.symlink(victim, home / "Maildir" / "cur" / "evil")
    os.symlink(victim / "keep", home / "evil-file")
    done = run(tree, "vdeluser", "bob@example.com")
    assert (done.returncode, done.stdout) == (0, b"")
    assert not home.exists() and (victim / "keep").read_text() == "precious"


def test_vdeluser_refuses_a_directory_outside_the_domain(cdb_tree: Tree, world_tmp: Path) -> None:
    tree = cdb_tree
    assert run(tree, "vadduser", "bob@example.com", "pw").returncode == 0
    path = tree.domain_dir("example.com") / "vpasswd"
    outside = world_tmp / "elsewhere"
    outside.mkdir()
    line = vpasswd_lines(tree)[0].split(":")
    line[5] = str(outside)
    from vpop.stores.cdb import write_vpasswd

    write_vpasswd(str(path.parent), [":".join(line)], VPOPMAIL_UID, VPOPMAIL_GID)
    before = snapshot(tree.root)
    done = run(tree, "vdeluser", "bob@example.com")
    assert done.returncode == 111 and b"outside" in done.stdout
    assert outside.is_dir() and snapshot(tree.root) == before


def test_sixteen_concurrent_vaddusers(cdb_tree: Tree) -> None:
    """16 real processes into one CDB domain: 16 users, vpasswd and vpasswd.cdb agree, and
    .dir-control counts the directories."""
    tree = cdb_tree
    env = tree.env()
    procs = [subprocess.Popen([program("vadduser"), f"user{i:02d}@example.com", f"pw{i}"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(16)]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert (proc.returncode, out, err) == (0, b"", b"")
    lines = vpasswd_lines(tree)
    names = [line.split(":")[0] for line in lines]
    assert names == sorted(f"user{i:02d}" for i in range(16))
    assert cdb_entries(tree) == {line.split(":", 1)[0].encode(): line.split(":", 1)[1].encode()
                                 for line in lines}
    domain = tree.domain_dir("example.com")
    dirs = sorted(p.name for p in domain.iterdir() if p.is_dir())
    assert dirs == names
    assert (domain / ".dir-control").read_text().split("\n")[0] == "16"
    for line in lines:
        assert Path(line.split(":")[5]).is_dir()


def test_sixteen_concurrent_vaddusers_of_one_name(cdb_tree: Tree) -> None:
    tree = cdb_tree
    env = tree.env()
    procs = [subprocess.Popen([program("vadduser"), "same@example.com", f"pw{i}"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(16)]
    results = [(proc.communicate(timeout=120)[0], proc.returncode) for proc in procs]
    assert sorted(code for _, code in results) == [0] + [255] * 15
    assert {out for out, code in results if code} == {b"Error: User already exists\n"}
    assert [line.split(":")[0] for line in vpasswd_lines(tree)] == ["same"]


def test_database_failure_leaves_nothing(mysql_db: dict[str, Any]) -> None:
    """An INSERT that fails after the directory was made: 111, no row, no directory."""
    load_schema(mysql_db)
    with Tree(store="mysql") as tree:
        credentials(tree, mysql_db)
        tree.add_domain("example.com")
        conn = mysql_connect(mysql_db)
        with conn, conn.cursor() as cur:
            cur.execute("CREATE TRIGGER refuse BEFORE INSERT ON vpopmail FOR EACH ROW "
                        "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'disk full'")
        domain = tree.domain_dir("example.com")
        def state() -> list[str]:  # lock files are no state
            return sorted(str(p.relative_to(domain)) for p in domain.rglob("*") if p.suffix != ".lock")

        before = state()
        done = run(tree, "vadduser", "bob@example.com", "pw")
        assert done.returncode == 111 and b"disk full" in done.stdout
        assert state() == before
        assert mysql_rows(mysql_db, "SELECT * FROM vpopmail") == []
        counts = mysql_rows(mysql_db, "SELECT cur_users FROM dir_control WHERE domain = 'example.com'")
        assert counts in ([], [(0,)])  # (the domains' own dom_89 row counts domains, not users)


# ------------------------------------------------------------------ the password prompt, on a terminal


def on_terminal(tree: Tree, argv: list[str], answers: list[tuple[bytes, bytes]]) -> tuple[int, bytes]:
    """Run the installed command with a real pty as its controlling terminal (getpass reads
    /dev/tty); for each ``(prompt, answer)`` wait for the prompt, then type the answer.
    Returns the exit code and everything the terminal showed."""
    import fcntl
    import select
    import termios
    import time

    master, slave = os.openpty()

    def controlling_tty() -> None:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    env = tree.env(TZ="UTC")
    env["VPOP_CLOCK"] = str(CLOCK)
    proc = subprocess.Popen([program(argv[0]), *argv[1:]], env=env, stdin=slave, stdout=slave, stderr=slave,
                            start_new_session=True, preexec_fn=controlling_tty, cwd=tree.root)
    os.close(slave)
    shown = b""
    seen = 0  # how much of it the prompts so far account for

    def read_until(wanted: bytes | None) -> None:
        nonlocal shown, seen
        deadline = time.monotonic() + 30
        while wanted is None or wanted not in shown[seen:]:
            if time.monotonic() > deadline:
                raise AssertionError((wanted, shown))
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    data = os.read(master, 4096)
                except OSError:  # EIO: the command closed the terminal (it exited)
                    data = b""
                if not data:
                    if wanted is None:
                        return
                    raise AssertionError((wanted, shown))
                shown += data
        seen = shown.index(wanted, seen) + len(wanted)

    try:
        for prompt, answer in answers:
            read_until(prompt)
            os.write(master, answer)
        read_until(None)
        return proc.wait(timeout=30), shown
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


ASK = b"Please enter password for bob@example.com: "
AGAIN = b"enter password again: "


def test_vadduser_asks_for_the_password_on_the_terminal(cdb_tree: Tree) -> None:
    """As vpopmail's vgetpasswd: asked twice, not echoed; a mismatch is told and asked again."""
    tree = cdb_tree
    code, shown = on_terminal(tree, ["vadduser", "bob@example.com"],
                              [(ASK, b"typed-pw\n"), (AGAIN, b"other-pw\n"),
                               (b"Passwords do not match, try again", b""),
                               (ASK, b"typed-pw\n"), (AGAIN, b"typed-pw\n")])
    assert code == 0, shown
    assert b"typed-pw" not in shown and b"other-pw" not in shown  # no echo
    assert shown.count(ASK) == 2 and shown.count(AGAIN) == 2
    assert login_ok(tree, "bob@example.com", "typed-pw")


@pytest.mark.parametrize(("answers", "message"), [
    # three mismatches: vpopmail asked for ever; we give up
    ([(ASK, b"one\n"), (AGAIN, b"two\n")] * 3, b"Error: Passwords do not match"),
    ([(ASK, b"\x04")], b"Error: No password entered"),  # ^D: the end of the input
    ([(ASK, b"\n"), (AGAIN, b"\n")], b"Error: No password entered"),  # both empty, as vpopmail
])
def test_vadduser_prompt_refusals_change_nothing(cdb_tree: Tree, answers: list[tuple[bytes, bytes]],
                                                 message: bytes) -> None:
    tree = cdb_tree
    assert run(tree, "vadduser", "alice@example.com", "pw").returncode == 0
    before = snapshot(tree.root)
    code, shown = on_terminal(tree, ["vadduser", "bob@example.com"], answers)
    assert code == 255 and message in shown, shown
    assert snapshot(tree.root) == before
    assert not login_ok(tree, "bob@example.com", "one")


def test_vpasswd_asks_on_the_terminal(cdb_tree: Tree) -> None:
    tree = cdb_tree
    assert run(tree, "vadduser", "bob@example.com", "old-pw").returncode == 0
    code, shown = on_terminal(tree, ["vpasswd", "bob@example.com"],
                              [(ASK, b"new-pw\n"), (AGAIN, b"new-pw\n")])
    assert code == 0, shown
    assert login_ok(tree, "bob@example.com", "new-pw") and not login_ok(tree, "bob@example.com", "old-pw")
    before = snapshot(tree.root)
    code, shown = on_terminal(tree, ["vpasswd", "bob@example.com"], [(ASK, b"\x04")])
    assert code == 255 and b"Error: No password entered" in shown, shown
    assert snapshot(tree.root) == before


def test_a_reader_takes_a_vpasswd_cdb_renamed_over_between_its_lstat_and_its_open(cdb_tree: Tree) -> None:
    """The race behind a once-seen failure of 16 concurrent vaddusers: a reader (here vuserinfo,
    held by strace's SIGSTOP just after its last lstat of vpasswd.cdb) whose file a writer renames
    over meanwhile looks again, instead of refusing the "replaced" file with 111."""
    import signal

    from vpop.stores.cdb import read_lines, write_vpasswd

    tree = cdb_tree
    assert run(tree, "vadduser", "bob@example.com", "pw").returncode == 0
    env = tree.env(TZ="UTC")
    argv = [program("vuserinfo"), "-d", "bob@example.com"]
    log = tree.root / "stats.log"
    subprocess.run(["strace", "-qq", "-o", str(log), "-e", "trace=newfstatat,openat", *argv], env=env,
                   check=True, capture_output=True, timeout=60)
    calls = log.read_text().splitlines()
    opened = next(i for i, line in enumerate(calls) if line.startswith("openat(") and '"vpasswd.cdb"' in line)
    stats = [line for line in calls[:opened] if line.startswith("newfstatat(")]
    assert '"vpasswd.cdb"' in stats[-1], stats[-1]
    held, child = strace_held(argv, env, "newfstatat", len(stats), log)
    domain = str(tree.domain_dir("example.com"))
    before = os.stat(domain + "/vpasswd.cdb").st_ino
    write_vpasswd(domain, read_lines(domain), VPOPMAIL_UID, VPOPMAIL_GID)  # a writer's rename
    assert os.stat(domain + "/vpasswd.cdb").st_ino != before
    os.kill(child, signal.SIGCONT)
    out, err = held.communicate(timeout=60)
    assert (held.returncode, out) == (0, f"{domain}/bob\n".encode()), (out, err)
