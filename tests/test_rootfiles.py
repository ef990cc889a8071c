"""Root following the mail user's files: the installed vchkpw and clearopensmtp, as root, against
links and FIFOs that uid 89 (the vpopmail uid, which every user's ``|program`` line runs as) plants
in the directories it can write: ``~vpopmail/etc``, ``~vpopmail`` itself, domain and user dirs.

The tree is laid out as vpopmail installs it: ``~vpopmail`` and ``~vpopmail/etc`` belong to
vpopmail:vchkpw (89:89), ``tcp.smtp`` is root's.  Every attack is done by a process running as
89; every run of a program has a timeout, so a program blocked on a FIFO fails the test instead of
hanging it.
"""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import VPOPMAIL_GID, VPOPMAIL_UID, epoch, fd3_payload, program
from tree import REMOTE_IP, Tree, read_record

PASSWORD = "secret"
#: What the planted links point at: a root 0600 file in /etc/shadow's format.
SECRET = b"root:$6$Zq3rT$hunter2hunter2hunter2:19000:0:99999:7:::\nbin:*:19000:0:99999:7:::\n"
#: The secret's most telling piece: it must never show up anywhere uid 89 (or syslog) can see.
TELL = b"hunter2"
#: How long a program may take before the test calls it stuck (normally well under a second).
STUCK = 15


@pytest.fixture
def tree() -> Iterator[Tree]:
    """example.com (uid 89) with bob; roaming users on; ~vpopmail and its etc owned by 89."""
    with Tree(logging="y", roaming_users=True) as t:
        t.add_domain("example.com")
        t.bob = t.add_user("example.com", "bob", PASSWORD)
        t.write_etc("tcp.smtp", '127.:allow,RELAYCLIENT=""\n')
        os.chown(t.vpopmail_home, VPOPMAIL_UID, VPOPMAIL_GID)
        os.chown(t.etc, VPOPMAIL_UID, VPOPMAIL_GID)
        t.clock = epoch("2027-03-01 10:00:00")
        t.secret = t.root / "shadow"
        t.secret.write_bytes(SECRET)
        t.secret.chmod(0o600)
        yield t


def as_vpopmail(*argv: str | Path) -> None:
    """Run a command as uid/gid 89: the attacker."""
    subprocess.run([str(arg) for arg in argv], check=True, user=VPOPMAIL_UID, group=VPOPMAIL_GID,
                   extra_groups=[VPOPMAIL_GID], timeout=STUCK)


def login(tree: Tree) -> tuple[subprocess.CompletedProcess[bytes], dict | None]:
    """vchkpw as root (a POP3 login by bob), with a timeout: TimeoutExpired means it blocked."""
    out = tree.record_path()
    done = tree.run([program("vchkpw"), tree.recorder, str(out)], fd3_payload("bob@example.com", PASSWORD),
                    tree.env(), timeout=STUCK)
    return done, read_record(out)


def clearopensmtp(tree: Tree) -> subprocess.CompletedProcess[bytes]:
    return tree.run([program("clearopensmtp")], None, tree.env(), timeout=STUCK)


def assert_secret_kept(tree: Tree, syslog: list[str], *outputs: bytes) -> None:
    """The secret is still root's 0600, and no file, syslog line or output holds any of it."""
    info = tree.secret.stat()
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (0, 0, 0o600)
    assert tree.secret.read_bytes() == SECRET
    for dirpath, _, filenames in os.walk(tree.root):
        for name in filenames:
            path = Path(dirpath) / name
            if path != tree.secret and path.is_file() and not path.is_symlink():
                assert TELL not in path.read_bytes(), f"the secret was copied into {path}"
    for output in outputs:
        assert TELL not in output
    assert not any(TELL.decode() in line for line in syslog), syslog


def assert_granted(done: subprocess.CompletedProcess[bytes], record: dict | None) -> None:
    assert done.returncode == 0, done.stderr
    assert record is not None and record["uid"] == VPOPMAIL_UID


def logged(lines: Tree | list[str], *words: str) -> list[str]:
    """The ``lines`` (or a tree's syslog lines since the last look) that contain all ``words``."""
    if isinstance(lines, Tree):
        lines = lines.syslog_lines()
    return [line for line in lines if all(word in line for word in words)]


# ------------------------------------------------------------------------------------------------
# Links: ~vpopmail/etc/open-smtp, tcp.smtp, ~vpopmail/etc itself


