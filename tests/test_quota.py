"""vpop.quota: quota strings, maildirsize reading/recounting, the over-quota rules, concurrency."""

import errno
import fcntl
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import spawn_python
from vpop import maildir, quota


@pytest.fixture
def md(tmp_path: Path) -> str:
    path = str(tmp_path / "example.com" / "bob" / "Maildir")
    maildir.make_maildir(path)
    return path


def put(md: str, sub: str, name: str, data: bytes = b"") -> None:
    Path(md, sub, name).write_bytes(data)


def write_maildirsize(md: str, text: str, age: float = 0) -> None:
    path = os.path.join(md, "maildirsize")
    Path(path).write_text(text)
    if age:
        t = time.time() - age
        os.utime(path, (t, t))


def maildirsize_text(md: str) -> str:
    return Path(md, "maildirsize").read_text()


# --------------------------------------------------------------------------------------------------
# quota strings


@pytest.mark.parametrize(
    ("given", "normal"),
    [
        ("1000000", "1000000S"),
        ("1MB", "1048576S"),
        ("1M", "1048576S"),
        ("1024K", "1048576S"),
        ("10kb", "10240S"),
        ("1mbs", "1048576S"),
        ("1mbs,1000C", "1048576S,1000C"),
        ("1048576S,1000C", "1048576S,1000C"),
        ("1000C,10MBS", "10485760S,1000C"),
        ("1000C", "1000C"),
        ("100S", "100S"),
        ("100s", "100S"),
        ("NOQUOTA", "NOQUOTA"),
        ("0", ""),
        ("0S,0C", ""),
        ("", ""),
        ("garbage", ""),
        ("-5", ""),
        ("5S,,7C", "5S,7C"),
        (" 42", "42S"),
    ],
)
def test_normalize_quota(given: str, normal: str) -> None:
    assert quota.normalize_quota(given) == normal


@pytest.mark.parametrize(
    ("given", "parsed"),
    [
        ("NOQUOTA", (None, None)),
        ("NO", (None, None)),
        ("", (None, None)),
        ("1048576S,1000C", (1048576, 1000)),
        ("1048576S", (1048576, None)),
        ("500C", (None, 500)),
        ("5000S,100S", (100, None)),
    ],
)
def test_parse_quota(given: str, parsed: tuple[int | None, int | None]) -> None:
    assert quota.parse_quota(given) == parsed


# --------------------------------------------------------------------------------------------------
# reading maildirsize


def test_read_unpadded(md: str) -> None:
    write_maildirsize(md, "1000000S,100C\n1234 1\n-200 -1\n66 2\n")
    q, b, c, nlines, size, mtime = quota.read_maildirsize(md)
    assert (q, b, c, nlines) == ("1000000S,100C", 1100, 2, 3)
    assert size == os.path.getsize(os.path.join(md, "maildirsize"))
    assert mtime == os.stat(os.path.join(md, "maildirsize")).st_mtime


def test_read_courier_padded(md: str) -> None:
    # Courier pads each usage line to 14 bytes plus newline
    write_maildirsize(md, "5000000S\n" + f"{4096:>6} {3:>7}\n" + f"{-100:>6} {-1:>7}\n")
    assert quota.read_maildirsize(md)[:4] == ("5000000S", 3996, 2, 2)


def test_read_tolerates_junk(md: str) -> None:
    write_maildirsize(md, "100S\r\n\n  \n10 1\nnot a line\n1 2 3\n5\n7 1\n20 1")
    q, b, c, nlines, _, _ = quota.read_maildirsize(md)
    assert q == "100S"
    assert (b, c) == (22, 2)  # "5" counts as 5 bytes; the unterminated "20 1" is ignored
    assert nlines == 5  # non-blank lines after the first, junk included


def test_read_missing_or_symlink(md: str, tmp_path: Path) -> None:
    assert quota.read_maildirsize(md) is None
    target = tmp_path / "elsewhere"
    target.write_text("1S\n0 0\n")
    os.symlink(target, os.path.join(md, "maildirsize"))
    assert quota.read_maildirsize(md) is None


def test_read_quota_line_only(md: str) -> None:
    write_maildirsize(md, "100S")
    assert quota.read_maildirsize(md)[:4] == ("100S", 0, 0, 0)


# --------------------------------------------------------------------------------------------------
# recount


