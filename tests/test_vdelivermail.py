"""vdelivermail on the CDB store: the installed program as qmail-local runs it, real Maildirs afterwards.

Every delivery runs ``.venv/bin/vdelivermail '' <instruction>`` as a subprocess as uid/gid 89 with
qmail-local's environment (``vpop.qmailenv.virtual_delivery_environ``), cwd = the domain directory
and stdin = a regular message file (``Tree.deliver``).  Texts and exit codes are vpopmail 5.4's
(reference vpopmail.md §7-8, qmail-delivery.md §5).  Forwards go to a fake qmail-inject written
at test time that records its argv and stdin.
"""

from __future__ import annotations

import hashlib
import json
import mailbox
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from cdblib import Reader
from helpers import VPOPMAIL_GID, VPOPMAIL_UID, epoch, program
from tree import Tree, snapshot

MESSAGE = (b"From: alice@example.org\nTo: bob@example.com\nSubject: hello\n"
           b"Message-ID: <1@example.org>\n\nHello Bob,\nFrom the start.\n.\n")
HEADERS = b"Return-Path: <alice@example.org>\nDelivered-To: bob@example.com\n"
NAME = re.compile(r"^(\d+)\.M(\d+)P(\d+)Q(\d+)\.(.+),S=(\d+)$")
INVALID_SYNTAX = b"vdelivermail: invalid syntax in .qmail-default file\n"
NO_USER = b"Sorry, no mailbox here by that name. (#5.1.1)\n"
LOOPING = b"mail is looping\n"
OVER_QUOTA = b"user is over quota\n\n"  # vpopmail: the line, the quota warning, then an empty line
BOUNCE_MAIL = 0x10

FAKE_INJECT = r'''#!/usr/bin/python3 -I
"""Fake qmail-inject: records argv, stdin and uid in injected/<n>.json; exits with the number in
inject-exit (next to this script) if that file exists, else 0."""
import json
import os
import sys
import time

here = os.path.dirname(os.path.abspath(sys.argv[0]))
data = sys.stdin.buffer.read()
record = {"argv": sys.argv, "stdin": data.decode("latin-1"), "uid": os.getuid()}
with open(os.path.join(here, "injected", f"{time.time_ns()}-{os.getpid()}.json"), "w") as f:
    json.dump(record, f)
try:
    with open(os.path.join(here, "inject-exit")) as f:
        code = int(f.read())
except FileNotFoundError:
    code = 0
sys.exit(code)
'''


# ------------------------------------------------------------------------------------------------
# Helpers


@pytest.fixture
def tree() -> Iterator[Tree]:
    """example.com (uid/gid 89, alias domain alias.test) with bob (NOQUOTA), store = cdb."""
    with Tree() as t:
        t.domain_path = t.add_domain("example.com", aliases=("alias.test",))
        t.bob = t.add_user("example.com", "bob", "secret")
        yield t


def files(maildir: str | Path, sub: str = "new") -> list[Path]:
    return sorted(Path(maildir, sub).iterdir())


def delivered(user_dir: str | Path) -> list[bytes]:
    """The messages in ``user_dir/Maildir/new`` (oldest name first); asserts tmp/ is empty."""
    maildir = Path(user_dir, "Maildir")
    assert files(maildir, "tmp") == [], "a file was left in tmp/"
    return [path.read_bytes() for path in files(maildir)]


def write_file(path: Path, text: str | bytes, mode: int = 0o644) -> Path:
    """A file as the domain's owner would leave it (uid/gid 89)."""
    if isinstance(text, str):
        text = text.encode()
    path.write_bytes(text)
    path.chmod(mode)
    os.chown(path, VPOPMAIL_UID, VPOPMAIL_GID)
    return path


def make_maildir(path: Path) -> Path:
    for sub in ("", "new", "cur", "tmp"):
        (path / sub).mkdir(mode=0o750, parents=True, exist_ok=True)
        os.chown(path / sub, VPOPMAIL_UID, VPOPMAIL_GID)
    return path


def fake_inject(tree: Tree, exit_code: int | None = None) -> Path:
    """Install the fake qmail-inject as the ``qmail_inject`` setting; returns its record directory."""
    base = tree.root / "inject"
    if not base.exists():
        base.mkdir(mode=0o755)
        (base / "injected").mkdir(mode=0o777)
        (base / "injected").chmod(0o777)
        script = base / "qmail-inject"
        script.write_text(FAKE_INJECT)
        script.chmod(0o755)
        tree.write_settings(qmail_inject=script)
    exit_file = base / "inject-exit"
    if exit_code is None:
        exit_file.unlink(missing_ok=True)
    else:
        exit_file.write_text(str(exit_code))
        exit_file.chmod(0o644)
    return base


def injected(base: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((base / "injected").iterdir())]


def maildirsize_totals(maildir: Path) -> tuple[str, int, int]:
    """(quota line, bytes, count) summed from maildirsize."""
    lines = (maildir / "maildirsize").read_text().split("\n")
    assert lines[-1] == "", "maildirsize must end with a newline"
    total = count = 0
    for line in lines[1:-1]:
        b, c = line.split()
        total += int(b)
        count += int(c)
    return lines[0], total, count


def recount(maildir: Path) -> tuple[int, int]:
    """Bytes and count of new/ + cur/, by real file sizes (checked against the ,S= of each name)."""
    total = count = 0
    for sub in ("new", "cur"):
        for path in files(maildir, sub):
            size = path.stat().st_size
            match = re.search(r",S=(\d+)", path.name)
            if match:
                assert int(match.group(1)) == size, path.name
            total += size
            count += 1
    return total, count


def seed_usage(maildir: Path, size: int, name: str = "1000000000.M1P1Q1.seed") -> None:
    """A message already read (in cur/) whose name says it is ``size`` bytes, really that big."""
    write_file(maildir / "cur" / f"{name},S={size}:2,S", b"x" * size, 0o600)


def body(size: int, tag: str = "") -> bytes:
    """A message of exactly ``size`` bytes."""
    head = f"Subject: {tag or 'sized'}\n\n".encode()
    assert size >= len(head) + 1
    return head + b"y" * (size - len(head) - 1) + b"\n"


# ------------------------------------------------------------------------------------------------
# Arguments and environment