def test_open_smtp_link_is_not_followed_by_vchkpw(tree: Tree) -> None:
    link = tree.etc / "open-smtp"
    as_vpopmail("ln", "-s", tree.secret, link)
    done, record = login(tree)
    syslog = tree.syslog_lines()
    assert_secret_kept(tree, syslog, done.stdout, done.stderr)
    assert link.is_symlink() and os.readlink(link) == str(tree.secret)
    assert not (tree.etc / "tcp.smtp.cdb").exists()
    assert_granted(done, record)  # only the relay failed: the login stands
    lines = logged(syslog, "relay not opened bob@example.com", f"{link}: refused: a symbolic link")
    assert len(lines) == 1, syslog


def test_tcp_smtp_link_is_not_followed_by_vchkpw(tree: Tree) -> None:
    (tree.etc / "tcp.smtp").unlink()
    as_vpopmail("ln", "-s", tree.secret, tree.etc / "tcp.smtp")
    done, record = login(tree)
    syslog = tree.syslog_lines()
    assert_secret_kept(tree, syslog, done.stdout, done.stderr)
    assert not (tree.etc / "tcp.smtp.cdb").exists()
    assert_granted(done, record)
    assert len(logged(syslog, "relay not opened", f"{tree.etc}/tcp.smtp: refused: a symbolic link")) == 1


def test_etc_swapped_for_a_link_makes_vchkpw_create_nothing_elsewhere(tree: Tree) -> None:
    target = tree.root / "rootdir"  # a root directory the relay files must never land in
    target.mkdir(mode=0o755)
    (tree.domain_dir("example.com") / ".qmailadmin-limits").write_text("maxpopaccounts 10\n")
    as_vpopmail("mv", tree.etc, tree.vpopmail_home / "etc.real")
    as_vpopmail("ln", "-s", target, tree.etc)
    done, record = login(tree)
    assert list(target.iterdir()) == []
    assert sorted(p.name for p in (tree.vpopmail_home / "etc.real").iterdir()) == ["tcp.smtp"]
    assert_granted(done, record)
    assert len(logged(tree, "relay not opened", f"{tree.etc}: refused: a symbolic link")) == 1


def test_etc_link_is_read_through_but_never_written_through(tree: Tree) -> None:
    """Sites link ``~vpopmail/etc`` to other disks: root reads ``vlimits.default`` through the link
    (uid 89, who could swap it, owns the domain's own limits file anyway), but makes nothing there."""
    target = tree.root / "rootdir"
    target.mkdir(mode=0o755)
    (target / "vlimits.default").write_text("disable_pop 1\n")
    as_vpopmail("mv", tree.etc, tree.vpopmail_home / "etc.real")
    as_vpopmail("ln", "-s", target, tree.etc)
    done, record = login(tree)
    assert (done.returncode, record) == (1, None)  # the limits were read: POP is off
    assert logged(tree, "pop access denied")
    assert sorted(p.name for p in target.iterdir()) == ["vlimits.default"]


def test_open_smtp_link_is_not_followed_by_clearopensmtp(tree: Tree) -> None:
    as_vpopmail("ln", "-s", tree.secret, tree.etc / "open-smtp")
    done = clearopensmtp(tree)
    assert_secret_kept(tree, [], done.stdout, done.stderr)
    assert (tree.etc / "open-smtp").is_symlink() and not (tree.etc / "tcp.smtp.cdb").exists()
    assert done.returncode == 111
    assert done.stderr == f"clearopensmtp: {tree.etc}/open-smtp: refused: a symbolic link (never followed " \
                          f"here)\n".encode()


def test_tcp_smtp_link_is_not_followed_by_clearopensmtp(tree: Tree) -> None:
    (tree.etc / "tcp.smtp").unlink()
    as_vpopmail("ln", "-s", tree.secret, tree.etc / "tcp.smtp")
    done = clearopensmtp(tree)
    assert_secret_kept(tree, [], done.stdout, done.stderr)
    assert not (tree.etc / "tcp.smtp.cdb").exists()
    assert done.returncode == 111
    assert f"{tree.etc}/tcp.smtp: refused: a symbolic link".encode() in done.stderr


def test_etc_swapped_for_a_link_makes_clearopensmtp_create_nothing_elsewhere(tree: Tree) -> None:
    target = tree.root / "rootdir"
    target.mkdir(mode=0o755)
    as_vpopmail("mv", tree.etc, tree.vpopmail_home / "etc.real")
    as_vpopmail("ln", "-s", target, tree.etc)
    done = clearopensmtp(tree)
    assert list(target.iterdir()) == []
    assert done.returncode == 111
    assert f"clearopensmtp: {tree.etc}: refused: a symbolic link".encode() in done.stderr


# ------------------------------------------------------------------------------------------------
# FIFOs: nothing root opens may block it


