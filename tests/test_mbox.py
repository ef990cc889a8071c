"""vpop.mbox: qmail-local mbox format (mboxrd quoting), locking, failures cut back, concurrency."""

import calendar
import errno
import json
import mailbox
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
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


COMPLETE = b"Subject: one\n\nfirst message\n"
HALF = b"From s@r.org Tue Dec 03 10:00:00 2024\nDelivered-To: bob@example.com\nSubject: half\n\nxxxx"


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


@pytest.mark.parametrize("unfinished", [b"", HALF], ids=["complete", "unfinished"])
def test_write_failure_cuts_back(tmp_path: Path, unfinished: bytes) -> None:
    """EFBIG (RLIMIT_FSIZE in the child): the file is byte for byte as before, repair included."""
    box = tmp_path / "mbox"
    deliver(tmp_path, box, b"x" * 900)
    box.write_bytes(box.read_bytes() + unfinished)
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


@pytest.fixture
def live_pid() -> Iterator[int]:
    """The pid of a process that stays alive for the test."""
    proc = subprocess.Popen(["sleep", "300"])
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def dead_pid() -> int:
    """The pid of a process that has exited and been reaped (so ``kill(pid, 0)`` says ESRCH)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    with pytest.raises(ProcessLookupError):
        os.kill(proc.pid, 0)
    return proc.pid


HOST = socket.gethostname()


@pytest.mark.parametrize("contents", ["{pid}\n", "{pid}:{host}\n"])
def test_fresh_dotlock_times_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, live_pid: int,
                                 contents: str) -> None:
    """A young lock naming a live process is waited for, then the delivery defers."""
    monkeypatch.setattr(mbox, "LOCK_WAIT", 0.2)
    box = tmp_path / "mbox"
    lock = Path(str(box) + ".lock")
    text = contents.format(pid=live_pid, host=HOST)
    lock.write_text(text)
    with pytest.raises(TemporaryFailure) as info:
        deliver(tmp_path, box, b"waits\n")
    assert info.value.message == "File has been locked for 30 seconds straight. (#4.3.0)"
    assert lock.read_text() == text  # not ours: left alone
    assert box.read_bytes() == b""


@pytest.mark.parametrize("contents", ["{pid}\n", "{pid}", " {pid} \n", "{pid}\0", "{pid}:{host}\n",
                                      "{pid}:{host}"])
def test_dotlock_of_a_dead_process_is_broken_at_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dead_pid: int, contents: str) -> None:
    """liblockfile's ``PID\\n`` and Dovecot's ``PID:HOST``: a dead local pid frees the lock now."""
    monkeypatch.setattr(mbox, "LOCK_WAIT", 5.0)  # without the pid check: 5 s, then a deferral
    box = tmp_path / "mbox"
    lock = Path(str(box) + ".lock")
    lock.write_text(contents.format(pid=dead_pid, host=HOST))
    started = time.monotonic()
    deliver(tmp_path, box, b"after a crash\n")
    assert time.monotonic() - started < 1.0
    assert box.read_bytes().endswith(b"after a crash\n\n")
    assert not lock.exists()


@pytest.mark.parametrize("contents", ["{pid}:elsewhere.invalid\n", "0\n", "", "\n", "garbage\n",
                                      "{pid}garbage\n", "-{pid}\n", "99999999999999999999\n",
                                      "{pid}\n{pid}\n"])
def test_dotlock_without_a_checkable_pid_is_waited_for(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dead_pid: int, contents: str) -> None:
    """Another host's pid, "no pid" (0), nothing or text: today's rules (wait, then defer)."""
    monkeypatch.setattr(mbox, "LOCK_WAIT", 0.2)
    box = tmp_path / "mbox"
    lock = Path(str(box) + ".lock")
    text = contents.format(pid=dead_pid)
    lock.write_text(text)
    with pytest.raises(TemporaryFailure) as info:
        deliver(tmp_path, box, b"waits\n")
    assert "locked for 30 seconds" in info.value.message
    assert lock.read_text() == text
    assert box.read_bytes() == b""


@pytest.mark.parametrize("kind", ["symlink", "fifo", "directory"])
def test_dotlock_that_is_no_regular_file_is_waited_for(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dead_pid: int, kind: str) -> None:
    """Only a regular file is read (O_NOFOLLOW, O_NONBLOCK): a symlink to a dead pid still blocks."""
    monkeypatch.setattr(mbox, "LOCK_WAIT", 0.2)
    box = tmp_path / "mbox"
    lock = Path(str(box) + ".lock")
    if kind == "symlink":
        target = tmp_path / "elsewhere"
        target.write_text(f"{dead_pid}\n")
        lock.symlink_to(target)
    elif kind == "fifo":
        os.mkfifo(lock)
    else:
        lock.mkdir()
    started = time.monotonic()
    with pytest.raises(TemporaryFailure):
        deliver(tmp_path, box, b"waits\n")
    assert time.monotonic() - started < 5
    assert lock.is_symlink() if kind == "symlink" else lock.exists()


def test_local_pid_parsing() -> None:
    assert mbox._local_pid(b"123\n") == 123
    assert mbox._local_pid(f"123:{HOST}".encode()) == 123
    assert mbox._local_pid(f"123:{HOST}x".encode()) is None
    assert mbox._local_pid(b"123:") is None
    assert mbox._local_pid(b"2147483647") == 2147483647
    assert mbox._local_pid(b"2147483648") is None
    assert mbox._local_pid(b"+5") is None
    assert mbox._local_pid("\u0661\u0662".encode()) is None  # Arabic-Indic digits are not a pid


def test_our_dotlock_holds_pid_and_host() -> None:
    assert mbox._lock_contents() == f"{os.getpid()}:{HOST}\n".encode()


# ----------------------------------------------------------------------------------------------
# A record left unfinished by a delivery that was killed, and failures cut back




def read_messages(box: Path) -> list[tuple[str, bytes]]:
    """``(From_ line, bytes)`` of every message as Python's mailbox.mbox reads them."""
    mb = mailbox.mbox(str(box), create=False)
    try:
        return [(mb[key].get_from(), mb.get_bytes(key)) for key in mb.keys()]
    finally:
        mb.close()