@pytest.mark.parametrize("args", [[], [""], ["", "bounce-no-mailbox", "extra"]])
def test_wrong_argument_count(tree: Tree, args: list[str]) -> None:
    done = tree.deliver("bob@example.com", MESSAGE, argv=[program("vdelivermail"), *args])
    assert (done.returncode, done.stdout, done.stderr) == (111, INVALID_SYNTAX, b"")
    assert delivered(tree.bob.dir) == []


@pytest.mark.parametrize("name", ["EXT", "HOST"])
def test_missing_ext_or_host(tree: Tree, name: str) -> None:
    done = tree.deliver("bob@example.com", MESSAGE, env={name: None})
    assert done.returncode == 100
    assert done.stdout == f"vdelivermail: no {name} environment varilable\n".encode()
    assert delivered(tree.bob.dir) == []


@pytest.mark.parametrize(("ext", "host", "text"), [
    ("../x", None, b"invalid username\n"),
    ("a/b", None, b"invalid username\n"),
    ("../../../../etc/passwd", None, b"invalid username\n"),
    ("bob\x01", None, b"invalid username\n"),
    ("bob\nx", None, b"invalid username\n"),
    ("..", None, b"invalid username\n"),
    (".qmail", None, b"invalid username\n"),
    (None, "example.com/../x", b"invalid domain name\n"),
    (None, "a/b", b"invalid domain name\n"),
    (None, "..", b"invalid domain name\n"),
    (None, "example..com", b"invalid domain name\n"),
    (None, "example.com\x7f", b"invalid domain name\n"),
])
def test_refused_names_touch_nothing(tree: Tree, ext: str | None, host: str | None, text: bytes) -> None:
    # The names even point at things that exist, so a path built from them would hit something.
    (tree.root / "x").mkdir(mode=0o777)
    message = tree.message_file(MESSAGE)
    before = snapshot(tree.root)
    env = {key: value for key, value in (("EXT", ext), ("HOST", host)) if value is not None}
    for instruction in ("bounce-no-mailbox", "delete", str(tree.root / "x") + "/"):
        done = tree.deliver("bob@example.com", message, instruction, env=env)
        assert (done.returncode, done.stdout, done.stderr) == (100, text, b"")
    assert snapshot(tree.root) == before


def test_settings_file_with_a_bad_line(tree: Tree) -> None:
    text = tree.config.read_text()
    lines = text.count("\n")
    tree.config.write_text(text + "valias = yes\nthis is not a setting\n")
    done = tree.deliver("bob@example.com", MESSAGE)
    assert done.returncode == 111
    assert done.stdout == f"{tree.config}:{lines + 2}: expected 'key = value'\n".encode()
    tree.config.write_text(text + "quota_warn_percent = ninety\n")
    done = tree.deliver("bob@example.com", MESSAGE)
    assert done.returncode == 111
    assert done.stdout.startswith(f"{tree.config}:{lines + 1}: bad value for 'quota_warn_percent'".encode())
    tree.config.unlink()
    done = tree.deliver("bob@example.com", MESSAGE)
    assert done.returncode == 111
    assert done.stdout == f"{tree.config}: settings file not found\n".encode()
    assert delivered(tree.bob.dir) == []


# ------------------------------------------------------------------------------------------------
# Normal delivery


def test_normal_delivery(tree: Tree) -> None:
    done = tree.deliver("bob@example.com", MESSAGE)
    assert (done.returncode, done.stdout, done.stderr) == (0, b"", b"")
    maildir = Path(tree.bob.dir, "Maildir")
    [path] = files(maildir)
    assert path.read_bytes() == HEADERS + MESSAGE
    match = NAME.match(path.name)
    assert match, path.name
    seconds, _usec, pid, serial, host, size = match.groups()
    assert abs(int(seconds) - path.stat().st_mtime) < 60  # the system clock, as the file's own time
    assert int(pid) > 1 and int(serial) >= 1
    assert host == os.uname().nodename.replace("/", "\\057").replace(":", "\\072")
    assert int(size) == path.stat().st_size == len(HEADERS) + len(MESSAGE)
    st = path.stat()
    assert (st.st_uid, st.st_gid) == (VPOPMAIL_UID, VPOPMAIL_GID)
    assert st.st_mode & 0o777 == 0o600
    assert files(maildir, "tmp") == [] and files(maildir, "cur") == []
    assert not (maildir / "maildirsize").exists(), "NOQUOTA: no maildirsize"


def test_two_deliveries_get_distinct_names(tree: Tree) -> None:
    message = tree.message_file(MESSAGE)
    for _ in range(3):
        assert tree.deliver("bob@example.com", message).returncode == 0
    names = [p.name for p in files(Path(tree.bob.dir, "Maildir"))]
    assert len(set(names)) == 3
    assert delivered(tree.bob.dir) == [HEADERS + MESSAGE] * 3


def test_sender_quoting_and_empty_sender(tree: Tree) -> None:
    assert tree.deliver("bob@example.com", MESSAGE, sender="").returncode == 0
    assert tree.deliver("bob@example.com", MESSAGE, sender="j doe@example.org").returncode == 0
    # two deliveries in one second: their file names do not say which came first
    heads = sorted(b"\n".join(mail.split(b"\n", 2)[:2]) for mail in delivered(tree.bob.dir))
    assert heads == [b'Return-Path: <"j doe"@example.org>\nDelivered-To: bob@example.com',
                     b"Return-Path: <>\nDelivered-To: bob@example.com"]


def test_upper_case_recipient(tree: Tree) -> None:
    done = tree.deliver("Bob@Example.COM", MESSAGE, domain_dir=tree.domain_path)
    assert done.returncode == 0, done.stdout
    assert delivered(tree.bob.dir) == [HEADERS + MESSAGE]


def test_alias_domain_delivers_to_the_real_domain(tree: Tree) -> None:
    done = tree.deliver("bob@alias.test", MESSAGE)
    assert (done.returncode, done.stdout) == (0, b"")
    assert delivered(tree.bob.dir) == [HEADERS + MESSAGE]


def test_empty_message_is_delivered_as_its_headers(tree: Tree) -> None:
    done = tree.deliver("bob@example.com", b"")
    assert (done.returncode, done.stdout) == (0, b"")
    [path] = files(Path(tree.bob.dir, "Maildir"))
    assert path.read_bytes() == HEADERS
    assert path.name.endswith(f",S={len(HEADERS)}")


def test_binary_message_bytes_kept_exactly(tree: Tree) -> None:
    message = (b"Subject: =?utf-8?q?caf=C3=A9?=\r\nX-Bin: \xff\xfe\x00\x01\r\n\r\n"
               + bytes(range(256)) * 300 + b"no final newline")
    assert tree.deliver("bob@example.com", message).returncode == 0
    assert delivered(tree.bob.dir) == [HEADERS + message]