def populate(md: str, tmp_path: Path) -> tuple[int, int]:
    """A Maildir with folders, trashed and hidden files; returns the (bytes, count) to expect."""
    put(md, "new", "1.M1P1Q1.h,S=100")
    put(md, "cur", "2.M1P1Q1.h,S=200:2,S")
    put(md, "cur", "3.M1P1Q1.h,S=400:2,ST")  # trashed: not counted
    put(md, "cur", "4.M1P1Q1.h,S=800:2,FRT")  # trashed
    put(md, "cur", "5.M1P1Q1.h,S=16:2,Sa")  # lower-case keyword after flags: counted
    put(md, "cur", ".hidden,S=5000")  # dot file: not counted
    put(md, "cur", "6.oldstyle.h", b"x" * 33)  # no S=: stat size
    maildir.make_maildir(os.path.join(md, ".Sent"))
    put(os.path.join(md, ".Sent"), "cur", "7.M1P1Q1.h,S=50:2,S")
    put(os.path.join(md, ".Sent"), "new", "8.M1P1Q1.h,S=60")
    Path(md, ".Sent", "maildirfolder").write_bytes(b"")
    maildir.make_maildir(os.path.join(md, ".Trash"))
    put(os.path.join(md, ".Trash"), "cur", "9.M1P1Q1.h,S=9999:2,S")  # .Trash: not counted
    shared = tmp_path / "shared"
    maildir.make_maildir(str(shared))
    put(str(shared), "cur", "10.M1P1Q1.h,S=7777:2,S")
    os.symlink(shared, os.path.join(md, ".Shared"))  # symlinked folder: not counted
    Path(md, ".notafolder").write_bytes(b"x")
    return 100 + 200 + 16 + 33 + 50 + 60, 6


def test_recalculate(md: str, tmp_path: Path) -> None:
    expected = populate(md, tmp_path)
    result = quota.recalculate(md, "5000S,10C")
    assert tuple(result) == expected
    assert result.unsure is False
    b, c = result  # unpacks as (bytes, count)
    assert maildirsize_text(md) == f"5000S,10C\n{b} {c}\n"
    assert os.listdir(os.path.join(md, "tmp")) == []