@pytest.mark.parametrize(
    ("cut", "added"),
    [
        (b"", b"\n\n"),  # killed inside a line
        (b"\n", b"\n"),  # killed after a line
        (b"\n\n", b""),  # looks complete: nothing to add
    ],
)
def test_unfinished_record_gets_its_newlines(tmp_path: Path, cut: bytes, added: bytes) -> None:
    box = tmp_path / "mbox"
    deliver(tmp_path, box, COMPLETE)
    first = read_messages(box)
    box.write_bytes(box.read_bytes() + HALF + cut)
    before = box.read_bytes()
    deliver(tmp_path, box, b"Subject: three\n\nthird message\n", sender="s@r.org")
    record = mbox.from_line("s@r.org", NOW) + HEADERS + b"Subject: three\n\nthird message\n\n"
    assert box.read_bytes() == before + added + record
    messages = read_messages(box)
    assert len(messages) == 3
    assert messages[0] == first[0]  # the earlier complete message reads exactly as before
    assert messages[1] == ("s@r.org Tue Dec 03 10:00:00 2024",
                           b"Delivered-To: bob@example.com\nSubject: half\n\nxxxx\n")
    assert messages[2] == ("s@r.org Wed Jan 03 01:05:34 1996", HEADERS + b"Subject: three\n\nthird message\n")


KILLED_DELIVERY = """
    import signal, sys
    from vpop import mbox
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored
    try:
        mbox.deliver_mbox(sys.argv[1], "s@r.org", b"Delivered-To: bob@example.com\\n", 0)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
"""


def start_stalled_delivery(box: Path, data: bytes) -> subprocess.Popen[str]:
    """A real deliver_mbox in a child, its message on a pipe fed ``data`` and then left open.

    Returns once every byte of ``data`` is in the mbox: the child is then blocked reading.
    """
    start = box.stat().st_size if box.exists() else 0
    proc = spawn_python(KILLED_DELIVERY, str(box), stdin=subprocess.PIPE)
    os.write(proc.stdin.fileno(), data)
    deadline = time.monotonic() + 30
    while True:
        written = box.read_bytes()[start:] if box.exists() else b""
        if written.endswith(data):
            return proc
        assert time.monotonic() < deadline, f"the child wrote only {len(written)} bytes"
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.01)