# ------------------------------------------------------------------------------------------------
# Unknown users: the instruction


def test_unknown_user_bounce(tree: Tree) -> None:
    done = tree.deliver("nobody@example.com", MESSAGE)
    assert (done.returncode, done.stdout, done.stderr) == (100, NO_USER, b"")
    assert delivered(tree.bob.dir) == []


def test_unknown_user_bounce_texts(tree: Tree) -> None:
    write_file(tree.domains / ".no-user.msg", "No such user anywhere here.\n")
    done = tree.deliver("nobody@example.com", MESSAGE)
    assert (done.returncode, done.stdout) == (100, b"No such user anywhere here.\n")
    write_file(tree.domain_path / ".no-user.msg", "example.com has no such user.\nTry again.\n")
    done = tree.deliver("nobody@example.com", MESSAGE)
    assert (done.returncode, done.stdout) == (100, b"example.com has no such user.\nTry again.\n")
    done = tree.deliver("nobody@alias.test", MESSAGE)
    assert (done.returncode, done.stdout) == (100, b"example.com has no such user.\nTry again.\n")


def test_unknown_user_delete(tree: Tree) -> None:
    before = snapshot(tree.domain_path)
    done = tree.deliver("nobody@example.com", MESSAGE, "delete")
    assert (done.returncode, done.stdout, done.stderr) == (0, b"", b"")
    assert snapshot(tree.domain_path) == before


def test_unknown_user_to_a_maildir_path(tree: Tree) -> None:
    catchall = make_maildir(tree.domain_path / "catchall" / "Maildir")
    instruction = f"{catchall}/"
    done = tree.deliver("nobody@example.com", MESSAGE, instruction)
    assert done.returncode == 0, done.stdout
    assert done.stdout == f"user does not exist, but will deliver to {catchall}/\n".encode()
    assert not (catchall / "Maildir").exists(), "the C bug: .../Maildir/Maildir/"
    [path] = files(catchall)
    assert path.read_bytes() == (b"Return-Path: <alice@example.org>\nDelivered-To: nobody@example.com\n"
                                 + MESSAGE)
    assert NAME.match(path.name)
    assert files(catchall, "tmp") == []


def test_unknown_user_to_a_directory_holding_a_maildir(tree: Tree) -> None:
    catchall = tree.domain_path / "catchall"
    make_maildir(catchall / "Maildir")
    for instruction in (str(catchall), f"{catchall}/"):
        done = tree.deliver("nobody@example.com", MESSAGE, instruction)
        assert done.returncode == 0, done.stdout
        assert done.stdout == f"user does not exist, but will deliver to {catchall}/\n".encode()
    contents = [p.read_bytes() for p in files(catchall / "Maildir")]
    assert contents == [b"Return-Path: <alice@example.org>\nDelivered-To: nobody@example.com\n"
                        + MESSAGE] * 2


def test_unknown_user_to_a_directory_with_its_own_qmail(tree: Tree) -> None:
    catchall = tree.domain_path / "catchall"
    make_maildir(catchall / "Maildir")
    make_maildir(catchall / "Other")
    write_file(catchall / ".qmail", "./Other/\n")
    done = tree.deliver("nobody@example.com", MESSAGE, str(catchall))
    assert done.returncode == 0, done.stdout
    assert files(catchall / "Maildir") == []
    assert len(files(catchall / "Other")) == 1


def test_unknown_user_to_an_mbox(tree: Tree) -> None:
    path = tree.root / "spool" / "catchall"
    path.parent.mkdir(mode=0o777)
    path.parent.chmod(0o777)
    for n in range(2):
        message = MESSAGE.replace(b"Hello Bob", f"Hello {n}".encode())
        done = tree.deliver("nobody@example.com", message, str(path))
        assert done.returncode == 0, done.stdout
        assert done.stdout == f"user does not exist, but will deliver to {path}\n".encode()
    raw = path.read_bytes()
    assert raw.startswith(b"From alice@example.org ")
    assert b"\n>From the start.\n" in raw, "mboxrd quoting of a body line starting with 'From '"
    box = mailbox.mbox(str(path))
    messages = list(box)
    box.close()
    assert len(messages) == 2
    for n, msg in enumerate(messages):
        assert msg["Return-Path"] == "<alice@example.org>"
        assert msg["Delivered-To"] == "nobody@example.com"
        assert msg["Subject"] == "hello"
        assert msg.get_payload() == f"Hello {n},\n>From the start.\n.\n"  # mailbox.mbox keeps the quote
    st = path.stat()
    assert (st.st_uid, st.st_mode & 0o777) == (VPOPMAIL_UID, 0o600)


@pytest.mark.parametrize("instruction", ["postmaster@example.net", "&postmaster@example.net"])
def test_unknown_user_forwarded(tree: Tree, instruction: str) -> None:
    base = fake_inject(tree)
    done = tree.deliver("nobody@example.com", MESSAGE, instruction)
    assert (done.returncode, done.stdout) == (0, b"")
    [record] = injected(base)
    assert record["argv"] == [str(base / "qmail-inject"), "--", "postmaster@example.net"]
    assert record["stdin"].encode("latin-1") == (
        b"Return-Path: <alice@example.org>\nDelivered-To: nobody@example.com\n" + MESSAGE)
    assert record["uid"] == VPOPMAIL_UID


@pytest.mark.parametrize("code", [100, 111])
def test_qmail_inject_failure(tree: Tree, code: int) -> None:
    base = fake_inject(tree, code)
    done = tree.deliver("nobody@example.com", MESSAGE, "postmaster@example.net")
    assert (done.returncode, done.stdout) == (code, b"system error calling qmail-inject\n")
    assert len(injected(base)) == 1


def test_qmail_inject_missing(tree: Tree) -> None:
    tree.write_settings(qmail_inject=tree.root / "no-such-qmail-inject")
    done = tree.deliver("nobody@example.com", MESSAGE, "postmaster@example.net")
    assert (done.returncode, done.stdout) == (111, b"Unable to launch qmail-inject.\n")


# ------------------------------------------------------------------------------------------------
# Loops, locked accounts, directories


@pytest.mark.parametrize("line", [b"Delivered-To: bob@example.com", b"delivered-to: BOB@Example.Com",
                                  b"DELIVERED-TO: bob@example.com\r"])
