"""kill -9 at every step of the user commands (vadduser, vdeluser, vpasswd, vmoduser, vsetuserquota,
valias) on the CDB store, and a MariaDB server killed in the middle of a vadduser on MySQL.

The kill points are exact: strace's fault injection (``-e inject=<call>:signal=KILL:when=<n>``)
kills the installed command on entry to its n-th call of a system call that changes a file
(write, fsync, rename, mkdir, unlink, chown, chmod, utimensat ...); every such call that a reference
run makes is one kill point, so the command dies once after each step it takes.  After each kill:

* every file parses (vpasswd lines, vpasswd.cdb, .dir-control) and each of vpasswd, vpasswd.cdb,
  .dir-control, .dir_control_free, the .qmail files, users/assign, users/cdb and each user's
  directory is exactly as before the command or as after it; a user directory half made or half
  removed only while the domain holds the command's note (``.vuser-unfinished``), which says so;
* a vpasswd.cdb that lags vpasswd is older than it, so that every reader takes vpasswd;
* the same command run again finishes the job: the state is then what an unkilled run gives
  (the hashing count included), and a login through vchkpw works.

Temporary files a killed rename leaves (``<name>.tmp.<pid>``, Maildir/tmp) are not state.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cdblib import Reader
from helpers import VPOPMAIL_GID, VPOPMAIL_UID, fd3_payload, program, strace_held
from passlib.context import CryptContext
from tree import Tree, load_schema, mysql_rows

CLOCK = 1_700_000_000
CHANGES = ("write,pwrite64,fsync,fdatasync,rename,renameat,renameat2,mkdir,mkdirat,unlink,unlinkat,rmdir,"
           "fchown,fchownat,chown,lchown,fchmod,fchmodat,chmod,ftruncate,truncate,utimensat,link,linkat,"
           "symlink,symlinkat")
PASSWORDS = ("alice-pw", "bob-pw", "carol-pw", "dave-pw", "new-pw")
USERS = ("alice", "bob", "carol", "dave")
NOTE = ".vuser-unfinished"
HASHES = CryptContext(schemes=["sha512_crypt", "md5_crypt"])
DOMAIN_FILES = ("vpasswd", "vpasswd.cdb", ".dir-control", ".dir_control_free")


def command_env(tree: Tree) -> dict[str, str]:
    env = tree.env(TZ="UTC")
    env["VPOP_CLOCK"] = str(CLOCK)
    return env


def run(tree: Tree, *argv: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([program(argv[0]), *argv[1:]], env=command_env(tree), capture_output=True,
                          stdin=subprocess.DEVNULL, timeout=60, cwd=tree.root)


def ok(tree: Tree, *argv: str) -> None:
    done = run(tree, *argv)
    assert done.returncode == 0, (argv, done.stdout, done.stderr)


def traced(tree: Tree, argv: tuple[str, ...], *options: str) -> subprocess.CompletedProcess[bytes]:
    """The installed command under strace (no -f: the commands never fork)."""
    return subprocess.run(["strace", "-qq", *options, program(argv[0]), *argv[1:]], env=command_env(tree),
                          capture_output=True, stdin=subprocess.DEVNULL, timeout=60, cwd=tree.root)


def kill_points(tree: Tree, argv: tuple[str, ...]) -> list[tuple[str, int]]:
    """``(syscall, n)`` for each file-changing call of a reference run, in order."""
    log = tree.root / "strace.log"
    done = traced(tree, argv, "-o", str(log), "-e", f"trace={CHANGES}")
    assert done.returncode == 0, (done.stdout, done.stderr)
    seen: dict[str, int] = {}
    points = []
    for line in log.read_text().splitlines():
        name = line.split("(", 1)[0]
        seen[name] = seen.get(name, 0) + 1
        points.append((name, seen[name]))
    log.unlink()
    return points


# ------------------------------------------------------------------ the state, read back


_verified: dict[str, str] = {}


def password_of(crypted: str) -> str:
    """Which of PASSWORDS a hash is of (a fresh salt each time: the state compares passwords)."""
    if crypted not in _verified:
        _verified[crypted] = next((pw for pw in PASSWORDS if crypted and HASHES.verify(pw, crypted)), crypted)
    return _verified[crypted]


def normal(line: str) -> str:
    fields = line.split(":")
    assert len(fields) in (7, 8), line  # a whole vpasswd line
    fields[1] = password_of(fields[1])
    return ":".join(fields)


def describe(path: Path) -> tuple[Any, ...]:
    info = path.lstat()
    kind = "d" if path.is_dir() else "f"
    what: tuple[Any, ...] = (kind, info.st_mode & 0o7777, info.st_uid, info.st_gid)
    if kind == "f":
        what += (path.read_bytes(),)
        if path.name == "lastauth":
            what += (int(info.st_mtime),)
    return what


def user_part(rel: str) -> str:
    """The user directory an entry belongs to (``0/carol`` of ``0/carol/Maildir/new``), else itself."""
    parts = rel.split("/")
    for i, part in enumerate(parts):
        if part in USERS:
            return "/".join(parts[:i + 1])
    return rel


def is_scratch(rel: str) -> bool:
    return ".tmp." in rel.rsplit("/", 1)[-1] or "/Maildir/tmp/" in rel


def view(tree: Tree) -> dict[str, Any]:
    """Everything the user commands may change, normalised (hashes as the passwords they verify)."""
    domain = tree.domain_dir("example.com")
    state: dict[str, Any] = {}
    lines = (domain / "vpasswd").read_text().split("\n")
    assert lines[-1] == ""
    state["vpasswd"] = tuple(normal(line) for line in lines[:-1])
    with open(domain / "vpasswd.cdb", "rb") as handle:
        pairs = Reader(handle.read()).iteritems()
    state["vpasswd.cdb"] = tuple(normal(f"{key.decode()}:{value.decode()}") for key, value in pairs)
    for name in DOMAIN_FILES[2:]:
        path = domain / name
        state[name] = path.read_text() if path.exists() else None
    control = state[".dir-control"].split("\n")
    assert len(control) == 9 and control[0].isdigit(), control  # whole: 8 lines
    state["qmail"] = {p.name: p.read_text() for p in domain.glob(".qmail-*") if not is_scratch(p.name)}
    for name in ("assign", "cdb"):
        state[f"users/{name}"] = (tree.qmail_home / "users" / name).read_bytes()
    groups: dict[str, dict[str, Any]] = {}
    for path in sorted(domain.rglob("*")):
        rel = str(path.relative_to(domain))
        if "/" not in rel and (rel in DOMAIN_FILES or rel.startswith(".")):
            continue  # the domain's own files (above), its lock files and the note
        if is_scratch(rel):
            continue
        groups.setdefault(user_part(rel), {})[rel] = describe(path)
    state["dirs"] = groups
    return state


def note(tree: Tree) -> list[str] | None:
    path = tree.domain_dir("example.com") / NOTE
    return path.read_text().split("\n") if path.exists() else None


def check_killed(tree: Tree, old: dict[str, Any], new: dict[str, Any], point: object) -> None:
    now = view(tree)
    for key in now:
        if key != "dirs":
            assert now[key] in (old[key], new[key]), (point, key, now[key])
    domain = tree.domain_dir("example.com")
    if now["vpasswd.cdb"] != now["vpasswd"]:  # killed between the two renames: readers take vpasswd
        assert (domain / "vpasswd.cdb").stat().st_mtime_ns < (domain / "vpasswd").stat().st_mtime_ns, point
    unfinished = note(tree)
    for group in set(now["dirs"]) | set(old["dirs"]) | set(new["dirs"]):
        entries = now["dirs"].get(group, {})
        if entries in (old["dirs"].get(group, {}), new["dirs"].get(group, {})):
            continue
        # half made (add) or half removed (del): only under the note that names the directory
        assert unfinished is not None and unfinished[2].endswith("/" + group), (point, group, entries)
        allowed = new["dirs"].get(group, {}) if unfinished[0] == "add" else old["dirs"].get(group, {})
        assert set(entries) <= set(allowed), (point, group, entries)


def login_ok(tree: Tree, address: str, password: str) -> bool:
    done, record = tree.login(fd3_payload(address, password))
    return done.returncode == 0 and record is not None


# ------------------------------------------------------------------ the sweep


@pytest.fixture(scope="module")
def site() -> Iterator[tuple[Tree, Path]]:
    """alice and bob (1M quota) in the domain directory, dave in hash directory ``0`` (the count
    set to 150 first), a valias ``info``; the domain directory saved as it is."""
    with Tree() as tree:
        tree.clock = CLOCK
        tree.add_domain("example.com")
        ok(tree, "vadduser", "alice@example.com", "alice-pw")
        ok(tree, "vadduser", "-q", "1M", "bob@example.com", "bob-pw")
        from vpop.dirs import _control_lines

        control = tree.domain_dir("example.com") / ".dir-control"
        control.write_text(_control_lines(150))
        ok(tree, "vadduser", "dave@example.com", "dave-pw")
        ok(tree, "valias", "-i", "alice@example.com", "info@example.com")
        saved = tree.root / "saved"
        subprocess.run(["cp", "-a", str(tree.domain_dir("example.com")), str(saved)], check=True)
        yield tree, saved


def restore(tree: Tree, saved: Path) -> None:
    domain = tree.domain_dir("example.com")
    shutil.rmtree(domain)
    subprocess.run(["cp", "-a", str(saved), str(domain)], check=True)


CASES = [
    (("vadduser", "-q", "2M", "carol@example.com", "carol-pw"), {0, 255}, ("carol", "carol-pw")),
    (("vdeluser", "dave@example.com"), {0, 246}, ("alice", "alice-pw")),
    (("vdeluser", "alice@example.com"), {0, 246}, ("bob", "bob-pw")),
    (("vpasswd", "bob@example.com", "new-pw"), {0}, ("bob", "new-pw")),
    (("vmoduser", "-q", "3M", "-c", "Robert", "bob@example.com"), {0}, ("bob", "bob-pw")),
    (("vsetuserquota", "bob@example.com", "5M"), {0}, ("bob", "bob-pw")),
    (("vsetuserquota", "example.com", "4M"), {0}, ("dave", "dave-pw")),
    (("valias", "-i", "bob@elsewhere.test", "info@example.com"), {0, 255}, ("alice", "alice-pw")),
    (("valias", "-d", "info@example.com"), {0, 255}, ("alice", "alice-pw")),
]


@pytest.mark.parametrize(("argv", "again", "user"), CASES, ids=[" ".join(case[0][:2]) for case in CASES])
def test_kill_9_at_every_step(site: tuple[Tree, Path], argv: tuple[str, ...], again: set[int],
                              user: tuple[str, str]) -> None:
    tree, saved = site
    restore(tree, saved)
    old = view(tree)
    points = kill_points(tree, argv)
    new = view(tree)
    assert new != old and note(tree) is None
    assert points
    for point in points:
        restore(tree, saved)
        name, count = point
        done = traced(tree, argv, "-o", "/dev/null", "-e", f"trace={name}",
                      "-e", f"inject={name}:signal=KILL:when={count}")
        assert done.returncode == -signal.SIGKILL or done.returncode == 128 + signal.SIGKILL, (point, done)
        check_killed(tree, old, new, point)
        finished = run(tree, *argv)
        assert finished.returncode in again, (point, finished.stdout, finished.stderr)
        assert view(tree) == new, point
        assert note(tree) is None, point
        assert login_ok(tree, f"{user[0]}@example.com", user[1]), point
    restore(tree, saved)


# ------------------------------------------------------------------ MySQL: the server dies


def _restart(base: Path) -> tuple[subprocess.Popen[bytes], int]:
    from servers import _start_mariadbd, find_tool

    mariadbd = find_tool("mariadbd")
    assert mariadbd is not None
    return _start_mariadbd(mariadbd, base)


def test_mariadb_killed_during_vadduser_leaves_nothing() -> None:
    """The server is SIGKILLed just before each statement vadduser sends (vadduser held there by
    strace's SIGSTOP injection): vadduser exits 111, and after a restart there is no row, no
    lastauth row, the dir_control count is as before, and no directory; the next vadduser works."""
    import pymysql
    from servers import private_mariadb, stop

    with private_mariadb() as server:
        conn = pymysql.connect(unix_socket=server["unix_socket"], user="root", autocommit=True)
        with conn, conn.cursor() as cur:
            cur.execute("CREATE DATABASE vpopmail")
            cur.execute("SET GLOBAL innodb_flush_log_at_trx_commit = 1")  # a commit survives the kill
        db = {**server, "database": "vpopmail"}
        load_schema(db)
        proc = server["proc"]
        with Tree(store="mysql") as tree:
            tree.clock = CLOCK

            def credentials(port: int) -> None:
                tree.write_mysql_credentials({**db, "port": port}, tcp=True)
                os.chown(tree.etc / "vpopmail.mysql", VPOPMAIL_UID, VPOPMAIL_GID)

            credentials(server["port"])
            tree.add_domain("example.com")
            ok(tree, "vadduser", "alice@example.com", "alice-pw")
            argv = ("vadduser", "bob@example.com", "bob-pw")
            log = tree.root / "sends.log"
            done = traced(tree, argv, "-o", str(log), "-s", "200", "-e", "trace=sendto")
            assert done.returncode == 0, done.stderr
            sends = log.read_text().splitlines()
            ok(tree, "vdeluser", "bob@example.com")

            def rows(sql: str) -> list[tuple[Any, ...]]:
                return mysql_rows({**db, "unix_socket": str(server["base"] / "mysqld.sock")}, sql)

            def state() -> tuple[Any, ...]:
                return (rows("SELECT pw_name FROM vpopmail ORDER BY pw_name"),
                        rows("SELECT user FROM lastauth ORDER BY user"),
                        rows("SELECT cur_users FROM dir_control WHERE domain = 'example.com'"),
                        sorted(p.name for p in tree.domain_dir("example.com").iterdir()
                               if p.is_dir()))

            before = state()
            assert before[0] == [("alice",)]
            wanted = ["BEGIN", "UPDATE dir_control", "REPLACE INTO lastauth", "INSERT IGNORE INTO `vpopmail`",
                      "COMMIT"]
            for number, line in enumerate(sends, 1):
                if not wanted or wanted[0] not in line:
                    continue
                wanted.pop(0)
                # held on the way out of the call before: the server dies before it hears this one
                held, child = strace_held([program(argv[0]), *argv[1:]], command_env(tree), "sendto",
                                          number - 1, log, stdin=subprocess.DEVNULL, cwd=tree.root)
                proc.kill()
                proc.wait()
                os.kill(child, signal.SIGCONT)
                out, err = held.communicate(timeout=60)
                assert held.returncode == 111 and out.startswith(b"Error: database"), (line, out, err)
                proc, port = _restart(server["base"])
                server["proc"] = proc
                credentials(port)
                _durable(server)
                now = state()
                assert now[:3] == before[:3], line
                if "COMMIT" in line:
                    # the COMMIT went unanswered: vadduser cannot know that the server never
                    # got it; its note keeps the directory for the next command to judge
                    assert now[3] == before[3] or ((tree.domain_dir("example.com") / NOTE).exists()
                                                   and now[3] == before[3] + ["bob"]), line
                else:
                    assert now == before, line
                    assert not (tree.domain_dir("example.com") / NOTE).exists(), line
            assert wanted == [], wanted
            ok(tree, *argv)
            assert state()[0] == [("alice",), ("bob",)]
            assert state()[2] == [(before[2][0][0] + 1,)]
            assert login_ok(tree, "bob@example.com", "bob-pw")
            stop(proc, 30)


def _durable(server: dict[str, Any]) -> None:
    import pymysql

    conn = pymysql.connect(unix_socket=str(server["base"] / "mysqld.sock"), user="root", autocommit=True)
    with conn, conn.cursor() as cur:
        cur.execute("SET GLOBAL innodb_flush_log_at_trx_commit = 1")
