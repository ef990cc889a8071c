"""vpop.mbox: qmail-local mbox format (mboxrd quoting), locking, failures cut back, concurrency."""

import calendar
import json
import mailbox
import os
import subprocess
import time
from pathlib import Path

import pytest
from helpers import spawn_python
from hypothesis import given, settings
from hypothesis import strategies as st
from vpop import mbox
from vpop.errors import TemporaryFailure

# qmail-local.8's example says "Sat Jan 03 01:05:34 1996"; that day was a Wednesday.
NOW = calendar.timegm((1996, 1, 3, 1, 5, 34, 0, 0, 0))
HEADERS = b"Return-Path: <god@heaven.af.mil>\nDelivered-To: bob@example.com\n"


def quoted(body: bytes) -> bytes:
    """Reference mboxrd quoting, line by line, plus qmail-local's closing newline(s)."""
    pieces = body.split(b"\n")
    lines = [p + b"\n" for p in pieces[:-1]] + ([pieces[-1] + b"\n"] if pieces[-1] else [])
    out = b"".join(b">" + ln if ln.lstrip(b">").startswith(b"From ") else ln for ln in lines)
    return out + b"\n"


def message_fd(tmp_path: Path, body: bytes, name: str = "msg") -> int:
    path = tmp_path / name
    path.write_bytes(body)
    fd = os.open(path, os.O_RDONLY)
    os.lseek(fd, 0, os.SEEK_END)  # deliver_mbox reads from the start regardless
    return fd


def deliver(tmp_path: Path, box: Path, body: bytes, sender: str = "god@heaven.af.mil", **kw: object) -> None:
    fd = message_fd(tmp_path, body)
    try:
        mbox.deliver_mbox(str(box), sender, HEADERS, fd, now=NOW, **kw)
    finally:
        os.close(fd)


TRICKY = (
    b"Subject: quoting\n"
    b"\n"
    b"From the start\n"
    b">From quoted once\n"
    b">>>>From quoted four times\n"
    b"Fromage is not a From_ line\n"
    b" From indented\n"
    b">>> no From_ here\n"
    b"From\n"
    b">From\n"
    b"\n"
    b"From the end"
)


def test_from_line() -> None:
    assert mbox.from_line("god@heaven.af.mil", NOW) == b"From god@heaven.af.mil Wed Jan 03 01:05:34 1996\n"
    assert mbox.from_line("", NOW).startswith(b"From MAILER-DAEMON Wed Jan 03 ")
    assert mbox.from_line("a b\tc\nd@e", NOW).startswith(b"From a-b-c-d@e Wed")
    t = calendar.timegm((2024, 2, 29, 23, 59, 9, 0, 0, 0))
    assert mbox.from_line("x@y", t) == b"From x@y Thu Feb 29 23:59:09 2024\n"


def test_exact_bytes(tmp_path: Path) -> None:
    box = tmp_path / "mbox"
    deliver(tmp_path, box, TRICKY)
    expected = b"From god@heaven.af.mil Wed Jan 03 01:05:34 1996\n" + HEADERS + quoted(TRICKY)
    assert box.read_bytes() == expected
    assert box.read_bytes().endswith(b">From the end\n\n")
    assert os.stat(box).st_mode & 0o777 == 0o600
    assert not Path(str(box) + ".lock").exists()


@pytest.mark.parametrize(
    ("body", "tail"),
    [
        (b"", HEADERS + b"\n"),  # empty message: only the separating newline
        (b"x", b"x\n\n"),
        (b"x\n", b"x\n\n"),
        (b"x\n\n", b"x\n\n\n"),
    ],
)
def test_trailing_newlines(tmp_path: Path, body: bytes, tail: bytes) -> None:
    box = tmp_path / "mbox"
    deliver(tmp_path, box, body)
    assert box.read_bytes().endswith(tail)


@pytest.mark.parametrize("chunk", [1, 2, 3, 4, 5, 6, 7, 11, 65536])
def test_chunk_borders(tmp_path: Path, chunk: int) -> None:
    box = tmp_path / "mbox"
    deliver(tmp_path, box, TRICKY, chunk=chunk)
    assert box.read_bytes() == mbox.from_line("god@heaven.af.mil", NOW) + HEADERS + quoted(TRICKY)