def test_loop(tree: Tree, line: bytes) -> None:
    message = b"Received: from x\n" + line + b"\n" + MESSAGE
    done = tree.deliver("bob@example.com", message)
    assert (done.returncode, done.stdout, done.stderr) == (100, LOOPING, b"")
    assert delivered(tree.bob.dir) == []


def test_no_loop_for_other_addresses_or_the_body(tree: Tree) -> None:
    message = (b"Delivered-To: bob@example.com.evil\nDelivered-To: xbob@example.com\nSubject: x\n\n"
               b"Delivered-To: bob@example.com\n")
    done = tree.deliver("bob@example.com", message)
    assert done.returncode == 0, done.stdout
    assert delivered(tree.bob.dir) == [HEADERS + message]


def test_locked_account_bounces(tree: Tree) -> None:
    tree.add_user("example.com", "locked", "secret", flags=BOUNCE_MAIL | 0x02)
    done = tree.deliver("locked@example.com", MESSAGE)
    assert (done.returncode, done.stdout) == (100, b"vdelivermail: account is locked email bounced "
                                                   b"locked@example.com\n")
    assert delivered(tree.domain_path / "locked") == []


def test_blank_dir_is_created_and_written_back(tree: Tree) -> None:
    carol = tree.add_user("example.com", "carol", "secret", blank_dir=True)
    assert carol.dir == ""
    done = tree.deliver("carol@example.com", MESSAGE)
    assert (done.returncode, done.stdout) == (0, b"")
    user_dir = tree.domain_path / "carol"  # second user of the domain: no hash directory yet
    for path in (user_dir, user_dir / "Maildir", user_dir / "Maildir" / "new", user_dir / "Maildir" / "tmp",
                 user_dir / "Maildir" / "cur"):
        st = path.stat()
        assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (VPOPMAIL_UID, VPOPMAIL_GID, 0o750), path
    assert delivered(user_dir) == [HEADERS.replace(b"bob@", b"carol@") + MESSAGE]
    vpasswd = (tree.domain_path / "vpasswd").read_text().splitlines()
    [line] = [entry for entry in vpasswd if entry.startswith("carol:")]
    assert line.split(":")[5] == str(user_dir)
    cdb = Reader((tree.domain_path / "vpasswd.cdb").read_bytes())
    assert cdb.get(b"carol").decode().split(":")[4] == str(user_dir)
    assert (tree.domain_path / ".dir-control").read_text().split("\n")[0] == "2"
    # the second delivery uses the stored directory
    assert tree.deliver("carol@example.com", MESSAGE).returncode == 0
    assert len(delivered(user_dir)) == 2
    assert sorted(p.name for p in tree.domain_path.iterdir() if p.is_dir()) == ["bob", "carol"]


def test_blank_dir_in_a_hashed_domain(tree: Tree) -> None:
    control = tree.domain_path / ".dir-control"
    write_file(control, "99\n0\n3\n0 0 0\n61 61 61\n0 2 4\n0 0 0\n\n", 0o600)
    dave = tree.add_user("example.com", "dave", "secret", blank_dir=True)
    assert dave.dir == ""
    done = tree.deliver("dave@example.com", MESSAGE)
    assert (done.returncode, done.stdout) == (0, b"")
    user_dir = tree.domain_path / "0" / "dave"  # the 100th user goes to 0/
    assert len(delivered(user_dir)) == 1
    assert (tree.domain_path / "0").stat().st_uid == VPOPMAIL_UID
    [line] = [e for e in (tree.domain_path / "vpasswd").read_text().splitlines() if e.startswith("dave:")]
    assert line.split(":")[5] == str(user_dir)


def test_domain_without_vpasswd_defers(tree: Tree) -> None:
    # Both user files gone (an unmounted or renamed domain directory): never "no such user".
    for name in ("vpasswd", "vpasswd.cdb"):
        (tree.domain_path / name).unlink()
    for instruction in ("bounce-no-mailbox", "delete"):
        done = tree.deliver("bob@example.com", MESSAGE, instruction)
        assert done.returncode == 111, done.stdout
    assert files(Path(tree.bob.dir, "Maildir")) == []


def test_deleted_user_dir_is_recreated(tree: Tree) -> None:
    shutil.rmtree(tree.bob.dir)
    done = tree.deliver("bob@example.com", MESSAGE)
    assert (done.returncode, done.stdout) == (0, b"")
    assert delivered(tree.bob.dir) == [HEADERS + MESSAGE]
    for path in (Path(tree.bob.dir), Path(tree.bob.dir, "Maildir"), Path(tree.bob.dir, "Maildir", "cur")):
        assert (path.stat().st_uid, path.stat().st_mode & 0o777) == (VPOPMAIL_UID, 0o700)  # vmake_maildir


def test_missing_maildir_below_an_existing_user_dir_is_recreated(tree: Tree) -> None:
    """vpopmail re-created only a missing user directory (a missing Maildir deferred until the
    mail bounced); we make the Maildir too, with the user directory's owner and vmake_maildir's 0700."""
    shutil.rmtree(Path(tree.bob.dir, "Maildir"))
    done = tree.deliver("bob@example.com", MESSAGE)
    assert (done.returncode, done.stdout) == (0, b"")
    assert delivered(tree.bob.dir) == [HEADERS + MESSAGE]
    for sub in ("", "cur", "new", "tmp"):
        path = Path(tree.bob.dir, "Maildir", sub)
        assert (path.stat().st_uid, path.stat().st_mode & 0o777) == (VPOPMAIL_UID, 0o700)


def test_unmakeable_maildir_defers(tree: Tree) -> None:
    shutil.rmtree(Path(tree.bob.dir, "Maildir"))
    Path(tree.bob.dir, "Maildir").write_text("a file where the Maildir should be\n")
    done = tree.deliver("bob@example.com", MESSAGE)
    assert done.returncode == 111, done.stdout
    assert done.stdout.startswith(b"Auto re-creation of maildir failed. (#5.9.9)")


# ------------------------------------------------------------------------------------------------
# The user's own .qmail


def qmail(tree: Tree, text: str, name: str = ".qmail", user_dir: str | Path | None = None) -> Path:
    return write_file(Path(user_dir or tree.bob.dir, name), text)


def test_dot_qmail_comment_only_counts_as_delivered(tree: Tree) -> None:
    qmail(tree, "# nothing to do\n")
    done = tree.deliver("bob@example.com", MESSAGE)
    assert (done.returncode, done.stdout) == (0, b"")
    assert delivered(tree.bob.dir) == []