def test_recalculate_chown(md: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("chown needs root")
    quota.recalculate(md, "1S", uid=4321, gid=4322)
    st = os.stat(os.path.join(md, "maildirsize"))
    assert (st.st_uid, st.st_gid) == (4321, 4322)


def test_recalculate_from_folder_uses_parent(md: str, tmp_path: Path) -> None:
    expected = populate(md, tmp_path)
    assert tuple(quota.recalculate(os.path.join(md, ".Sent"), "5000S")) == expected
    assert os.path.exists(os.path.join(md, "maildirsize"))
    assert not os.path.exists(os.path.join(md, ".Sent", "maildirsize"))


def test_recalculate_while_deliveries_hold_lock(md: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(quota, "RECOUNT_LOCK_WAIT", 0.05)
    write_maildirsize(md, "100S\n0 0\n")
    put(md, "new", "1.M1P1Q1.h,S=10")
    with quota.delivery_lock(md) as lock:
        assert lock.locked
        result = quota.recalculate(md, "100S")
    assert tuple(result) == (10, 1)
    assert result.unsure is True
    assert maildirsize_text(md) == "100S\n0 0\n"  # a delivery was in flight: file left alone


# --------------------------------------------------------------------------------------------------
# check


def fill(md: str, nbytes: int, count: int = 1) -> None:
    """``count`` messages totalling ``nbytes`` (by their S= names)."""
    for i in range(count):
        size = nbytes // count + (nbytes % count if i == 0 else 0)
        put(md, "cur", f"{i}.M1P1Q1.h,S={size}:2,S")


def test_check_no_quota(md: str) -> None:
    for q in ("NOQUOTA", "NO", "", "0S"):
        assert quota.check(md, q, 10**9) == (False, 0)
    assert not os.path.exists(os.path.join(md, "maildirsize"))


def test_check_equal_is_allowed(md: str) -> None:
    fill(md, 900)
    assert quota.check(md, "1000S", 100, small_message_bytes=0) == (False, 100)
    assert maildirsize_text(md) == "1000S\n900 1\n"  # created by the first recount
    assert quota.check(md, "1000S", 101, small_message_bytes=0) == (True, 100)


def test_check_percent(md: str) -> None:
    fill(md, 800)
    assert quota.check(md, "1000S", 100) == (False, 90)
    assert quota.check(md, "1000S", 50) == (False, 85)
    assert quota.check(md, "1000S,10C", 50) == (False, 85)
    assert quota.check(md, "100000S,2C", 50) == (False, 100)  # count 2 of 2
    # limits above 20,000,000: vpopmail divides both sides by 1024 first (exact would be 89)
    assert quota._qcalc("30000000S", 26999999, 1) == (False, 90)


def test_check_old_style_quota_string(md: str) -> None:
    fill(md, 1048000)
    assert quota.check(md, "1MB", 576, small_message_bytes=0) == (False, 100)
    assert quota.check(md, "1mbs,1000C", 577, small_message_bytes=0) == (True, 100)


def test_check_count_limit(md: str) -> None:
    fill(md, 300, count=2)
    assert quota.check(md, "100000S,3C", 5000, small_message_bytes=0) == (False, 100)
    put(md, "new", "9.M1P1Q1.h,S=10")
    write_maildirsize(md, "100000S,3C\n300 2\n10 1\n")
    assert quota.check(md, "100000S,3C", 5000, small_message_bytes=0)[0] is True


def test_check_small_message_rule(md: str) -> None:
    fill(md, 1000)
    assert quota.check(md, "1000S", 500) == (False, 100)  # default: <= 1024 bytes always accepted
    assert quota.check(md, "1000S", 1024) == (False, 100)
    assert quota.check(md, "1000S", 1025) == (True, 100)
    assert quota.check(md, "1000S", 500, small_message_bytes=0) == (True, 100)
    assert quota.check(md, "1000S", 5000, small_message_bytes=10000) == (False, 100)


def test_check_trusts_fresh_single_line_over_quota(md: str) -> None:
    write_maildirsize(md, "1000S\n2000 5\n")  # Maildir is empty, but the file is fresh and simple
    assert quota.check(md, "1000S", 2000, small_message_bytes=0) == (True, 100)
    assert maildirsize_text(md) == "1000S\n2000 5\n"


def test_check_recounts_over_quota_with_several_lines(md: str) -> None:
    fill(md, 100)
    write_maildirsize(md, "1000S\n600 1\n600 1\n")
    assert quota.check(md, "1000S", 200, small_message_bytes=0) == (False, 30)
    assert maildirsize_text(md) == "1000S\n100 1\n"


def test_check_recounts_old_file(md: str) -> None:
    fill(md, 950)
    write_maildirsize(md, "1000S\n0 0\n")
    mtime = os.path.getmtime(os.path.join(md, "maildirsize"))
    # fresh: trusted (says 0 used)
    assert quota.check(md, "1000S", 60, small_message_bytes=0, now=mtime + 899) == (False, 6)
    # 15 minutes old: recounted, even though it says "under quota"
    assert quota.check(md, "1000S", 60, small_message_bytes=0, now=mtime + 900) == (True, 100)
    assert maildirsize_text(md) == "1000S\n950 1\n"


def test_check_recounts_big_file(md: str) -> None:
    write_maildirsize(md, "1000S\n" + "1 0\n" * 1500)  # 6000 bytes, says 1500 bytes used
    assert quota.check(md, "1000S", 10, small_message_bytes=0) == (False, 1)
    assert maildirsize_text(md) == "1000S\n0 0\n"


def test_check_recounts_when_quota_changed(md: str) -> None:
    fill(md, 300)
    write_maildirsize(md, "5000S\n300 1\n")
    assert quota.check(md, "1000S", 10) == (False, 31)
    assert maildirsize_text(md) == "1000S\n300 1\n"
    write_maildirsize(md, "1000S,0C\n300 1\n")  # same limits in another spelling: trusted
    assert quota.check(md, "1000S", 10) == (False, 31)
    assert maildirsize_text(md) == "1000S,0C\n300 1\n"


def test_check_folder_uses_parent(md: str) -> None:
    fill(md, 990)
    sent = os.path.join(md, ".Sent")
    maildir.make_maildir(sent)
    Path(sent, "maildirfolder").write_bytes(b"")
    assert quota.check(sent, "1000S", 20, small_message_bytes=0) == (True, 100)
    assert maildirsize_text(md) == "1000S\n990 1\n"


# --------------------------------------------------------------------------------------------------
# add_usage


def test_add_usage_appends(md: str) -> None:
    write_maildirsize(md, "1000S\n10 1\n")
    assert quota.add_usage(md, "1000S", 123)
    assert quota.add_usage(md, "NOQUOTA", -10, -1)  # an existing file is always updated
    assert maildirsize_text(md) == "1000S\n10 1\n123 1\n-10 -1\n"


def test_add_usage_creates(md: str) -> None:
    assert quota.add_usage(md, "1mb", 77)
    assert maildirsize_text(md) == "1048576S\n77 1\n"
    assert os.listdir(os.path.join(md, "tmp")) == []


def test_add_usage_without_quota_creates_nothing(md: str) -> None:
    assert not quota.add_usage(md, "NOQUOTA", 77)
    assert not quota.add_usage(md, "", 77)
    assert not os.path.exists(os.path.join(md, "maildirsize"))


def test_add_usage_folder_goes_to_parent(md: str) -> None:
    sent = os.path.join(md, ".Sent")
    maildir.make_maildir(sent)
    Path(sent, "maildirfolder").write_bytes(b"")
    assert quota.add_usage(sent, "100S", 5)
    assert maildirsize_text(md) == "100S\n5 1\n"


# --------------------------------------------------------------------------------------------------
# a lost append (full disk) forces the next recount


@pytest.fixture
def full_fs_md(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """``(maildir, filler)``: a Maildir on a 64 KiB tmpfs, and where to put a file that fills it."""
    mnt = tmp_path / "fs"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "vpop-test-quota", str(mnt)],
                   check=True)
    try:
        path = str(mnt / "Maildir")
        maildir.make_maildir(path)
        yield path, mnt / "filler"
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def fill_up(path: Path) -> None:
    """Write ``path`` until the file system says ENOSPC."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        while True:
            try:
                os.write(fd, b"f" * 4096)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                return
    finally:
        os.close(fd)


def page_sized_maildirsize(md: str, quota_line: str, nbytes: int, count: int) -> None:
    """A valid maildirsize of exactly 4096 bytes (one tmpfs page: the next append needs a new one).

    Its usage line is padded with blanks, as Courier writes them.
    """
    head = f"{quota_line}\n".encode()
    usage = f"{nbytes} {count}\n".encode()
    Path(md, "maildirsize").write_bytes(head + b" " * (4096 - len(head) - len(usage)) + usage)


def test_append_lost_on_a_full_disk_forces_a_recount(full_fs_md: tuple[str, Path]) -> None:
    md, filler = full_fs_md
    q = "100000S"
    put(md, "cur", "1.M1P1Q1.h,S=3000:2,S", b"a")
    page_sized_maildirsize(md, q, 3000, 1)
    assert quota.check(md, q, 5000) == (False, 8)  # trusted: fresh, small, same quota
    put(md, "new", "2.M2P2Q2.h,S=5000", b"b")  # the delivery itself got through ...
    fill_up(filler)
    assert not quota.add_usage(md, q, 5000)  # ... but its maildirsize line did not (ENOSPC)
    st = os.stat(os.path.join(md, "maildirsize"))
    assert (st.st_size, st.st_mtime) == (quota.RECALC_FILE_SIZE, 0)  # marked: big and old
    # The next delivery's check, the disk still full: it recounts and sees 8000 + 1000 bytes
    # (the file says 3000).  The recount cannot replace the file, so it stays marked.
    assert quota.check(md, q, 1000) == (False, 9)
    assert os.stat(os.path.join(md, "maildirsize")).st_size == quota.RECALC_FILE_SIZE
    assert os.listdir(os.path.join(md, "tmp")) == []
    # Space again; a parallel delivery appends successfully (making the file fresh) ...
    filler.unlink()
    put(md, "new", "3.M3P3Q3.h,S=2000", b"c")
    assert quota.add_usage(md, q, 2000)
    # ... and still the next check recounts: 3000 + 5000 + 2000, plus the new 1000.
    assert quota.check(md, q, 1000) == (False, 11)
    assert maildirsize_text(md) == f"{q}\n10000 3\n"
    assert quota.check(md, q, 1000) == (False, 11)  # from the file now


def test_append_lost_on_a_full_disk_makes_over_quota_visible(full_fs_md: tuple[str, Path]) -> None:
    """The undercount would let a user over quota go on receiving: the recount stops that."""
    md, filler = full_fs_md
    q = "10000S"
    put(md, "cur", "1.M1P1Q1.h,S=4000:2,S", b"a")
    page_sized_maildirsize(md, q, 4000, 1)
    put(md, "new", "2.M2P2Q2.h,S=5000", b"b")
    fill_up(filler)
    assert not quota.add_usage(md, q, 5000)
    filler.unlink()
    assert quota.check(md, q, 2000, small_message_bytes=0) == (True, 100)  # 11000 > 10000


LIMITED_APPEND = """
    import json, os, resource, sys
    from vpop import quota
    md, q, nbytes = sys.argv[1], sys.argv[2], int(sys.argv[3])
    size = os.stat(os.path.join(md, "maildirsize")).st_size
    resource.setrlimit(resource.RLIMIT_FSIZE, (size + 3, size + 3))  # room for 3 bytes of the line
    print(json.dumps(quota.add_usage(md, q, nbytes)))
"""


def test_short_append_under_rlimit_fsize_forces_a_recount(md: str) -> None:
    """RLIMIT_FSIZE: the write is cut short and the file cannot grow to 5120: the mtime mark."""
    q = "100000S"
    fill(md, 3000)
    write_maildirsize(md, f"{q}\n3000 1\n")
    size = os.stat(os.path.join(md, "maildirsize")).st_size
    put(md, "new", "9.M9P9Q9.h,S=12345")
    proc = spawn_python(LIMITED_APPEND, md, q, "12345")
    out, err = proc.communicate(timeout=60)
    assert (proc.returncode, out) == (0, "false\n"), err
    st = os.stat(os.path.join(md, "maildirsize"))
    assert (st.st_size, st.st_mtime) == (size + 3, 0)  # "123" half a line; the epoch
    assert quota.check(md, q, 1000) == (False, 16)  # recounted: 15345 + 1000
    assert maildirsize_text(md) == f"{q}\n15345 2\n"


# --------------------------------------------------------------------------------------------------
# quota warning


def test_warning_rate_limit(md: str) -> None:
    assert quota.warning_due(md)
    quota.touch_warning(md)
    st = os.stat(os.path.join(md, "quotawarn"))
    assert st.st_size == 0
    assert not quota.warning_due(md)
    assert not quota.warning_due(md, now=st.st_mtime + 86399)
    assert quota.warning_due(md, now=st.st_mtime + 86400)
    old = time.time() - 86401
    os.utime(os.path.join(md, "quotawarn"), (old, old))
    assert quota.warning_due(md)
    quota.touch_warning(md)
    assert not quota.warning_due(md)


def test_claim_warning_once(md: str) -> None:
    assert quota.claim_warning(md) is True
    assert quota.claim_warning(md) is False
    old = time.time() - 90000
    os.utime(os.path.join(md, "quotawarn"), (old, old))
    assert quota.claim_warning(md) is True
    assert quota.claim_warning(md) is False


# --------------------------------------------------------------------------------------------------
# concurrency: 8 real processes delivering into one quota'd Maildir


DELIVERER = """
    import os, sys, tempfile
    from vpop import maildir, quota
    md, n, q = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    with tempfile.TemporaryFile() as msg:
        msg.write(b"Subject: load test\\n\\n" + b"x" * (100 + os.getpid() % 50))
        msg.flush()
        for _ in range(n):
            over, _pct = quota.check(md, q, os.fstat(msg.fileno()).st_size)
            assert not over
            with quota.delivery_lock(md):
                path = maildir.deliver(md, b"Delivered-To: bob@example.com\\n", msg.fileno())
                assert quota.add_usage(md, q, maildir.size_from_name(path))
"""

RECOUNTER = """
    import os, sys, time
    from vpop import quota
    md, q, stop = sys.argv[1], sys.argv[2], sys.argv[3]
    n = 0
    while not os.path.exists(stop):
        quota.recalculate(md, q)
        n += 1
        time.sleep(0.002)
    print(n)
"""


def run_deliverers(md: str, q: str, procs: int = 8, each: int = 25) -> None:
    workers = [spawn_python(DELIVERER, md, str(each), q) for _ in range(procs)]
    for w in workers:
        _out, err = w.communicate(timeout=120)
        assert w.returncode == 0, err


def assert_consistent(md: str, q: str, messages: int) -> None:
    q_line, b, c, _, _, _ = quota.read_maildirsize(md)
    assert q_line == q
    assert len(os.listdir(os.path.join(md, "new"))) == messages
    assert c == messages
    truth = quota.recalculate(md, q)
    assert (b, c) == tuple(truth)
    assert truth.unsure is False


def test_parallel_deliveries_keep_maildirsize_exact(md: str) -> None:
    q = "100000000S,100000C"
    run_deliverers(md, q)  # the first checks create maildirsize concurrently
    assert_consistent(md, q, 8 * 25)


def test_parallel_deliveries_with_concurrent_recounts(md: str, tmp_path: Path) -> None:
    q = "100000000S"
    quota.recalculate(md, q)
    stop = tmp_path / "stop"
    recounter = spawn_python(RECOUNTER, md, q, str(stop))
    try:
        run_deliverers(md, q)
    finally:
        stop.touch()
        out, err = recounter.communicate(timeout=60)
    assert recounter.returncode == 0, err
    assert int(out) > 0
    assert_consistent(md, q, 8 * 25)


def test_lock_is_best_effort(md: str) -> None:
    fd = os.open(md, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        t = time.monotonic()
        with quota.UsageLock(md, exclusive=False, timeout=0.05) as lock:
            assert not lock.locked and lock.busy
        assert time.monotonic() - t < 1
    finally:
        os.close(fd)
    with quota.delivery_lock(md) as lock:
        assert lock.locked
