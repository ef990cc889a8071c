"""Helpers shared by the tests: installed programs, a real fd 3, a recorder program, shared dirs.

Import as ``from helpers import ...`` (pytest puts this directory on sys.path).
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

#: bin directory of the virtualenv running the tests (scripts/test.sh runs .venv/bin/python).
#: Not resolved: the venv's python is a symlink to /usr/bin/python3.
VENV_BIN = Path(sys.executable).absolute().parent

#: vpopmail's recommended ids (user vpopmail, group vchkpw); scripts/test.sh creates them.
VPOPMAIL_UID = 89
VPOPMAIL_GID = 89

#: Largest fd 3 payload run_checkpassword accepts (it is written before the child starts, so it must
#: fit in the pipe buffer, which can be raised to /proc/sys/fs/pipe-max-size, 1 MiB by default).
FD3_MAX = 1 << 20


def epoch(when: str) -> int:
    """``YYYY-MM-DD hh:mm:ss`` read as UTC, in seconds since the epoch (for ``VPOP_CLOCK``)."""
    import calendar

    return calendar.timegm(time.strptime(when, "%Y-%m-%d %H:%M:%S"))


def clock_text(seconds: float) -> str:
    """A ``VPOP_CLOCK`` value: whole seconds as digits, or with up to 6 decimals."""
    return str(int(seconds)) if seconds == int(seconds) else f"{seconds:.6f}"


def program(name: str) -> str:
    """Absolute path of an installed console script (``vchkpw``, ...) in the test virtualenv."""
    path = VENV_BIN / name
    if not os.access(path, os.X_OK):
        raise FileNotFoundError(f"{path} is not installed; run scripts/test.sh (pip install .)")
    return str(path)


def fd3_payload(login: str | bytes, password: str | bytes, timestamp: str | bytes = b"") -> bytes:
    """The checkpassword fd 3 record ``login\\0password\\0timestamp\\0``."""

    def b(value: str | bytes) -> bytes:
        return value.encode() if isinstance(value, str) else value

    return b(login) + b"\0" + b(password) + b"\0" + b(timestamp) + b"\0"


def free_port(lo: int = 20000, hi: int = 60000) -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (random, in [lo, hi])."""
    for _ in range(500):
        port = random.randint(lo, hi)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free TCP port in {lo}-{hi}")


def die_with_parent() -> Callable[[], None]:
    """A preexec_fn that makes the child receive SIGTERM when the test process dies (even by kill -9).

    Servers are started in their own session (so Ctrl-C reaches pytest only); without this they
    would outlive a killed test run.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    parent = os.getpid()

    def preexec() -> None:
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # parent died before prctl took effect
            os._exit(1)

    return preexec


def _keep_only_stdio_and(fd3: int | None) -> Callable[[], None]:
    """preexec_fn: put ``fd3`` at fd 3 (if given) and mark every other fd >= 3 close-on-exec.

    subprocess's close_fds/pass_fds cannot place a descriptor at a chosen number, and marking the
    rest close-on-exec (rather than closing them) keeps subprocess's own exec-error pipe working.
    """

    def preexec() -> None:
        if fd3 is not None and fd3 != 3:
            os.dup2(fd3, 3)
        for name in os.listdir("/proc/self/fd"):
            fd = int(name)
            if fd < 3 or (fd == 3 and fd3 is not None):
                continue
            try:
                os.set_inheritable(fd, False)
            except OSError:
                pass  # the listdir descriptor itself, already closed
        if fd3 is not None:
            os.set_inheritable(3, True)

    return preexec


def run_checkpassword(
    argv: Sequence[str],
    fd3: bytes | None,
    env: Mapping[str, str],
    timeout: float = 20,
    *,
    stdin: bytes | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run a checkpassword-style program the way qmail-popup/Dovecot do.

    fd 3 is a real pipe whose read end holds exactly ``fd3`` followed by EOF; ``fd3=None`` means fd 3
    is not open at all.  No other descriptor above 2 is inherited.  The environment is exactly
    ``env``.  stdin is /dev/null unless ``stdin`` bytes are given; stdout and stderr are captured.
    Raises subprocess.TimeoutExpired (after killing the child) if it runs longer than ``timeout``.
    """
    r = w = -1
    if fd3 is not None:
        if len(fd3) > FD3_MAX:
            raise ValueError(f"fd 3 payload of {len(fd3)} bytes exceeds {FD3_MAX}")
        r, w = os.pipe()
    try:
        if fd3 is not None:
            if r < 3:  # stdin was closed: the child's stdio setup would overwrite r before preexec
                moved = fcntl.fcntl(r, fcntl.F_DUPFD_CLOEXEC, 3)
                os.close(r)
                r = moved
            if len(fd3) > 65536:
                fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, len(fd3))
            # The payload fits in the pipe buffer, so it is written before the child starts: no
            # writer thread, and the child reads EOF right after it once w is closed below.
            view = memoryview(fd3)
            while view:
                view = view[os.write(w, view) :]
        # w stays open until the fork, so that no descriptor Popen creates can take fd 3's slot in
        # between (the child's copy of w is close-on-exec).
        with subprocess.Popen(
            list(argv),
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            close_fds=False,
            preexec_fn=_keep_only_stdio_and(None if fd3 is None else r),
        ) as proc:
            if w >= 0:
                os.close(w)
                w = -1
            try:
                out, err = proc.communicate(stdin, timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
                raise
        done = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
        done.pid = proc.pid  # type: ignore[attr-defined]  # whose lines a syslog record is
        return done
    finally:
        for fd in (r, w):
            if fd >= 0:
                os.close(fd)


_RECORDER = r'''#!/usr/bin/python3 -I
"""Test recorder: record OUTFILE [args...] writes what it was started with to OUTFILE as JSON."""
import json
import os
import sys


def open_fds():
    listed = [int(n) for n in os.listdir("/proc/self/fd")]
    fds = []
    for fd in listed:
        try:
            os.fstat(fd)
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # the listdir descriptor
        if target.startswith("/dev/shm/") and "faketime" in target:
            continue  # libfaketime's own, when the suite runs under faketime(1)
        fds.append(fd)
    return sorted(fds)


def initial_environ():
    # Not os.environ: Python's C-locale coercion (PEP 538) adds LC_CTYPE=C.UTF-8 to it at start-up.
    # /proc/self/environ still holds exactly what execve() passed.
    with open("/proc/self/environ", "rb") as f:
        raw = f.read()
    env = {}
    for item in raw.split(b"\0"):
        if item:
            key, _, value = item.partition(b"=")
            env[os.fsdecode(key)] = os.fsdecode(value)
    return env


env = initial_environ()
try:
    cwd = os.getcwd()
except OSError:
    cwd = None
umask = os.umask(0o022)
os.umask(umask)
record = {
    "argv": sys.argv,
    "env": env,
    "cwd": cwd,
    "uid": os.getuid(),
    "euid": os.geteuid(),
    "gid": os.getgid(),
    "egid": os.getegid(),
    "groups": sorted(os.getgroups()),
    "fds": open_fds(),
    "umask": umask,
    "pid": os.getpid(),
}
with open(sys.argv[1], "w") as f:
    json.dump(record, f)
target = os.environ.get("RECORD_EXEC")
if target:
    os.execve(target, [target], env)
sys.exit(0)
'''


def write_recorder(dirpath: str | os.PathLike[str]) -> str:
    """Write the executable ``record`` program into dirpath and return its path.

    ``record OUTFILE [args...]`` writes JSON {argv, env, cwd, uid, euid, gid, egid, groups, fds, umask, pid}
    to OUTFILE (``fds`` = descriptors open at start) and exits 0; if RECORD_EXEC is set in its
    environment it then execs that path with no arguments and the same environment instead.
    ``env`` is the environment exactly as passed to execve (read from /proc/self/environ), without the
    LC_CTYPE=C.UTF-8 that Python itself adds when started in the C locale.  It runs under /usr/bin/python3 -I,
    so it works for any uid and without PATH.  OUTFILE's directory must be writable by the uid it runs
    as (see shared_tmpdir).
    """
    path = Path(dirpath) / "record"
    path.write_text(_RECORDER)
    path.chmod(0o755)
    return str(path)


def shared_tmpdir(prefix: str = "vpop-") -> Path:
    """A new directory under /tmp, mode 1777, that any uid (vpopmail, dovecot's mail uid) can use.

    pytest's tmp_path is 0700 root-owned, so uid 89 cannot even traverse it.  Remove it with
    shutil.rmtree when done (the world_tmp fixture does).
    """
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o1777)
    return path