def test_dot_qmail_empty_file_means_the_maildir(tree: Tree) -> None:
    qmail(tree, "")
    assert tree.deliver("bob@example.com", MESSAGE).returncode == 0
    assert delivered(tree.bob.dir) == [HEADERS + MESSAGE]


def test_dot_qmail_maildir_lines(tree: Tree) -> None:
    other = make_maildir(Path(tree.bob.dir, "Maildir", ".Archive"))
    qmail(tree, f"./Maildir/\n{other}/\n")
    done = tree.deliver("bob@example.com", MESSAGE)
    assert (done.returncode, done.stdout) == (0, b"")
    assert delivered(tree.bob.dir) == [HEADERS + MESSAGE]
    [archived] = files(other)
    assert archived.read_bytes() == HEADERS + MESSAGE


def test_dot_qmail_programs_get_the_message_and_environment(tree: Tree) -> None:
    out = tree.root / "out"
    out.mkdir(mode=0o777)
    out.chmod(0o777)
    qmail(tree, f"|cat > {out}/first; pwd > {out}/cwd; id -u > {out}/uid\n"
                f"| /usr/bin/env -0 > {out}/env; cat > {out}/second\n")
    done = tree.deliver("bob@example.com", MESSAGE, sender="alice@example.org")
    assert (done.returncode, done.stdout) == (0, b"")
    assert (out / "first").read_bytes() == MESSAGE
    assert (out / "second").read_bytes() == MESSAGE, "every program reads the message from offset 0"
    assert (out / "cwd").read_text().strip() == tree.bob.dir
    assert (out / "uid").read_text().strip() == str(VPOPMAIL_UID)
    env = dict(item.split("=", 1) for item in (out / "env").read_text().split("\0") if item)
    assert env["SHELL"] == "/bin/sh"
    assert env["EXT"] == "bob"
    assert env["HOST"] == "example.com"
    assert env["SENDER"] == "alice@example.org"
    assert env["LOCAL"] == "example.com-bob"
    assert env["RECIPIENT"] == "example.com-bob@example.com"
    assert env["DTLINE"] == "Delivered-To: example.com-bob@example.com\n"
    assert env["RPLINE"] == "Return-Path: <alice@example.org>\n"
    assert env["HOME"] == str(tree.domain_path)
    assert env["VPOP_CONFIG"] == str(tree.config)
    assert "LC_CTYPE" not in env
    assert delivered(tree.bob.dir) == []


@pytest.mark.parametrize(("code", "expected"), [
    (0, 0), (99, 99),
    (100, 100), (64, 100), (65, 100), (70, 100), (76, 100), (77, 100), (78, 100), (112, 100),
    (111, 111), (1, 111), (2, 111), (75, 111), (101, 111), (255, 111),
])
def test_dot_qmail_program_exit_codes(tree: Tree, code: int, expected: int) -> None:
    marker = tree.root / "later-line-ran"
    qmail(tree, f"|cat >/dev/null; exit {code}\n|touch {marker}\n./Maildir/\n")
    done = tree.deliver("bob@example.com", MESSAGE)
    assert done.returncode == expected, done.stdout
    if code == 0:
        assert marker.exists()
        assert delivered(tree.bob.dir) == [HEADERS + MESSAGE]
    else:
        assert not marker.exists(), "no line after a program that stopped the delivery may run"
        assert delivered(tree.bob.dir) == []


@pytest.mark.parametrize("signal_name", ["KILL", "SEGV", "TERM"])
def test_dot_qmail_program_killed_by_a_signal(tree: Tree, signal_name: str) -> None:
    marker = tree.root / "later-line-ran"
    qmail(tree, f"|kill -{signal_name} $$\n|touch {marker}\n")
    done = tree.deliver("bob@example.com", MESSAGE)
    assert (done.returncode, done.stdout) == (111, b"Aack, child crashed. (#4.3.0)\n")
    assert not marker.exists()
    assert delivered(tree.bob.dir) == []


def test_dot_qmail_program_that_does_not_read_stdin(tree: Tree) -> None:
    message = body(300_000)
    qmail(tree, "|true\n./Maildir/\n")
    done = tree.deliver("bob@example.com", message)
    assert done.returncode == 0, done.stdout
    assert delivered(tree.bob.dir) == [HEADERS + message]


def test_dot_qmail_mbox_line(tree: Tree) -> None:
    qmail(tree, "./mbox\n")
    assert tree.deliver("bob@example.com", MESSAGE).returncode == 0
    box = mailbox.mbox(str(Path(tree.bob.dir, "mbox")))
    [msg] = list(box)
    box.close()
    assert msg["Delivered-To"] == "bob@example.com"
    assert msg.get_payload() == "Hello Bob,\n>From the start.\n.\n"
    assert delivered(tree.bob.dir) == []


def test_dot_qmail_mbox_after_a_killed_delivery(tree: Tree) -> None:
    """What a delivery killed mid-write leaves: a record without its end and a dot-lock with a
    dead pid.  The next vdelivermail goes on at once and keeps the messages apart."""
    qmail(tree, "./mbox\n")
    assert tree.deliver("bob@example.com", MESSAGE).returncode == 0
    path = Path(tree.bob.dir, "mbox")
    half = b"From carol@example.net Tue Dec 03 10:00:00 2024\nSubject: cut off\n\nxxxx"
    write_file(path, path.read_bytes() + half, 0o600)
    gone = subprocess.Popen(["true"])
    gone.wait()
    write_file(Path(tree.bob.dir, "mbox.lock"), f"{gone.pid}\n")
    started = time.monotonic()
    done = tree.deliver("bob@example.com", MESSAGE.replace(b"Hello Bob", b"Hello again"))
    assert (done.returncode, done.stdout) == (0, b"")
    assert time.monotonic() - started < 5  # not LOCK_WAIT (30 s) for a lock nobody holds
    assert not Path(tree.bob.dir, "mbox.lock").exists()
    box = mailbox.mbox(str(path))
    messages = list(box)
    box.close()
    assert [m["Subject"] for m in messages] == ["hello", "cut off", "hello"]
    assert [m.get_payload() for m in messages] == [
        "Hello Bob,\n>From the start.\n.\n", "xxxx\n", "Hello again,\n>From the start.\n.\n"]