def test_killed_delivery_then_a_normal_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """kill -9 in the middle of a real delivery, then the next delivery: both messages are there.

    The killed one also leaves its dot-lock (with its pid) behind: the next delivery must not
    wait for it (LOCK_WAIT is cut to 5 s so that a regression fails quickly).
    """
    monkeypatch.setattr(mbox, "LOCK_WAIT", 5.0)
    box = tmp_path / "mbox"
    deliver(tmp_path, box, COMPLETE)
    first = read_messages(box)
    body = b"Subject: big\n\n" + b"x" * 200_000  # no newline yet: the child waits for more
    proc = start_stalled_delivery(box, body)
    lock = Path(str(box) + ".lock")
    assert lock.read_text() == f"{proc.pid}:{HOST}\n"
    proc.kill()
    proc.communicate(timeout=30)
    assert not box.read_bytes().endswith(b"\n")
    started = time.monotonic()
    deliver(tmp_path, box, b"Subject: after\n\nnormal delivery\n", sender="s@r.org")
    assert time.monotonic() - started < 1.0
    assert not lock.exists()
    messages = read_messages(box)
    assert len(messages) == 3
    assert messages[0] == first[0]
    assert messages[1][1] == b"Delivered-To: bob@example.com\n" + body + b"\n"
    assert messages[2] == ("s@r.org Wed Jan 03 01:05:34 1996",
                           HEADERS + b"Subject: after\n\nnormal delivery\n")


def test_interrupted_delivery_cuts_back(tmp_path: Path) -> None:
    """A failure the delivery sees that is no OSError (KeyboardInterrupt) still cuts back."""
    box = tmp_path / "mbox"
    deliver(tmp_path, box, COMPLETE)
    box.write_bytes(box.read_bytes() + HALF)  # the separator this delivery adds goes too
    before = box.read_bytes()
    proc = start_stalled_delivery(box, b"Subject: stalled\n\n" + b"y" * 100_000)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert (proc.returncode, out) == (0, "interrupted\n"), err
    assert box.read_bytes() == before
    assert not Path(str(box) + ".lock").exists()


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


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs (unmounted afterwards)."""
    mnt = tmp_path / "spool"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "vpop-test-mbox", str(mnt)],
                   check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_full_filesystem_cuts_back(tmp_path: Path, small_fs: Path) -> None:
    """ENOSPC on a real tmpfs: the mbox is byte for byte as before, then a small message fits."""
    box = small_fs / "mbox"
    deliver(tmp_path, box, COMPLETE)
    box.write_bytes(box.read_bytes() + HALF)
    before = box.read_bytes()
    with pytest.raises(TemporaryFailure) as info:
        deliver(tmp_path, box, b"Subject: big\n\n" + b"z" * 1_000_000)
    assert info.value.message == f"Unable to write {box}: out of disk space. (#4.3.0)"
    assert box.read_bytes() == before
    assert not Path(str(box) + ".lock").exists()
    deliver(tmp_path, box, b"Subject: small\n\nfits\n")
    assert [m[1].splitlines()[-1] for m in read_messages(box)] == [b"first message", b"xxxx", b"fits"]


def unlocked(monkeypatch: pytest.MonkeyPatch) -> None:
    """No dot-lock (spool directory not writable) and no fcntl lock (a file system without locks)."""
    monkeypatch.setattr(mbox, "_take_dotlock", lambda lockpath, deadline: None)
    monkeypatch.setattr(mbox, "_take_fcntl_lock", lambda fd, deadline: False)


def test_unlocked_failure_cuts_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without any lock the file is still cut back when nobody else wrote meanwhile."""
    box = tmp_path / "mbox"
    deliver(tmp_path, box, COMPLETE)
    box.write_bytes(box.read_bytes() + HALF)
    before = box.read_bytes()
    unlocked(monkeypatch)
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)  # read(): EISDIR after the From line went out
    try:
        with pytest.raises(TemporaryFailure) as info:
            mbox.deliver_mbox(str(box), "a@b", HEADERS, fd)
    finally:
        os.close(fd)
    assert info.value.message == "Unable to read message: is a directory. (#4.3.0)"
    assert box.read_bytes() == before


def test_unlocked_failure_spares_another_writer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Unlocked, with another writer's bytes after ours: no cut-back (it would destroy them)."""
    box = tmp_path / "mbox"
    deliver(tmp_path, box, COMPLETE)
    before = box.read_bytes()
    unlocked(monkeypatch)

    def chunks(fd: int, offset: int, chunk: int) -> Iterator[bytes]:
        yield b"Subject: mine\n\npart of it\n"
        other = os.open(box, os.O_WRONLY | os.O_APPEND)
        os.write(other, b"OTHER WRITER\n")
        os.close(other)
        raise OSError(errno.EIO, "injected")

    monkeypatch.setattr("vpop.fdio.read_chunks", chunks)
    with pytest.raises(TemporaryFailure) as info:
        deliver(tmp_path, box, b"unused")
    assert info.value.message == "Unable to read message: input/output error. (#4.3.0)"
    data = box.read_bytes()
    assert data.startswith(before) and data.endswith(b"part of it\nOTHER WRITER\n")
