"""vconvert, installed, run as root on a sandbox tree and the session's real MariaDB: CDB -> MySQL
and back (both layouts), the layouts into each other, passwd + shadow files into either store;
logins through the installed vchkpw and deliveries through vdelivermail on the new store."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import VPOPMAIL_GID, VPOPMAIL_UID, fd3_payload, program
from passlib import hash as ph
from tree import Tree, load_schema, mysql_rows, snapshot

MESSAGE = b"From: alice@example.org\nTo: x@example.com\nSubject: hi\n\nhello\n"

# name -> (password, stored hash, clear password, flags, quota, gecos)
USERS = {
    "md5": ("pw-md5", ph.md5_crypt.hash("pw-md5", salt="abcdefgh"), "pw-md5", 0, "NOQUOTA", "Md Five"),
    "sha": ("pw-sha", ph.sha512_crypt.hash("pw-sha", rounds=5000, salt="saltsalt"), "", 0x20, "1048576S",
            "Sha"),
    "bcr": ("pw-bcr", ph.bcrypt.hash("pw-bcr", rounds=4), "pw-bcr", 0x800, "5000000S,100C", "B Crypt"),
    "des": ("pwdes", ph.des_crypt.hash("pwdes", salt="ab"), "", 0, "NOQUOTA", "Des"),
    "plain": ("pw-plain", "{PLAIN}pw-plain", "pw-plain", 0x4000, "NOQUOTA", "Plain"),
}


def vconvert(tree: Tree, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([program("vconvert"), *args], env=tree.env(TZ="UTC"), capture_output=True,
                          text=True, timeout=120, cwd=tree.root)


def login_ok(tree: Tree, address: str, password: str) -> bool:
    done, record = tree.login(fd3_payload(address, password))
    return done.returncode == 0 and record is not None


def mysql_tree(db: dict[str, Any], many: bool) -> Tree:
    load_schema(db)
    tree = Tree(store="cdb", many_domains=many)
    tree.write_mysql_credentials(db, tcp=True)
    os.chown(tree.etc / "vpopmail.mysql", VPOPMAIL_UID, VPOPMAIL_GID)
    return tree


def add_users(tree: Tree, domain: str = "example.com") -> None:
    for name, (password, stored, _clear, flags, quota, gecos) in USERS.items():
        record = tree.add_user(domain, name, password, passwd=stored, flags=flags, quota=quota, gecos=gecos)
        assert record.passwd == stored
    # the clear passwords as given (add_user stores the typed one): rewrite vpasswd's last field
    path = tree.domain_dir(domain) / "vpasswd"
    lines = []
    for line in path.read_text().splitlines():
        fields = line.split(":")
        fields[7] = USERS[fields[0]][2]
        lines.append(":".join(fields))
    from vpop.stores.cdb import write_vpasswd

    write_vpasswd(str(tree.domain_dir(domain)), lines, VPOPMAIL_UID, VPOPMAIL_GID)


def rows(tree: Tree, db: dict[str, Any], many: bool, domain: str = "example.com") -> list[tuple]:
    columns = "pw_name, pw_passwd, pw_uid, pw_gid, pw_gecos, pw_dir, pw_shell, pw_clear_passwd"
    if many:
        found = mysql_rows(db, f"SELECT {columns} FROM vpopmail WHERE pw_domain = %s ORDER BY pw_name",
                           (domain,))
    else:
        found = mysql_rows(db, f"SELECT {columns} FROM `{domain.replace('.', '_')}` ORDER BY pw_name")
    return [tuple("" if v is None else str(v) for v in row) for row in found]


def line_tuples(tree: Tree, domain: str = "example.com") -> list[tuple]:
    lines = (tree.domain_dir(domain) / "vpasswd").read_text().splitlines()
    return sorted(tuple((line.split(":") + [""])[:8]) for line in lines)


def check_logins_and_mail(tree: Tree, domain: str = "example.com") -> None:
    for name, (password, *_rest) in USERS.items():
        assert login_ok(tree, f"{name}@{domain}", password), name
        assert not login_ok(tree, f"{name}@{domain}", password + "x"), name
        before = len(list((tree.domain_dir(domain) / name / "Maildir" / "new").iterdir()))
        done = tree.deliver(f"{name}@{domain}", MESSAGE)
        assert done.returncode == 0, (name, done.stdout)
        assert len(list((tree.domain_dir(domain) / name / "Maildir" / "new").iterdir())) == before + 1


@pytest.mark.parametrize("many", [True, False], ids=["one-table", "table-per-domain"])
def test_cdb_to_mysql_and_back(mysql_db: dict[str, Any], many: bool) -> None:
    """-c -m copies every field of every hash form; a second run changes nothing; the users log in
    and receive mail on MySQL; -m -c rebuilds vpasswd (+cdb) that logs in and delivers as before."""
    with mysql_tree(mysql_db, many) as tree:
        tree.add_domain("example.com")
        add_users(tree)
        original = line_tuples(tree)
        done = vconvert(tree, "-c", "-m")
        assert (done.returncode, done.stderr) == (0, "")
        assert done.stdout == "converting example.com done: 5 added, 0 changed, 0 removed, 0 unchanged\n"
        assert sorted(rows(tree, mysql_db, many)) == original
        again = vconvert(tree, "-c", "-m", "example.com")
        assert again.returncode == 0
        assert again.stdout == "converting example.com done: 0 added, 0 changed, 0 removed, 5 unchanged\n"
        tree.write_settings(store="mysql")
        check_logins_and_mail(tree)
        # back: vpasswd and vpasswd.cdb gone, rebuilt from the rows
        (tree.domain_dir("example.com") / "vpasswd").unlink()
        (tree.domain_dir("example.com") / "vpasswd.cdb").unlink()
        back = vconvert(tree, "-m", "-c")
        assert (back.returncode, back.stdout) == (
            0, "converting example.com done: 5 added, 0 changed, 0 removed, 0 unchanged\n")
        assert line_tuples(tree) == original
        vpasswd = tree.domain_dir("example.com") / "vpasswd"
        assert (vpasswd.stat().st_uid, vpasswd.stat().st_mode & 0o777) == (VPOPMAIL_UID, 0o600)
        mtime = vpasswd.stat().st_mtime_ns
        assert vconvert(tree, "-m", "-c").stdout.endswith(" 0 removed, 5 unchanged\n")
        assert vpasswd.stat().st_mtime_ns == mtime  # nothing rewritten
        tree.write_settings(store="cdb")
        check_logins_and_mail(tree)


def test_users_only_in_target_are_removed_and_changes_applied(mysql_db: dict[str, Any]) -> None:
    with mysql_tree(mysql_db, True) as tree:
        tree.add_domain("example.com")
        add_users(tree)
        assert vconvert(tree, "-c", "-m").returncode == 0
        path = tree.domain_dir("example.com") / "vpasswd"
        lines = [line for line in path.read_text().splitlines() if not line.startswith("des:")]
        lines = [line.replace("NOQUOTA", "2000S") if line.startswith("md5:") else line for line in lines]
        from vpop.stores.cdb import write_vpasswd

        write_vpasswd(str(tree.domain_dir("example.com")), lines, VPOPMAIL_UID, VPOPMAIL_GID)
        done = vconvert(tree, "-d", "-c", "-m")
        assert done.stdout == ("  changed md5\n  removed des\n"
                               "converting example.com done: 0 added, 1 changed, 1 removed, 3 unchanged\n")
        assert sorted(rows(tree, mysql_db, True)) == line_tuples(tree)


def test_mysql_layouts_into_each_other(mysql_db: dict[str, Any]) -> None:
    """-m -M: one vpopmail table -> a table per domain (two domains); logins with many_domains = no."""
    with mysql_tree(mysql_db, True) as tree:
        for domain in ("example.com", "example.net"):
            tree.add_domain(domain)
            add_users(tree, domain)
        assert vconvert(tree, "-c", "-m").returncode == 0
        for domain in ("example.com", "example.net"):
            (tree.domain_dir(domain) / "vpasswd").unlink()
            (tree.domain_dir(domain) / "vpasswd.cdb").unlink()
        done = vconvert(tree, "-m", "-M")
        assert done.returncode == 0, done.stdout
        assert done.stdout.count(" done: 5 added") == 2
        for domain in ("example.com", "example.net"):
            assert rows(tree, mysql_db, False, domain) == rows(tree, mysql_db, True, domain)
        tree.write_settings(store="mysql", many_domains=False)
        check_logins_and_mail(tree, "example.net")
        # and back into the one table, from the per-domain ones: nothing differs
        tree.write_settings(store="mysql", many_domains=True)
        back = vconvert(tree, "-M", "-m", "example.net")
        assert back.stdout == "converting example.net done: 0 added, 0 changed, 0 removed, 5 unchanged\n"


def test_ten_thousand_users_both_ways(mysql_db: dict[str, Any]) -> None:
    with mysql_tree(mysql_db, True) as tree:
        domain_dir = tree.add_domain("big.example")
        stored = ph.md5_crypt.hash("secret", salt="bigsalt1")
        lines = [f"u{i:05d}:{stored}:1:{i % 3}:User {i}:{domain_dir}/{i % 10}/u{i:05d}:{i}S:c{i}"
                 for i in range(10_000)]
        lines[7] = f"u00007:{stored}:1:0:Seven:{domain_dir}/u00007:NOQUOTA:secret"
        from vpop.stores.cdb import write_vpasswd

        write_vpasswd(str(domain_dir), lines, VPOPMAIL_UID, VPOPMAIL_GID)
        os.makedirs(domain_dir / "u00007" / "Maildir" / "new")
        for sub in ("cur", "tmp"):
            os.makedirs(domain_dir / "u00007" / "Maildir" / sub)
        subprocess.run(["chown", "-R", f"{VPOPMAIL_UID}:{VPOPMAIL_GID}", str(domain_dir / "u00007")],
                       check=True)
        started = time.monotonic()
        done = vconvert(tree, "-c", "-m", "big.example")
        assert done.stdout == "converting big.example done: 10000 added, 0 changed, 0 removed, 0 unchanged\n"
        assert sorted(rows(tree, mysql_db, True, "big.example")) == sorted(
            tuple(line.split(":")) for line in lines)
        os.unlink(domain_dir / "vpasswd")
        os.unlink(domain_dir / "vpasswd.cdb")
        back = vconvert(tree, "-m", "-c", "big.example")
        assert back.stdout == "converting big.example done: 10000 added, 0 changed, 0 removed, 0 unchanged\n"
        assert (domain_dir / "vpasswd").read_text().splitlines() == lines
        assert time.monotonic() - started < 20
        tree.write_settings(store="cdb")
        assert login_ok(tree, "u00007@big.example", "secret")
        assert tree.deliver("u00007@big.example", MESSAGE).returncode == 0
        tree.write_settings(store="mysql")
        assert login_ok(tree, "u00007@big.example", "secret")


@pytest.mark.parametrize("kind", ["cdb", "mysql"])
def test_passwd_and_shadow_files(mysql_db: dict[str, Any], kind: str) -> None:
    """-e -c / -e -m from files of the test's own: accounts added with directories, root and locked
    ones skipped, the shadow hashes log in; a second run changes nothing, a new hash is taken."""
    with mysql_tree(mysql_db, True) as tree:
        tree.add_domain("example.com")
        sha = ph.sha512_crypt.hash("anna-pw", rounds=5000, salt="annasalt")
        passwd = tree.root / "passwd"
        shadow = tree.root / "shadow"
        passwd.write_text("root:x:0:0:root:/root:/bin/bash\nbin:x:1:1:bin:/bin:/sbin/nologin\n"
                          "anna:x:1000:1000:Anna A,room 1:/home/anna:/bin/bash\n"
                          "lock:x:1001:1001::/home/lock:/bin/bash\n")
        shadow.write_text(f"root:{ph.md5_crypt.hash('r')}:19000::::::\nbin:*:19000::::::\n"
                          f"anna:{sha}:19000:0:99999:7:::\nlock:!{sha}:19000::::::\n")
        target = "-c" if kind == "cdb" else "-m"
        done = vconvert(tree, "-e", target, "-f", str(passwd), "-F", str(shadow), "example.com")
        assert done.returncode == 0, done.stdout
        assert done.stdout == ("skipping root\nskipping bin\nskipping lock\n"
                               "converting example.com done: 1 added, 0 changed, 0 removed, 0 unchanged\n")
        assert (tree.domain_dir("example.com") / "anna" / "Maildir" / "new").is_dir()
        tree.write_settings(store=kind)
        assert login_ok(tree, "anna@example.com", "anna-pw")
        assert tree.deliver("anna@example.com", MESSAGE).returncode == 0
        again = vconvert(tree, "-e", target, "-f", str(passwd), "-F", str(shadow), "example.com")
        assert again.stdout.endswith("0 added, 0 changed, 0 removed, 1 unchanged\n")
        shadow.write_text(f"anna:{ph.md5_crypt.hash('new-pw')}:19000::::::\n")
        assert vconvert(tree, "-e", target, "-f", str(passwd), "-F", str(shadow), "example.com"
                        ).stdout.endswith("0 added, 1 changed, 0 removed, 0 unchanged\n")
        assert login_ok(tree, "anna@example.com", "new-pw")
        assert not login_ok(tree, "anna@example.com", "anna-pw")


def test_dry_run_writes_nothing(mysql_db: dict[str, Any]) -> None:
    with mysql_tree(mysql_db, False) as tree:
        tree.add_domain("example.com")
        add_users(tree)
        before = snapshot(tree.root)
        done = vconvert(tree, "--dry-run", "-c", "-m")
        assert done.stdout == ("converting example.com done: 5 added, 0 changed, 0 removed, 0 unchanged "
                               "(dry run: nothing written)\n")
        assert mysql_rows(mysql_db, "SHOW TABLES LIKE 'example_com'") == []
        assert snapshot(tree.root) == before


def test_unknown_domain_changes_nothing(mysql_db: dict[str, Any]) -> None:
    with mysql_tree(mysql_db, True) as tree:
        tree.add_domain("example.com")
        add_users(tree)
        done = vconvert(tree, "-c", "-m", "example.com", "nosuch.example")
        assert (done.returncode, done.stdout) == (245, "Error: Domain does not exist: nosuch.example\n")
        assert rows(tree, mysql_db, True) == []


def test_target_down_changes_nothing(dead_mysql: dict[str, Any]) -> None:
    with Tree() as tree:
        tree.write_mysql_credentials(dead_mysql, tcp=True)
        tree.add_domain("example.com")
        tree.add_user("example.com", "bob", "pw")
        before = snapshot(tree.root)
        done = vconvert(tree, "-c", "-m")
        assert done.returncode == 111
        assert done.stdout.startswith("Error: database down")
        assert snapshot(tree.root) == before


def test_failed_domain_rolls_back_and_exits_non_zero(mysql_db: dict[str, Any]) -> None:
    """A row the table cannot hold (a 30-character quota) fails its domain as a whole; the other
    domain is converted; exit 1 (vpopmail: 0)."""
    with mysql_tree(mysql_db, True) as tree:
        for domain in ("bad.example", "good.example"):
            tree.add_domain(domain)
            tree.add_user(domain, "a", "pw")
            tree.add_user(domain, "b", "pw", quota="1" * 30 if domain == "bad.example" else "NOQUOTA")
        done = vconvert(tree, "-c", "-m")
        assert done.returncode == 1
        first, second = done.stdout.splitlines()
        assert first.startswith("converting bad.example domain conversion failed: database update failed")
        assert second == "converting good.example done: 2 added, 0 changed, 0 removed, 0 unchanged"
        assert rows(tree, mysql_db, True, "bad.example") == []
        assert len(rows(tree, mysql_db, True, "good.example")) == 2


def test_empty_source_does_not_empty_target(mysql_db: dict[str, Any]) -> None:
    with mysql_tree(mysql_db, True) as tree:
        tree.add_domain("example.com")
        add_users(tree)
        before = (tree.domain_dir("example.com") / "vpasswd").read_text()
        done = vconvert(tree, "-m", "-c")  # nothing in MySQL yet
        assert done.returncode == 1
        assert "the source has no users of example.com" in done.stdout
        assert (tree.domain_dir("example.com") / "vpasswd").read_text() == before


def test_progress_bar_on_a_terminal(mysql_db: dict[str, Any]) -> None:
    import pty

    with mysql_tree(mysql_db, True) as tree:
        tree.add_domain("example.com")
        add_users(tree)
        primary, secondary = pty.openpty()
        import fcntl
        import struct
        import termios

        fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 24x100
        done = subprocess.run([program("vconvert"), "-c", "-m"], env=tree.env(), stdout=subprocess.PIPE,
                              stderr=secondary, timeout=60, cwd=tree.root)
        os.close(secondary)
        shown = b""
        try:
            while chunk := os.read(primary, 65536):
                shown += chunk
        except OSError:
            pass
        os.close(primary)
        assert done.returncode == 0
        assert b"5/5" in shown and b"100%" in shown, shown
        assert done.stdout == b"converting example.com done: 5 added, 0 changed, 0 removed, 0 unchanged\n"


def test_usage_and_help() -> None:
    with Tree() as tree:
        done = vconvert(tree, "-c")
        assert done.returncode == 2 and done.stdout.startswith("vconvert: usage\n")
        helped = vconvert(tree, "--help")
        assert helped.returncode == 0 and "vpopmail always exits 0" in helped.stdout
        assert vconvert(tree, "-e", "-m").returncode == 2  # -e needs domains


def test_vchkpw_and_vdelivermail_never_import_tqdm() -> None:
    for module in ("vchkpw.main", "vdelivermail.main"):
        code = f"import sys, {module}; print('tqdm' in sys.modules)"
        python = Path(program("vchkpw")).parent / "python"
        assert subprocess.run([str(python), "-I", "-c", code], capture_output=True, text=True
                              ).stdout == "False\n"


# ------------------------------------------------------------------ lastauth, hashing count, -S, -p


def lastauth_file(tree: Tree, name: str, domain: str = "example.com") -> tuple[int, str] | None:
    path = tree.domain_dir(domain) / name / "lastauth"
    if not path.exists():
        return None
    return int(path.stat().st_mtime), path.read_text()


def test_lastauth_and_the_hashing_count_go_along(mysql_db: dict[str, Any]) -> None:
    """-c -m: each user's lastauth file becomes a lastauth row, .dir-control's count the dir_control
    row; -m -M (the other layout) keeps both (the tables are shared); -m -c writes them back as
    files (mtime = the time); a second run writes nothing; vuserinfo shows the same last auth."""
    with mysql_tree(mysql_db, True) as tree:
        tree.add_domain("example.com")
        add_users(tree)
        tree.clock = 1_700_000_000
        assert login_ok(tree, "md5@example.com", "pw-md5")  # lastauth: 192.0.2.10 at the clock
        tree.clock = 1_700_000_500
        assert login_ok(tree, "sha@example.com", "pw-sha")
        before = {name: lastauth_file(tree, name) for name in USERS}
        assert before["md5"] == (1_700_000_000, "192.0.2.10") and before["des"] is None
        control = tree.domain_dir("example.com") / ".dir-control"
        count = int(control.read_text().split("\n")[0])
        done = vconvert(tree, "-d", "-c", "-m")
        assert done.returncode == 0 and "  lastauth of 2 users\n" in done.stdout, done.stdout
        assert f"  hashing count {count}\n" in done.stdout
        assert sorted(mysql_rows(mysql_db, "SELECT user, domain, remote_ip, timestamp FROM lastauth")) == [
            ("md5", "example.com", "192.0.2.10", 1_700_000_000),
            ("sha", "example.com", "192.0.2.10", 1_700_000_500)]
        assert mysql_rows(mysql_db, "SELECT cur_users FROM dir_control WHERE domain = 'example.com'") == \
            [(count,)]
        again = vconvert(tree, "-d", "-c", "-m")
        assert "lastauth of" not in again.stdout and "hashing count" not in again.stdout, again.stdout
        tree.write_settings(store="mysql")
        info = subprocess.run([program("vuserinfo"), "-l", "sha@example.com"], env=tree.env(TZ="UTC"),
                              capture_output=True, text=True, timeout=60)
        assert info.stdout == "last auth: Tue Nov 14 22:21:40 2023\nlast auth ip: 192.0.2.10\n"
        layouts = vconvert(tree, "-d", "-m", "-M")
        assert layouts.returncode == 0 and "lastauth of" not in layouts.stdout
        # back to files: the files removed first, then written from the rows
        for name in ("md5", "sha"):
            (tree.domain_dir("example.com") / name / "lastauth").unlink()
        control.write_text("0\n0\n3\n0 0 0\n61 61 61\n0 2 4\n0 0 0\n\n")
        back = vconvert(tree, "-d", "-m", "-c")
        assert back.returncode == 0 and "  lastauth of 2 users\n" in back.stdout, back.stdout
        assert {name: lastauth_file(tree, name) for name in USERS} == before
        path = tree.domain_dir("example.com") / "md5" / "lastauth"
        assert (path.stat().st_uid, path.stat().st_gid) == (VPOPMAIL_UID, VPOPMAIL_GID)
        assert int(control.read_text().split("\n")[0]) == count


def sqwebmail_pass(tree: Tree, name: str, domain: str = "example.com") -> Path:
    return tree.domain_dir(domain) / name / "Maildir" / "sqwebmail-pass"


@pytest.mark.parametrize("store", ["cdb", "mysql"])
def test_sqwebmail_passwords(mysql_db: dict[str, Any], store: str) -> None:
    """-S: Maildir/sqwebmail-pass = tab, hash, newline for every user, the domain's, 0600;
    a second run writes nothing."""
    with mysql_tree(mysql_db, True) as tree:
        tree.add_domain("example.com")
        add_users(tree)
        if store == "mysql":
            assert vconvert(tree, "-c", "-m").returncode == 0
            for name in ("vpasswd", "vpasswd.cdb"):
                (tree.domain_dir("example.com") / name).unlink()
        tree.write_settings(store=store)
        done = vconvert(tree, "-S")
        assert (done.returncode, done.stdout) == (
            0, "converting example.com done: 5 sqwebmail-pass written, 0 unchanged\n")
        for name, (_pw, stored, *_rest) in USERS.items():
            path = sqwebmail_pass(tree, name)
            assert path.read_text() == f"\t{stored}\n"
            info = path.stat()
            assert (info.st_uid, info.st_gid, info.st_mode & 0o777) == (VPOPMAIL_UID, VPOPMAIL_GID, 0o600)
        again = vconvert(tree, "-S", "example.com")
        assert again.stdout == "converting example.com done: 0 sqwebmail-pass written, 5 unchanged\n"
        assert vconvert(tree, "-S", "-c", "-m").returncode == 2
        assert vconvert(tree, "-S", "nowhere.test").returncode == 245


@pytest.mark.parametrize("kind", ["cdb", "mysql"])
def test_user_pass_file(mysql_db: dict[str, Any], kind: str) -> None:
    """-p file: user:crypted lines added to the named domain (directory, as vadduser), each with
    its sqwebmail-pass; bad names are skipped; a domain is required."""
    with mysql_tree(mysql_db, True) as tree:
        tree.add_domain("example.com")
        crypted = ph.md5_crypt.hash("pw-ann", salt="saltsalt")
        listing = tree.root / "users.txt"
        listing.write_text(f"ann:{crypted}\nbad/name:{crypted}\n\nBen {ph.md5_crypt.hash('pw-ben')}\n")
        target = "-c" if kind == "cdb" else "-m"
        assert vconvert(tree, "-p", str(listing), target).returncode == 2  # no domain
        done = vconvert(tree, "-p", str(listing), target, "example.com")
        assert done.returncode == 0, done.stdout
        assert done.stdout.startswith("skipping bad/name\n")
        assert "converting example.com done: 2 added" in done.stdout
        tree.write_settings(store=kind)
        assert login_ok(tree, "ann@example.com", "pw-ann") and login_ok(tree, "ben@example.com", "pw-ben")
        assert sqwebmail_pass(tree, "ann").read_text() == f"\t{crypted}\n"
        assert tree.deliver("ann@example.com", MESSAGE).returncode == 0