def test_dot_qmail_forward_lines(tree: Tree) -> None:
    base = fake_inject(tree)
    qmail(tree, "&carol@example.net\ndave@example.org\n./Maildir/\n")
    done = tree.deliver("bob@example.com", MESSAGE)
    assert (done.returncode, done.stdout) == (0, b"")
    records = injected(base)
    assert sorted(r["argv"][1:] for r in records) == [["--", "carol@example.net"], ["--", "dave@example.org"]]
    for record in records:
        assert record["stdin"].encode("latin-1") == HEADERS + MESSAGE
    assert delivered(tree.bob.dir) == [HEADERS + MESSAGE]


@pytest.mark.parametrize("line", ["carol@example.net", "&carol@example.net"])
def test_dot_qmail_forward_to_itself_is_a_loop(tree: Tree, line: str) -> None:
    base = fake_inject(tree)
    qmail(tree, line + "\n")
    message = b"Delivered-To: carol@example.net\n" + MESSAGE
    done = tree.deliver("bob@example.com", message)
    assert (done.returncode, done.stdout) == (100, LOOPING)
    assert injected(base) == []


def test_qmail_ext_chain(tree: Tree) -> None:
    log = tree.root / "which"
    tree.write_settings(qmail_ext=True)
    qmail(tree, f"|echo foo >> {log}\n", ".qmail-foo")
    qmail(tree, f"|echo foo-default >> {log}\n", ".qmail-foo-default")
    qmail(tree, f"|echo default >> {log}\n", ".qmail-default")
    for address in ("bob-foo@example.com", "bob-foo-bar@example.com", "bob-baz@example.com",
                    "bob-Foo@example.com"):
        done = tree.deliver(address, MESSAGE)
        assert (done.returncode, done.stdout) == (0, b""), address
    assert log.read_text().split() == ["foo", "foo-default", "default", "foo"]
    # no extension: the user's .qmail, here none, so the Maildir
    assert tree.deliver("bob@example.com", MESSAGE).returncode == 0
    assert delivered(tree.bob.dir) == [HEADERS + MESSAGE]
    Path(tree.bob.dir, ".qmail-default").unlink()
    done = tree.deliver("bob-baz@example.com", MESSAGE)
    assert done.returncode == 0
    assert len(delivered(tree.bob.dir)) == 2, "no matching file: the Maildir"


def test_without_qmail_ext_an_extension_is_an_unknown_user(tree: Tree) -> None:
    done = tree.deliver("bob-foo@example.com", MESSAGE)
    assert (done.returncode, done.stdout) == (100, NO_USER)


# ------------------------------------------------------------------------------------------------
# Quota


def quota_user(tree: Tree, quota: str, name: str = "quser") -> Path:
    record = tree.add_user("example.com", name, "secret", quota=quota)
    return Path(record.dir, "Maildir")


def test_over_quota_bounces(tree: Tree) -> None:
    maildir = quota_user(tree, "10000S")
    seed_usage(maildir, 7000)
    done = tree.deliver("quser@example.com", body(3001))
    assert (done.returncode, done.stdout) == (100, OVER_QUOTA)
    assert files(maildir) == [] and files(maildir, "tmp") == []
    done = tree.deliver("quser@example.com", body(3000))  # exactly the limit: allowed
    assert (done.returncode, done.stdout) == (0, b"")
    [path] = files(maildir)
    assert maildirsize_totals(maildir) == ("10000S", 7000 + path.stat().st_size, 2)
    assert maildirsize_totals(maildir)[1:] == recount(maildir)


def test_over_quota_message_files(tree: Tree) -> None:
    maildir = quota_user(tree, "10000S")
    seed_usage(maildir, 9999)
    write_file(tree.domains / ".over-quota.msg", "Global: mailbox full.\n")
    done = tree.deliver("quser@example.com", body(2000))
    # the file verbatim, then vpopmail's closing newline
    assert (done.returncode, done.stdout) == (100, b"Global: mailbox full.\n\n")
    write_file(tree.domain_path / ".over-quota.msg", "example.com: mailbox full.\n")
    done = tree.deliver("quser@example.com", body(2000))
    assert (done.returncode, done.stdout) == (100, b"example.com: mailbox full.\n\n")
    assert files(maildir) == []


def test_count_quota(tree: Tree) -> None:
    maildir = quota_user(tree, "1000000S,3C")
    seed_usage(maildir, 2000, "1000000000.M1P1Q1.a")
    seed_usage(maildir, 2000, "1000000000.M1P1Q2.b")
    assert tree.deliver("quser@example.com", body(2000)).returncode == 0
    done = tree.deliver("quser@example.com", body(2000))
    assert (done.returncode, done.stdout) == (100, OVER_QUOTA)
    assert len(files(maildir)) == 1
    assert maildirsize_totals(maildir)[0] == "1000000S,3C"
    assert maildirsize_totals(maildir)[1:] == recount(maildir)


def test_small_messages_get_through_a_full_mailbox(tree: Tree) -> None:
    maildir = quota_user(tree, "10000S")
    seed_usage(maildir, 20000)
    done = tree.deliver("quser@example.com", body(1024))
    assert (done.returncode, done.stdout) == (0, b"")
    done = tree.deliver("quser@example.com", body(1025))
    assert (done.returncode, done.stdout) == (100, OVER_QUOTA)
    assert len(files(maildir)) == 1
    tree.write_settings(quota_small_message_bytes=0)
    done = tree.deliver("quser@example.com", body(1024))
    assert (done.returncode, done.stdout) == (100, OVER_QUOTA)
    done = tree.deliver("quser@example.com", body(100))
    assert (done.returncode, done.stdout) == (100, OVER_QUOTA)
    assert len(files(maildir)) == 1
    assert maildirsize_totals(maildir)[1:] == recount(maildir)