PIECES = [b"From ", b"From", b"Fro", b">", b">>", b"\n", b"x", b" ", b"F"]


@settings(max_examples=300, deadline=None)
@given(
    parts=st.lists(st.sampled_from(PIECES), max_size=40),
    sizes=st.lists(st.integers(min_value=1, max_value=9), min_size=1, max_size=10),
)
def test_quoter_any_split(parts: list[bytes], sizes: list[int]) -> None:
    body = b"".join(parts)
    quoter = mbox._Quoter(at_start=True)
    out: list[bytes] = []
    pos = i = 0
    while pos < len(body):
        n = sizes[i % len(sizes)]
        out.extend(quoter.feed(body[pos : pos + n]))
        pos += n
        i += 1
    out.append(quoter.flush())
    got = b"".join(out)
    expected = quoted(body)[:-1]  # quoted() adds the closing newline(s)
    if body and not body.endswith(b"\n"):
        expected = expected[:-1]
    assert got == expected


def test_read_back_with_mailbox(tmp_path: Path) -> None:
    box = tmp_path / "mbox"
    bodies = [TRICKY, b"Subject: two\n\nsecond body\n", b"Subject: three\n\nno newline at end"]
    for i, body in enumerate(bodies):
        deliver(tmp_path, box, body, sender="" if i == 1 else "god@heaven.af.mil")
    mb = mailbox.mbox(str(box), create=False)
    try:
        keys = mb.keys()
        assert len(keys) == 3
        for key, body in zip(keys, bodies, strict=True):
            raw = mb.get_bytes(key)
            assert raw == HEADERS + quoted(body)[:-1]  # the mbox separator line is not part of it
        assert mb[keys[0]]["Subject"] == "quoting"
        assert mb[keys[1]].get_from() == "MAILER-DAEMON Wed Jan 03 01:05:34 1996"
        assert mb[keys[2]]["Delivered-To"] == "bob@example.com"
    finally:
        mb.close()


def test_pipe_input(tmp_path: Path) -> None:
    box = tmp_path / "mbox"
    r, w = os.pipe()
    os.write(w, b"From pipe\n")
    os.close(w)
    mbox.deliver_mbox(str(box), "a@b", b"", r, now=NOW)
    os.close(r)
    assert box.read_bytes() == b"From a@b Wed Jan 03 01:05:34 1996\n>From pipe\n\n"


def test_open_error(tmp_path: Path) -> None:
    path = tmp_path / "missing-dir" / "mbox"
    fd = message_fd(tmp_path, b"m")
    with pytest.raises(TemporaryFailure) as info:
        mbox.deliver_mbox(str(path), "a@b", HEADERS, fd)
    os.close(fd)
    assert info.value.message == f"Unable to open {path}: file does not exist. (#4.2.1)"


def test_read_error_cuts_back(tmp_path: Path) -> None:
    box = tmp_path / "mbox"
    deliver(tmp_path, box, b"first\n")
    before = box.read_bytes()
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)  # read(): EISDIR
    with pytest.raises(TemporaryFailure) as info:
        mbox.deliver_mbox(str(box), "a@b", HEADERS, fd)
    os.close(fd)
    assert info.value.message == "Unable to read message: is a directory. (#4.3.0)"
    assert box.read_bytes() == before
    assert not Path(str(box) + ".lock").exists()


WRITE_FAILURE = """
    import json, os, resource, signal, sys
    from vpop import mbox
    from vpop.errors import VpopError
    box, msg = sys.argv[1], sys.argv[2]
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    fd = os.open(msg, os.O_RDONLY)
    resource.setrlimit(resource.RLIMIT_FSIZE, (3000, 3000))
    try:
        mbox.deliver_mbox(box, "a@b", b"Delivered-To: x@y\\n", fd)
        print(json.dumps({"ok": True}))
    except VpopError as exc:
        print(json.dumps({"type": type(exc).__name__, "message": exc.message}))
"""


