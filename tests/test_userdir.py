"""vpop.files.UserDir, the one way root uses a file in a directory a mail user can write.

The end-to-end attacks (uid 89 against the installed vchkpw and clearopensmtp) are in
test_rootfiles.py; these are the helper's own rules, on real directories owned by uid 89.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import VPOPMAIL_GID, VPOPMAIL_UID, remove_tree, shared_tmpdir
from vpop.files import ANY_OWNER, FileProblem, UserDir, read_file

OTHER_UID = 12345  # neither root nor the directory's owner


@pytest.fixture
def home() -> Iterator[Path]:
    """A fresh ``~vpopmail`` (uid 89) with an ``etc`` (uid 89) in it, under a shared /tmp dir."""
    root = shared_tmpdir("vpop-userdir-")
    try:
        home = root / "vpopmail"
        (home / "etc").mkdir(parents=True)
        for path in (home, home / "etc"):
            os.chown(path, VPOPMAIL_UID, VPOPMAIL_GID)
        yield home
    finally:
        remove_tree(root)


def as_vpopmail(*argv: str | Path) -> None:
    subprocess.run([str(arg) for arg in argv], check=True, user=VPOPMAIL_UID, group=VPOPMAIL_GID,
                   extra_groups=[VPOPMAIL_GID], timeout=15)


def owned(path: Path, uid: int, data: bytes = b"data\n") -> Path:
    path.write_bytes(data)
    os.chown(path, uid, uid)
    return path


def test_files_of_the_owner_and_of_root_are_read(home: Path) -> None:
    etc = home / "etc"
    owned(etc / "mine", VPOPMAIL_UID, b"89\n")
    owned(etc / "roots", 0, b"0\n")
    with UserDir(str(etc)) as directory:
        assert (directory.uid, directory.gid) == (VPOPMAIL_UID, VPOPMAIL_GID)
        assert directory.read("mine") == b"89\n"
        assert directory.read("roots") == b"0\n"
        assert directory.read("absent") is None


def test_a_foreign_file_is_refused(home: Path) -> None:
    """A file of a third uid can only be a hard link the directory's owner made to it."""
    owned(home / "etc" / "open-smtp", OTHER_UID, b"someone else's\n")
    with pytest.raises(FileProblem) as caught:
        read_file(str(home / "etc" / "open-smtp"))
    assert caught.value.message == (f"{home}/etc/open-smtp: refused: owned by uid {OTHER_UID}, neither root "
                                    f"nor the directory's owner (uid {VPOPMAIL_UID})")
    assert caught.value.exit_code == 111


def test_a_hard_link_to_a_root_file_is_refused(home: Path) -> None:
    """uid 89 can make such a link only when ``fs.protected_hardlinks`` is 0 (a host-wide setting this
    test leaves alone), so root plants it here, where uid 89 would have."""
    secret = owned(home.parent / "shadow", 0, b"root:$6$x:19000::::::\n")
    secret.chmod(0o600)
    os.link(secret, home / "etc" / "open-smtp")
    with pytest.raises(FileProblem) as caught:
        read_file(str(home / "etc" / "open-smtp"))
    assert caught.value.reason == (f"refused: owned by root with 2 links, in a directory uid {VPOPMAIL_UID} "
                                   f"can write")
    assert b"$6$" not in caught.value.message.encode()


def test_rewrite_checks_before_it_truncates(home: Path) -> None:
    """lastauth is rewritten in place: a planted hard link must be refused before O_TRUNC could act."""
    secret = owned(home.parent / "precious", 0, b"precious\n")
    os.link(secret, home / "lastauth")
    with UserDir(str(home), (VPOPMAIL_UID,)) as directory, pytest.raises(FileProblem):
        directory.rewrite("lastauth", b"192.0.2.1")
    assert secret.read_bytes() == b"precious\n"


def test_rewrite_creates_and_stamps(home: Path) -> None:
    with UserDir(str(home), (VPOPMAIL_UID,)) as directory:
        directory.rewrite("lastauth", b"192.0.2.1", 0o600, VPOPMAIL_UID, VPOPMAIL_GID, mtime=1_800_000_000)
        directory.rewrite("lastauth", b"10.0.0.1", 0o600, VPOPMAIL_UID, VPOPMAIL_GID, mtime=1_800_000_060)
    info = (home / "lastauth").stat()
    assert (home / "lastauth").read_bytes() == b"10.0.0.1"
    assert (info.st_uid, info.st_gid, info.st_mode & 0o777, info.st_mtime) == (89, 89, 0o600, 1_800_000_060)