def test_quota_warning_once_a_day(tree: Tree) -> None:
    maildir = quota_user(tree, "100000S")
    seed_usage(maildir, 89000)
    warning = "Subject: Your mailbox is almost full\n\nPlease delete some mail.\n"
    write_file(tree.domain_path / ".quotawarn.msg", warning)
    first = body(2000, "first")
    tree.clock = epoch("2027-01-09 08:00:00")
    done = tree.deliver("quser@example.com", first)  # 91 % afterwards
    assert (done.returncode, done.stdout) == (0, b"")
    contents = [p.read_bytes() for p in files(maildir)]
    assert len(contents) == 2
    [warn] = [c for c in contents if b"almost full" in c]
    head, _, rest = warn.partition(b"\n")
    assert head == b"Delivered-To: quser@example.com"
    date, _, text = rest.partition(b"\n")
    assert re.fullmatch(rb"Date: (Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep"
                        rb"|Oct|Nov|Dec) \d{4} \d\d:\d\d:\d\d \+0000", date), date
    assert text == warning.encode()
    assert (maildir / "quotawarn").exists()
    done = tree.deliver("quser@example.com", body(2000, "second"))
    assert (done.returncode, done.stdout) == (0, b"")
    contents = [p.read_bytes() for p in files(maildir)]
    assert len(contents) == 3
    assert sum(b"almost full" in c for c in contents) == 1, "one warning a day"
    assert maildirsize_totals(maildir)[1:] == recount(maildir), "the warning counts towards the quota"
    # a day later by the programs' clock: the next delivery warns again
    tree.clock += 86401
    assert tree.deliver("quser@example.com", body(500, "third")).returncode == 0
    assert sum(b"almost full" in p.read_bytes() for p in files(maildir)) == 2


def test_quota_warning_once_a_day_by_the_clock(tree: Tree) -> None:
    maildir = quota_user(tree, "1000000S")
    seed_usage(maildir, 950000)
    write_file(tree.domain_path / ".quotawarn.msg", "Subject: almost full\n\nDelete some mail.\n")

    def warnings() -> list[bytes]:
        return [c for c in (p.read_bytes() for p in files(maildir)) if b"almost full" in c]

    tree.clock = start = epoch("2027-03-27 23:30:00")  # the night European clocks go forward
    assert tree.deliver("quser@example.com", body(100, "a")).returncode == 0
    (first,) = warnings()
    assert b"\nDate: Sat, 27 Mar 2027 23:30:00 +0000\n" in first
    assert (maildir / "quotawarn").stat().st_mtime == start
    for offset, expected in ((3600, 1), (86399, 1), (86400, 2), (86400 + 3600, 2), (2 * 86400, 3)):
        tree.clock = start + offset
        assert tree.deliver("quser@example.com", body(100, str(offset))).returncode == 0
        assert len(warnings()) == expected, offset
    names = sorted(p.name for p in files(maildir))
    assert {name.split(".", 1)[0] for name in names} == {
        str(start + offset) for offset in (0, 3600, 86399, 86400, 86400 + 3600, 2 * 86400)}


def test_no_warning_below_the_threshold_or_without_a_message_file(tree: Tree) -> None:
    maildir = quota_user(tree, "100000S")
    seed_usage(maildir, 80000)
    write_file(tree.domains / ".quotawarn.msg", "Subject: nearly full\n\nwarn\n")
    assert tree.deliver("quser@example.com", body(2000)).returncode == 0  # 82 %
    assert len(files(maildir)) == 1
    assert not (maildir / "quotawarn").exists()
    (tree.domains / ".quotawarn.msg").unlink()
    tree.clock = epoch("2027-06-30 23:00:00")
    assert tree.deliver("quser@example.com", body(9000)).returncode == 0  # 91 %, no message file
    assert len(files(maildir)) == 2  # nothing to send
    # but vpopmail touches quotawarn all the same (0644), so the day of the next warning starts now
    st = (maildir / "quotawarn").stat()
    assert (st.st_mode & 0o777, st.st_size, st.st_mtime, st.st_uid) == (0o644, 0, tree.clock, VPOPMAIL_UID)
    tree.clock += 3600
    assert tree.deliver("quser@example.com", body(100)).returncode == 0
    assert (maildir / "quotawarn").stat().st_mtime == tree.clock - 3600  # at most once a day
    tree.clock += 86400
    assert tree.deliver("quser@example.com", body(100)).returncode == 0
    assert (maildir / "quotawarn").stat().st_mtime == tree.clock


def test_over_quota_touches_quotawarn_without_a_message_file(tree: Tree) -> None:
    maildir = quota_user(tree, "10000S")
    seed_usage(maildir, 9500)
    tree.clock = epoch("2027-02-01 00:00:01")
    done = tree.deliver("quser@example.com", body(2000))
    assert (done.returncode, done.stdout) == (100, OVER_QUOTA)
    assert files(maildir) == []
    assert (maildir / "quotawarn").stat().st_mtime == tree.clock


def test_over_quota_sends_the_warning_and_bounces(tree: Tree) -> None:
    maildir = quota_user(tree, "10000S")
    seed_usage(maildir, 9500)
    write_file(tree.domains / ".quotawarn.msg", "Subject: full\n\nYour mailbox is full.\n")
    done = tree.deliver("quser@example.com", body(2000))
    assert (done.returncode, done.stdout) == (100, OVER_QUOTA)
    [warn] = files(maildir)
    assert warn.read_bytes().endswith(b"\nSubject: full\n\nYour mailbox is full.\n")


def test_maildirsize_appended_and_consistent(tree: Tree) -> None:
    maildir = quota_user(tree, "1000000S,1000C")
    sizes = [1500, 2500, 40, 0, 70000]
    for size in sizes:
        message = body(size) if size else b""
        done = tree.deliver("quser@example.com", message)
        assert (done.returncode, done.stdout) == (0, b"")
    lines = (maildir / "maildirsize").read_text().split("\n")
    assert lines[0] == "1000000S,1000C"
    assert len(lines) == 1 + 1 + len(sizes) + 1, "first count line, then one appended line per delivery"
    stored = sorted(p.stat().st_size for p in files(maildir))
    assert sorted(int(line.split()[0]) for line in lines[2:-1]) == stored
    assert all(line.split()[1] == "1" for line in lines[2:-1])
    assert maildirsize_totals(maildir)[1:] == recount(maildir) == (sum(stored), len(sizes))
    st = (maildir / "maildirsize").stat()
    assert st.st_uid == VPOPMAIL_UID


def test_noquota_writes_no_maildirsize(tree: Tree) -> None:
    for quota in ("NOQUOTA", "NO", ""):
        maildir = quota_user(tree, quota, f"u{len(quota)}")
        done = tree.deliver(f"u{len(quota)}@example.com", body(5000))
        assert (done.returncode, done.stdout) == (0, b"")
        assert len(files(maildir)) == 1
        assert not (maildir / "maildirsize").exists(), quota


def test_quota_from_maildirsize_when_pw_shell_has_none(tree: Tree) -> None:
    """A .qmail Maildir line has no pw_shell quota: the first line of maildirsize counts."""
    maildir = Path(tree.bob.dir, "Maildir")
    write_file(maildir / "maildirsize", "5000S\n4000 1\n", 0o644)
    qmail(tree, "./Maildir/\n")
    done = tree.deliver("bob@example.com", body(2000))
    assert (done.returncode, done.stdout) == (100, OVER_QUOTA)
    assert files(maildir) == []