def test_write_failure_cuts_back(tmp_path: Path) -> None:
    box = tmp_path / "mbox"
    deliver(tmp_path, box, b"x" * 900)
    before = box.read_bytes()
    msg = tmp_path / "big"
    msg.write_bytes((b"From line to quote\n" + b"y" * 80 + b"\n") * 200)
    proc = spawn_python(WRITE_FAILURE, str(box), str(msg))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert json.loads(out) == {
        "type": "TemporaryFailure",
        "message": f"Unable to write {box}: file too big. (#4.3.0)",
    }
    assert box.read_bytes() == before
    assert not Path(str(box) + ".lock").exists()


def test_stale_dotlock_is_removed(tmp_path: Path) -> None:
    box = tmp_path / "mbox"
    lock = Path(str(box) + ".lock")
    lock.write_text("12345\n")
    old = time.time() - 400
    os.utime(lock, (old, old))
    deliver(tmp_path, box, b"after a crash\n")
    assert box.read_bytes().endswith(b"after a crash\n\n")
    assert not lock.exists()


def test_fresh_dotlock_times_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mbox, "LOCK_WAIT", 0.2)
    box = tmp_path / "mbox"
    lock = Path(str(box) + ".lock")
    lock.write_text("999\n")
    with pytest.raises(TemporaryFailure) as info:
        deliver(tmp_path, box, b"waits\n")
    assert info.value.message == "File has been locked for 30 seconds straight. (#4.3.0)"
    assert lock.read_text() == "999\n"  # not ours: left alone
    assert box.read_bytes() == b""


HOLD_FCNTL_LOCK = """
    import fcntl, os, sys
    fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o600)
    fcntl.lockf(fd, fcntl.LOCK_EX)
    print("locked", flush=True)
    sys.stdin.read()
"""


def test_fcntl_lock_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mbox, "LOCK_WAIT", 0.3)
    box = tmp_path / "mbox"
    holder = spawn_python(HOLD_FCNTL_LOCK, str(box), stdin=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(TemporaryFailure) as info:
            deliver(tmp_path, box, b"blocked\n")
        assert "locked for 30 seconds" in info.value.message
        assert not Path(str(box) + ".lock").exists()  # our dot-lock was released
    finally:
        holder.communicate(input="", timeout=30)
    deliver(tmp_path, box, b"now free\n")
    assert box.read_bytes().endswith(b"now free\n\n")


DELIVERER = """
    import os, sys, tempfile
    from vpop import mbox
    box, who, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    for i in range(n):
        body = f"X-Seq: {who}-{i}\\n\\nFrom {who}\\n>From {i}\\n".encode() + b"z" * (i * 37) + b"\\nend"
        with tempfile.TemporaryFile() as msg:
            msg.write(body)
            msg.flush()
            mbox.deliver_mbox(box, f"{who}@example.com", b"Delivered-To: bob@example.com\\n", msg.fileno())
"""


def test_concurrent_deliverers(tmp_path: Path) -> None:
    box = tmp_path / "mbox"
    procs, each = 8, 20
    workers = [spawn_python(DELIVERER, str(box), f"p{k}", str(each)) for k in range(procs)]
    for w in workers:
        _out, err = w.communicate(timeout=120)
        assert w.returncode == 0, err
    mb = mailbox.mbox(str(box), create=False)
    try:
        seen = set()
        for key in mb.keys():
            msg = mb[key]
            who, i = msg["X-Seq"].split("-")
            assert msg.get_from().startswith(f"{who}@example.com ")
            body = f"X-Seq: {who}-{i}\n\nFrom {who}\n>From {i}\n".encode() + b"z" * (int(i) * 37) + b"\nend"
            assert mb.get_bytes(key) == b"Delivered-To: bob@example.com\n" + quoted(body)[:-1]
            seen.add((who, int(i)))
        assert seen == {(f"p{k}", i) for k in range(procs) for i in range(each)}
        assert len(mb) == procs * each
    finally:
        mb.close()
    assert not Path(str(box) + ".lock").exists()


def test_error_str() -> None:
    assert mbox.error_str(28) == "out of disk space"
    assert mbox.error_str(2) == "file does not exist"
    assert mbox.error_str(None) == "unknown error"
