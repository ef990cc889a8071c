"""vpop.maildir: names, exact bytes, O_EXCL, failures leave nothing behind, flat memory."""

import errno
import json
import os
import re
import stat
import subprocess
from pathlib import Path

import pytest
from helpers import spawn_python
from vpop import maildir
from vpop.errors import PermanentFailure, TemporaryFailure

#: Directory holding the ``vpop`` package the tests import, for the subprocesses.

NAME_RE = re.compile(r"^(\d+)\.M(\d{1,6})P(\d+)Q(\d+)\.([^/:]+),S=(\d+)$")


def run_python(code: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter that imports the same ``vpop`` as this test."""
    with spawn_python(code, *args) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def message_file(tmp_path: Path, data: bytes, name: str = "msg") -> int:
    """An fd on a regular file holding ``data``, positioned at its end (as after writing it)."""
    path = tmp_path / name
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    os.lseek(fd, 0, os.SEEK_END)
    return fd


@pytest.fixture
def md(tmp_path: Path) -> str:
    path = str(tmp_path / "dom.example" / "bob" / "Maildir")
    maildir.make_maildir(path)
    return path


def listing(md: str, sub: str) -> list[str]:
    return sorted(os.listdir(os.path.join(md, sub)))


# --------------------------------------------------------------------------------------------------
# names


def test_unique_name_modern_form() -> None:
    a = maildir.unique_name(1234)
    b = maildir.unique_name(1234)
    ma, mb = NAME_RE.match(a), NAME_RE.match(b)
    assert ma and mb, (a, b)
    assert int(ma.group(3)) == os.getpid()
    assert int(mb.group(4)) == int(ma.group(4)) + 1  # Q counts deliveries of this process
    assert ma.group(6) == "1234"
    assert a != b
    assert "," not in maildir.unique_name()


def test_hostname_escaping() -> None:
    assert maildir.escape_hostname("a/b:c") == "a\\057b\\072c"
    assert maildir.escape_hostname("mx1.example.com") == "mx1.example.com"
    host = maildir.safe_hostname()
    assert "/" not in host and ":" not in host


@pytest.mark.parametrize(
    ("name", "size"),
    [
        ("1.M2P3Q4.host,S=1234", 1234),
        ("1.M2P3Q4.host,S=1234:2,S", 1234),
        ("1.M2P3Q4.host,S=12,W=15:2,ST", 12),
        ("1.2.host", None),
        ("1.2.host:2,S=99", None),  # only before the ':'
        ("1.2.host,S=:2,", 0),
        ("new/1.2.host,S=7", 7),
    ],
)
def test_size_from_name(name: str, size: int | None) -> None:
    assert maildir.size_from_name(name) == size


@pytest.mark.parametrize(
    ("path", "email"),
    [
        ("/home/vpopmail/domains/example.com/bob/Maildir/", "bob@example.com"),
        ("/home/vpopmail/domains/example.com/0/bob/Maildir/", "bob@example.com"),
        ("/home/vpopmail/domains/3/example.com/1/2/bob/Maildir/", "bob@example.com"),
        ("/home/vpopmail/domains/example.com/bob/Maildir", "bob@example.com"),
        ("/home/vpopmail/domains/example.com/bob/Maildir/.Sent/", "bob@example.com"),
        ("/home/vpopmail/domains/example/bob/Maildir/", ""),
        ("/var/mail/bob/", ""),
        ("/Maildir/", ""),
    ],
)
def test_maildir_to_email(path: str, email: str) -> None:
    assert maildir.maildir_to_email(path) == email


# --------------------------------------------------------------------------------------------------
# make_maildir


def test_make_maildir_modes_and_owner(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "Maildir"
    uid = 4321 if os.geteuid() == 0 else None
    maildir.make_maildir(str(path), uid=uid, gid=uid, mode=0o750)
    for d in (tmp_path / "a", tmp_path / "a" / "b", path, path / "cur", path / "new", path / "tmp"):
        st = d.stat()
        assert stat.S_IMODE(st.st_mode) == 0o750, d
        if uid is not None:
            assert (st.st_uid, st.st_gid) == (uid, uid)
    # idempotent, and existing directories are not touched
    os.chmod(path / "cur", 0o700)
    maildir.make_maildir(str(path))
    assert stat.S_IMODE((path / "cur").stat().st_mode) == 0o700


# --------------------------------------------------------------------------------------------------
# deliver


def test_deliver_exact_bytes_new_only(md: str, tmp_path: Path) -> None:
    body = b"Subject: hi\n\nline one\r\nFrom me\n\x00\xff binary\n"
    headers = b"Return-Path: <a@b.example>\nDelivered-To: bob@dom.example\n"
    fd = message_file(tmp_path, body)
    path = maildir.deliver(md, headers, fd)
    os.close(fd)
    assert os.path.dirname(path) == os.path.join(md, "new")
    with open(path, "rb") as f:
        assert f.read() == headers + body
    m = NAME_RE.match(os.path.basename(path))
    assert m and int(m.group(6)) == len(headers) + len(body) == os.path.getsize(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert listing(md, "tmp") == []
    assert listing(md, "cur") == []
    assert listing(md, "new") == [os.path.basename(path)]


def test_deliver_reads_from_start_regardless_of_position(md: str, tmp_path: Path) -> None:
    fd = message_file(tmp_path, b"0123456789")
    os.lseek(fd, 4, os.SEEK_SET)
    with open(maildir.deliver(md, b"", fd), "rb") as f:
        assert f.read() == b"0123456789"
    with open(maildir.deliver(md, b"H: 1\n", fd, message_offset=6), "rb") as f:
        assert f.read() == b"H: 1\n6789"
    os.close(fd)


def test_deliver_empty_message(md: str, tmp_path: Path) -> None:
    fd = message_file(tmp_path, b"")
    path = maildir.deliver(md, b"Delivered-To: x@y\n", fd)
    os.close(fd)
    assert Path(path).read_bytes() == b"Delivered-To: x@y\n"
    assert path.endswith(",S=18")


@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_deliver_small_chunks(md: str, tmp_path: Path, chunk: int) -> None:
    body = bytes(range(256)) * 50
    fd = message_file(tmp_path, body)
    path = maildir.deliver(md, b"X: y\n", fd, chunk=chunk)
    os.close(fd)
    assert Path(path).read_bytes() == b"X: y\n" + body


def test_deliver_from_pipe(md: str) -> None:
    r, w = os.pipe()
    os.write(w, b"piped message\n")
    os.close(w)
    path = maildir.deliver(md, b"H: v\n", r)
    os.close(r)
    assert Path(path).read_bytes() == b"H: v\npiped message\n"
    assert path.endswith(",S=19")


def test_existing_tmp_name_is_never_overwritten(md: str, tmp_path: Path) -> None:
    body = b"the new message\n"
    fd = message_file(tmp_path, body)
    taken = "1000000000.M1P1Q1.otherhost"
    victim = Path(md, "tmp", f"{taken},S={len(body)}")
    victim.write_bytes(b"someone else's half-written file")
    path = maildir.deliver(md, b"", fd, name=taken)
    os.close(fd)
    assert victim.read_bytes() == b"someone else's half-written file"
    assert taken not in path
    assert Path(path).read_bytes() == body
    assert listing(md, "tmp") == [victim.name]


def test_deliver_twice_same_second_distinct(md: str, tmp_path: Path) -> None:
    fd = message_file(tmp_path, b"x")
    paths = {maildir.deliver(md, b"", fd) for _ in range(50)}
    os.close(fd)
    assert len(paths) == 50
    assert len(listing(md, "new")) == 50


def test_open_failure_text(tmp_path: Path) -> None:
    md = tmp_path / "broken"
    (md / "new").mkdir(parents=True)  # no tmp/
    fd = message_file(tmp_path, b"m")
    with pytest.raises(TemporaryFailure) as info:
        maildir.deliver(str(md), b"", fd)
    os.close(fd)
    msg = info.value.message
    first, second = msg.split("\n")
    assert first.startswith(f"can not open new email file errno={errno.ENOENT} file={md}/tmp/")
    assert second == "system error"
    assert info.value.exit_code == 111


def test_link_failure_cleans_tmp(tmp_path: Path) -> None:
    md = tmp_path / "nonew"
    (md / "tmp").mkdir(parents=True)  # no new/
    fd = message_file(tmp_path, b"m")
    with pytest.raises(TemporaryFailure) as info:
        maildir.deliver(str(md), b"", fd)
    os.close(fd)
    assert info.value.message.startswith(f"rename failed {md}/tmp/")
    assert info.value.message.endswith(f"errno = {errno.ENOENT}\nsystem error")
    assert os.listdir(md / "tmp") == []


def test_read_error_is_temporary(md: str) -> None:
    fd = os.open(md, os.O_RDONLY | os.O_DIRECTORY)  # read() on a directory: EISDIR
    with pytest.raises(TemporaryFailure) as info:
        maildir.deliver(md, b"H: v\n", fd)
    os.close(fd)
    assert info.value.message == f"read failed errno = {errno.EISDIR}\nsystem error"
    assert listing(md, "tmp") == [] and listing(md, "new") == []


WRITE_FAILURE = """
    import json, resource, signal, sys
    from vpop import maildir
    from vpop.errors import VpopError
    md, msg = sys.argv[1], sys.argv[2]
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    fd = __import__("os").open(msg, 0)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
    try:
        print(json.dumps({"path": maildir.deliver(md, b"Delivered-To: x@y\\n", fd)}))
    except VpopError as exc:
        print(json.dumps({"type": type(exc).__name__, "message": exc.message, "code": exc.exit_code}))
"""


def test_write_failure_rlimit_fsize(md: str, tmp_path: Path) -> None:
    msg = tmp_path / "big"
    msg.write_bytes(b"x" * 100_000)
    proc = run_python(WRITE_FAILURE, md, str(msg))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result == {
        "type": "TemporaryFailure",
        "message": f"write failed errno = {errno.EFBIG}\nsystem error",
        "code": 111,
    }
    assert listing(md, "new") == []
    assert listing(md, "tmp") == []


def test_write_under_limit_succeeds(md: str, tmp_path: Path) -> None:
    msg = tmp_path / "small"
    msg.write_bytes(b"y" * 1000)
    proc = run_python(WRITE_FAILURE, md, str(msg))
    assert proc.returncode == 0, proc.stderr
    path = json.loads(proc.stdout)["path"]
    assert Path(path).read_bytes() == b"Delivered-To: x@y\n" + b"y" * 1000


def test_edquot_maps_to_permanent() -> None:
    exc = maildir._write_error(OSError(errno.EDQUOT, "quota"))
    assert isinstance(exc, PermanentFailure) and exc.message == "user is over quota"
    exc = maildir._open_error(OSError(errno.EDQUOT, "quota"), "/x/tmp/y")
    assert isinstance(exc, PermanentFailure) and exc.message == "user is over quota"
    exc = maildir._write_error(OSError(errno.ENOSPC, "full"))
    assert isinstance(exc, TemporaryFailure)
    assert exc.message == f"write failed errno = {errno.ENOSPC}\nsystem error"


BIG_DELIVERY = """
    import json, os, resource, sys
    from vpop import maildir
    md, msg = sys.argv[1], sys.argv[2]
    # Linux keeps ru_maxrss across exec: this interpreter inherited the peak of the (big) pytest
    # process that started it.  A fork of it starts from its own small size, so the delivery is
    # measured there.
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        fd = os.open(msg, os.O_RDONLY)
        path = maildir.deliver(md, b"Delivered-To: big@example.com\\n", fd)
        rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        os.write(w, json.dumps({"path": path, "rss_kib": rss_kib}).encode())
        os._exit(0)
    os.close(w)
    out = b""
    while chunk := os.read(r, 65536):
        out += chunk
    _, status = os.waitpid(pid, 0)
    assert status == 0, status
    print(out.decode())
"""


def test_200mb_message_flat_memory(md: str, tmp_path: Path) -> None:
    size = 200 * 1024 * 1024
    block = (b"0123456789abcdef" * 63 + b"0123456789abcde\n") * 1024  # 1 MiB of 1 KiB lines
    msg = tmp_path / "huge"
    with open(msg, "wb") as f:
        for _ in range(size // len(block)):
            f.write(block)
    try:
        proc = run_python(BIG_DELIVERY, md, str(msg), timeout=300)
        assert proc.returncode == 0, proc.stderr
        result = json.loads(proc.stdout)
        header_len = len(b"Delivered-To: big@example.com\n")
        assert os.path.getsize(result["path"]) == size + header_len
        assert result["path"].endswith(f",S={size + header_len}")
        with open(result["path"], "rb") as f:
            assert f.read(header_len + 16) == b"Delivered-To: big@example.com\n0123456789abcdef"
            f.seek(-len(block), os.SEEK_END)
            assert f.read() == block
        assert result["rss_kib"] < 40 * 1024, f"peak RSS {result['rss_kib']} KiB"
    finally:
        msg.unlink(missing_ok=True)
        for name in os.listdir(os.path.join(md, "new")):
            os.unlink(os.path.join(md, "new", name))