def test_symlink_and_fifo_are_refused_unopened(home: Path) -> None:
    etc = home / "etc"
    as_vpopmail("ln", "-s", "/etc/shadow", etc / "tcp.smtp")
    as_vpopmail("mkfifo", etc / "open-smtp")
    with UserDir(str(etc)) as directory:
        for name, reason in (("tcp.smtp", "refused: a symbolic link (never followed here)"),
                             ("open-smtp", "refused: a FIFO, not a regular file")):
            uses = (directory.read, directory.lock, lambda entry: directory.rewrite(entry, b"x"),
                    lambda entry: directory.cdb_get(entry, b"k"))
            for use in uses:
                with pytest.raises(FileProblem) as caught:
                    use(name)
                assert caught.value.reason == reason


def test_directory_that_is_a_link_or_a_stranger_is_refused(home: Path) -> None:
    elsewhere = home.parent / "elsewhere"
    elsewhere.mkdir()
    as_vpopmail("mv", home / "etc", home / "etc.real")
    as_vpopmail("ln", "-s", elsewhere, home / "etc")
    with pytest.raises(FileProblem) as caught:
        UserDir(str(home / "etc"))
    assert caught.value.reason == "refused: a symbolic link (never followed here)"
    # trailing slashes do not make it followed
    with pytest.raises(FileProblem):
        UserDir(str(home / "etc") + "//")
    stranger = home / "stranger"
    stranger.mkdir()
    os.chown(stranger, OTHER_UID, OTHER_UID)
    with pytest.raises(FileProblem) as caught:
        UserDir(str(stranger))  # the default: root or the owner of the parent (89)
    assert caught.value.reason == f"refused: a directory owned by uid {OTHER_UID}, expected uid 0 or 89"
    with pytest.raises(FileProblem):
        UserDir(str(stranger), (VPOPMAIL_UID,))
    UserDir(str(stranger), (OTHER_UID,)).close()
    UserDir(str(stranger), ANY_OWNER).close()
    os.chown(stranger, 0, 0)
    UserDir(str(stranger), (VPOPMAIL_UID,)).close()  # root's always passes


def test_the_descriptor_keeps_the_directory(home: Path) -> None:
    """A swap after the directory was opened changes nothing: every file goes through its fd."""
    elsewhere = home.parent / "elsewhere"
    elsewhere.mkdir()
    with UserDir(str(home / "etc")) as directory:
        as_vpopmail("mv", home / "etc", home / "etc.real")
        as_vpopmail("ln", "-s", elsewhere, home / "etc")
        directory.replace("open-smtp", lambda handle: handle.write(b"kept\n"), VPOPMAIL_UID, VPOPMAIL_GID)
        os.close(directory.lock("open-smtp.lock", VPOPMAIL_UID, VPOPMAIL_GID))
    assert list(elsewhere.iterdir()) == []
    assert sorted(p.name for p in (home / "etc.real").iterdir()) == ["open-smtp", "open-smtp.lock"]


def test_lock_is_handed_to_the_owner_only_when_empty_and_single(home: Path) -> None:
    etc = home / "etc"
    owned(etc / "empty.lock", 0, b"")
    owned(etc / "full.lock", 0, b"not a lock file\n")
    with UserDir(str(etc)) as directory:
        for name in ("new.lock", "empty.lock", "full.lock"):
            os.close(directory.lock(name, VPOPMAIL_UID, VPOPMAIL_GID))
    assert (etc / "new.lock").stat().st_mode & 0o777 == 0o600
    owners = {name: (etc / name).stat().st_uid for name in ("new.lock", "empty.lock", "full.lock")}
    assert owners == {"new.lock": VPOPMAIL_UID, "empty.lock": VPOPMAIL_UID, "full.lock": 0}


def test_size_limit(home: Path) -> None:
    owned(home / "big", VPOPMAIL_UID, b"x" * 100)
    with UserDir(str(home), (VPOPMAIL_UID,)) as directory:
        assert directory.read("big", 100) == b"x" * 100
        assert directory.read("big", 10, truncate=True) == b"x" * 10
        with pytest.raises(FileProblem) as caught:
            directory.read("big", 99)
        assert caught.value.reason == "refused: larger than 99 bytes"


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "/etc/shadow"])
def test_only_names_in_the_directory(home: Path, name: str) -> None:
    with UserDir(str(home), (VPOPMAIL_UID,)) as directory, pytest.raises(ValueError):
        directory.read(name)


def test_missing_directory_reads_as_no_file(home: Path) -> None:
    assert read_file(str(home / "absent" / "vlimits.default")) is None
    with pytest.raises(FileProblem) as caught:
        UserDir(str(home / "absent"))
    assert caught.value.reason == "cannot open the directory: No such file or directory"