def test_fifo_as_lastauth_neither_blocks_nor_refuses_the_login(tree: Tree) -> None:
    fifo = Path(tree.bob.dir) / "lastauth"
    as_vpopmail("mkfifo", fifo)
    done, record = login(tree)
    assert_granted(done, record)
    lines = logged(tree, "lastauth not recorded bob@example.com", f"{fifo}: refused: a FIFO")
    assert len(lines) == 1, lines
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert (tree.etc / "open-smtp").exists()  # the relay still opened


def test_fifo_as_open_smtp_neither_blocks_nor_refuses_the_login(tree: Tree) -> None:
    fifo = tree.etc / "open-smtp"
    as_vpopmail("mkfifo", fifo)
    done, record = login(tree)
    assert_granted(done, record)
    assert len(logged(tree, "relay not opened bob@example.com", f"{fifo}: refused: a FIFO")) == 1
    assert (Path(tree.bob.dir) / "lastauth").read_bytes() == REMOTE_IP.encode()


@pytest.mark.parametrize("name", ["open-smtp", "open-smtp.lock", "tcp.smtp"])
def test_fifo_does_not_block_clearopensmtp(tree: Tree, name: str) -> None:
    fifo = tree.etc / name
    fifo.unlink(missing_ok=True)
    as_vpopmail("mkfifo", fifo)
    done = clearopensmtp(tree)
    assert done.returncode == 111
    assert f"clearopensmtp: {fifo}: refused: a FIFO, not a regular file".encode() in done.stderr


def test_fifo_as_domain_limits_defers_the_login(tree: Tree) -> None:
    fifo = tree.domain_dir("example.com") / ".qmailadmin-limits"
    as_vpopmail("mkfifo", fifo)
    done, record = login(tree)
    assert (done.returncode, record) == (111, None)
    assert f"{fifo}: refused: a FIFO".encode() in done.stderr
    assert len(logged(tree, f"{fifo}: refused: a FIFO, not a regular file bob@example.com")) == 1


@pytest.mark.parametrize("name", ["vpasswd", "vpasswd.cdb"])
def test_fifo_as_vpasswd_defers_the_login(tree: Tree, name: str) -> None:
    domain = tree.domain_dir("example.com")
    if name == "vpasswd":
        (domain / "vpasswd.cdb").unlink()  # so that vpasswd itself is read
    as_vpopmail("mv", domain / name, domain / (name + ".saved"))
    as_vpopmail("mkfifo", domain / name)
    done, record = login(tree)
    assert (done.returncode, record) == (111, None)
    assert len(logged(tree, f"{domain}/{name}: refused: a FIFO")) == 1


def test_domain_dir_that_is_a_link_is_read_through_with_its_owner_checked(tree: Tree) -> None:
    """Sites link domain directories to other disks: root reads vpasswd through the link (uid 89
    owns the domain directory and its vpasswd anyway), but only from a directory owned by the
    domain's uid or root; what root writes there, it writes as the domain's uid."""
    domain = tree.domain_dir("example.com")
    as_vpopmail("mv", domain, tree.domains / "elsewhere")
    as_vpopmail("ln", "-s", tree.domains / "elsewhere", domain)
    done, record = login(tree)
    assert_granted(done, record)
    os.chown(tree.domains / "elsewhere", 4242, 4242)  # someone else's directory
    done, record = login(tree)
    assert (done.returncode, record) == (111, None)
    assert len(logged(tree, f"{domain}: refused: a directory owned by uid 4242")) == 1


# ------------------------------------------------------------------------------------------------
# open-smtp.lock belongs to the vpopmail uid


def _vpopmail_can_lock(path: Path) -> None:
    """Open and lockf ``path`` as uid 89, as the vpopmail tools running as vpopmail do."""
    code = ("import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR | os.O_NOFOLLOW); "
            "fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)")
    subprocess.run(["/usr/bin/python3", "-I", "-c", code, str(path)], check=True, user=VPOPMAIL_UID,
                   group=VPOPMAIL_GID, extra_groups=[VPOPMAIL_GID], timeout=STUCK)


def test_lock_made_by_vchkpw_is_the_vpopmail_uids(tree: Tree) -> None:
    done, record = login(tree)
    assert_granted(done, record)
    lock = tree.etc / "open-smtp.lock"
    info = lock.stat()
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (VPOPMAIL_UID, VPOPMAIL_GID, 0o600)
    for name in ("open-smtp", "tcp.smtp.cdb"):
        assert (tree.etc / name).stat().st_uid == VPOPMAIL_UID
    _vpopmail_can_lock(lock)