def test_parallel_deliveries_into_one_quota_mailbox(tree: Tree) -> None:
    size = 2000
    maildir = quota_user(tree, f"{40 * (size + 70)}S")  # room for about half of 80 messages
    messages = {f"m{w}-{n}": tree.message_file(body(size, f"m{w}-{n}")) for w in range(8) for n in range(10)}

    def worker(w: int) -> list[tuple[str, int, bytes]]:
        results = []
        for n in range(10):
            tag = f"m{w}-{n}"
            done = tree.deliver("quser@example.com", messages[tag])
            results.append((tag, done.returncode, done.stdout))
        return results

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = [r for chunk in pool.map(worker, range(8)) for r in chunk]
    assert {(code, out) for _, code, out in outcomes} <= {(0, b""), (100, OVER_QUOTA)}
    accepted = sorted(tag for tag, code, _ in outcomes if code == 0)
    stored = [p.read_bytes() for p in files(maildir)]
    tags = sorted(re.search(rb"Subject: (m\d-\d)\n", m).group(1).decode() for m in stored)
    assert tags == accepted, "every accepted message stored exactly once, no bounced one stored"
    assert 30 <= len(accepted) <= 48
    assert files(maildir, "tmp") == []
    quota_line, total, count = maildirsize_totals(maildir)
    assert (total, count) == recount(maildir) == (sum(len(m) for m in stored), len(stored))
    from vpop.quota import recalculate

    copy = tree.root / "copy" / "Maildir"
    shutil.copytree(maildir, copy, symlinks=True)
    fresh = recalculate(str(copy), quota_line)
    assert (fresh[0], fresh[1], fresh.unsure) == (total, count, False)


# ------------------------------------------------------------------------------------------------
# Big messages, full disks

RSS_WRAPPER = r'''
import json, os, sys
pid = os.fork()
if pid == 0:
    try:
        os.execv(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    json.dump({"maxrss_kib": usage.ru_maxrss}, f)
sys.exit(os.waitstatus_to_exitcode(status) & 0xFF)
'''


def test_200_mb_message_with_flat_memory(tree: Tree) -> None:
    chunk = b"".join(f"line {i:07d} {'x' * 50}\n".encode() for i in range(16384))  # 1 MiB of 64-byte lines
    assert len(chunk) == 1 << 20
    head = b"From: alice@example.org\nSubject: big\n\n"
    path = tree.root / "big-message"
    digest = hashlib.sha256(HEADERS + head)
    with open(path, "wb") as handle:
        handle.write(head)
        for _ in range(200):
            handle.write(chunk)
            digest.update(chunk)
    path.chmod(0o644)
    report = tree.root / "rss.json"
    try:
        started = time.monotonic()
        done = tree.deliver("bob@example.com", path, argv=[
            "/usr/bin/python3", "-I", "-S", "-c", RSS_WRAPPER, str(report), program("vdelivermail"), "",
            "bounce-no-mailbox"])
        elapsed = time.monotonic() - started
        assert (done.returncode, done.stdout, done.stderr) == (0, b"", b"")
        maxrss_mib = json.loads(report.read_text())["maxrss_kib"] / 1024
        assert maxrss_mib < 40, f"peak RSS {maxrss_mib:.1f} MiB"
        [stored] = files(Path(tree.bob.dir, "Maildir"))
        expected_size = len(HEADERS) + len(head) + 200 * len(chunk)
        assert stored.stat().st_size == expected_size
        assert stored.name.endswith(f",S={expected_size}")
        check = hashlib.sha256()
        with open(stored, "rb") as handle:
            while block := handle.read(1 << 22):
                check.update(block)
        assert check.hexdigest() == digest.hexdigest()
        assert elapsed < 30
        # the same measurement sees a process that does hold 60 MiB
        hog = tree.deliver("bob@example.com", MESSAGE, argv=[
            "/usr/bin/python3", "-I", "-S", "-c", RSS_WRAPPER, str(report), "/usr/bin/python3", "-c",
            "b = bytearray(60 << 20); b[::4096] = b'x' * len(b[::4096])"])
        assert hog.returncode == 0
        assert json.loads(report.read_text())["maxrss_kib"] / 1024 > 60
    finally:
        path.unlink(missing_ok=True)
        for stored in Path(tree.bob.dir, "Maildir", "new").iterdir():
            stored.unlink()


@pytest.fixture
def small_fs(tree: Tree) -> Iterator[Path]:
    """bob's Maildir on a 1 MiB tmpfs (unmounted afterwards)."""
    maildir = Path(tree.bob.dir, "Maildir")
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size=1m,mode=0750,uid={VPOPMAIL_UID},gid={VPOPMAIL_GID}",
                    "vpop-test-full", str(maildir)], check=True)
    try:
        make_maildir(maildir)
        yield maildir
    finally:
        subprocess.run(["umount", str(maildir)], check=True)


def test_full_filesystem_defers(tree: Tree, small_fs: Path) -> None:
    done = tree.deliver("bob@example.com", body(2_000_000))
    assert (done.returncode, done.stdout) == (111, b"write failed errno = 28\nsystem error\n")
    assert files(small_fs) == [] and files(small_fs, "tmp") == []
    # the file system itself still works: a small message gets through
    done = tree.deliver("bob@example.com", MESSAGE)
    assert (done.returncode, done.stdout) == (0, b"")
    assert [p.read_bytes() for p in files(small_fs)] == [HEADERS + MESSAGE]


def test_full_filesystem_with_quota_defers(tree: Tree, small_fs: Path) -> None:
    """A quota'd user on a full disk: 111 (the disk), not 100 (the quota)."""
    lines = (tree.domain_path / "vpasswd").read_text().replace(":NOQUOTA:", ":50000000S:")
    write_file(tree.domain_path / "vpasswd", lines)
    (tree.domain_path / "vpasswd.cdb").unlink()
    done = tree.deliver("bob@example.com", body(1_500_000))
    assert (done.returncode, done.stdout) == (111, b"write failed errno = 28\nsystem error\n")
    assert files(small_fs) == [] and files(small_fs, "tmp") == []
    assert maildirsize_totals(small_fs)[1:] == (0, 0), "nothing counted for a message not delivered"