def make_home(
    parent: str | os.PathLike[str], name: str, uid: int = VPOPMAIL_UID, gid: int = VPOPMAIL_GID
) -> Path:
    """Create ``parent/name`` (mode 0700) owned by uid:gid, e.g. a mail home for Dovecot's mail uid."""
    path = Path(parent) / name
    path.mkdir(mode=0o700, parents=True)
    os.chown(path, uid, gid)
    return path


def wait_for_log(log: Path, text: str, timeout: float = 5) -> str:
    """The file's text once it holds ``text`` (a server writes its log a moment later), or after
    ``timeout`` seconds whatever it holds."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        content = log.read_text(errors="replace") if log.exists() else ""
        if text in content or time.monotonic() > deadline:
            return content
        time.sleep(0.05)


def remove_tree(path: str | os.PathLike[str]) -> None:
    """rmtree that never fails a teardown."""
    shutil.rmtree(path, ignore_errors=True)


def spawn_python(code: str, *args: str, **kw: object) -> subprocess.Popen[str]:
    """``code`` in a fresh interpreter that imports the same ``vpop`` as the tests (text pipes)."""
    import textwrap

    import vpop

    parent = str(Path(vpop.__file__).resolve().parent.parent)
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args],
                            env=dict(os.environ, PYTHONPATH=parent), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)  # type: ignore[call-overload]


def strace_held(argv: list[str], env: dict[str, str], syscall: str, when: int, log: Path,
                **popen: object) -> tuple[subprocess.Popen[bytes], int]:
    """``argv`` under strace, stopped by its SIGSTOP injection on the way out of its ``when``-th
    ``syscall`` (the call has run); returns the strace process and the stopped command's pid
    (``os.kill(pid, SIGCONT)`` lets it go on).  ``log`` is strace's output file."""
    log.unlink(missing_ok=True)
    held = subprocess.Popen(["strace", "-qq", "-o", str(log), "-e", f"trace={syscall}",
                             "-e", f"inject={syscall}:signal=STOP:when={when}", *argv], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)
    deadline = time.monotonic() + 30
    while not (log.exists() and "--- stopped by SIGSTOP ---" in log.read_text()):
        if time.monotonic() > deadline or held.poll() is not None:
            held.kill()
            raise AssertionError(f"{argv[0]} never stopped: {held.communicate()}")
        time.sleep(0.02)
    return held, int(Path(f"/proc/{held.pid}/task/{held.pid}/children").read_text().split()[0])