def test_root_lock_left_by_vpopmail_is_handed_over_by_clearopensmtp(tree: Tree) -> None:
    lock = tree.etc / "open-smtp.lock"
    lock.touch(mode=0o600)  # what vpopmail's open(O_CREAT, 0600) as root leaves
    os.chown(lock, 0, 0)
    done = clearopensmtp(tree)
    assert done.returncode == 0, done.stderr
    assert (lock.stat().st_uid, lock.stat().st_gid) == (VPOPMAIL_UID, VPOPMAIL_GID)
    _vpopmail_can_lock(lock)


def test_lock_held_by_a_vpopmail_tool_is_waited_for(tree: Tree) -> None:
    """The lock is the same one: while uid 89 holds it, clearopensmtp waits, then does its work."""
    login(tree)
    lock = tree.etc / "open-smtp.lock"
    holder = subprocess.Popen(
        ["/usr/bin/python3", "-I", "-c",
         "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR); fcntl.lockf(fd, fcntl.LOCK_EX); "
         "print('held', flush=True); time.sleep(1.5)", str(lock)],
        stdout=subprocess.PIPE, user=VPOPMAIL_UID, group=VPOPMAIL_GID, extra_groups=[VPOPMAIL_GID])
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        tree.clock += 4 * 3600
        done = clearopensmtp(tree)
        assert holder.poll() is not None, "clearopensmtp did not wait for the lock"
    finally:
        holder.kill()
        holder.wait()
    assert (done.returncode, done.stdout) == (0, b"clearopensmtp: 1 relay entry removed\n"), done.stderr


# ------------------------------------------------------------------------------------------------
# The other files root vchkpw reads in ~vpopmail/etc


def _login_as(tree: Tree, name: str) -> tuple[subprocess.CompletedProcess[bytes], dict | None]:
    out = tree.record_path()
    done = tree.run([program("vchkpw"), tree.recorder, str(out)], fd3_payload(name, PASSWORD), tree.env(),
                    timeout=STUCK)
    return done, read_record(out)


@pytest.mark.parametrize(("name", "settings"), [("defaultdomain", {}),
                                                ("ip_alias_map", {"ip_alias_domains": True})])
def test_fifo_in_etc_defers_a_login_without_domain(tree: Tree, name: str, settings: dict) -> None:
    tree.write_settings(**settings)
    fifo = tree.etc / name
    as_vpopmail("mkfifo", fifo)
    done, record = _login_as(tree, "bob")
    assert (done.returncode, record) == (111, None)
    assert done.stderr == f"vchkpw: {fifo}: refused: a FIFO, not a regular file\n".encode()
    assert len(logged(tree, f"{fifo}: refused: a FIFO, not a regular file")) == 1


def test_vpopmail_mysql_fifo_defers_the_login(tree: Tree) -> None:
    tree.write_settings(store="mysql")
    fifo = tree.etc / "vpopmail.mysql"
    as_vpopmail("mkfifo", fifo)
    done, record = login(tree)
    assert (done.returncode, record) == (111, None)
    assert done.stderr == f"vchkpw: {fifo}: refused: a FIFO, not a regular file\n".encode()
    assert len(logged(tree, f"{fifo}: refused: a FIFO, not a regular file bob@example.com")) == 1


def test_vpopmail_mysql_link_is_not_followed(tree: Tree) -> None:
    tree.write_settings(store="mysql")
    link = tree.etc / "vpopmail.mysql"
    as_vpopmail("ln", "-s", tree.secret, link)
    done, record = login(tree)
    assert (done.returncode, record) == (111, None)
    assert done.stderr == f"vchkpw: {link}: refused: a symbolic link (never followed here)\n".encode()
    syslog = tree.syslog_lines()
    assert_secret_kept(tree, syslog, done.stdout, done.stderr)
    assert len(logged(syslog, f"{link}: refused: a symbolic link")) == 1


@pytest.mark.parametrize("name", [".dir-control", ".dir_control_free"])
def test_fifo_as_hashing_state_defers_a_blank_dir_login(tree: Tree, name: str) -> None:
    """A blank pw_dir makes root vchkpw (as uid 89) read the domain's hashing state: a FIFO there
    is refused at once, the login deferred, nothing made."""
    tree.add_user("example.com", "carol", PASSWORD, blank_dir=True)
    domain_dir = tree.domain_dir("example.com")
    as_vpopmail("rm", "-f", domain_dir / name)
    as_vpopmail("mkfifo", domain_dir / name)
    out = tree.record_path()
    done = tree.run([program("vchkpw"), tree.recorder, str(out)], fd3_payload("carol@example.com", PASSWORD),
                    tree.env(), timeout=STUCK)
    assert done.returncode == 111 and read_record(out) is None
    assert b"dir auto create failed" in done.stderr
    assert not (domain_dir / "carol").exists()
