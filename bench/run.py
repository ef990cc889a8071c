"""Start-up benchmarks: whole-process runs as ratios to ``python -I -c pass``.

Run with ``make bench`` (as root, after ``make test`` or ``make demo`` installed .venv).
Every figure is the median of N runs of a whole process started with ``posix_spawn``,
divided by the median of the floor, ``<venv python> -I -c pass``, measured in the same
run with the same interpreter.  Budgets are the issues'; a figure over budget is marked.
Not a test: machines differ, and a timing assertion would be flaky by design.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
VENV_BIN = os.path.dirname(sys.executable)
PYTHON = os.path.join(VENV_BIN, "python")


def spawn_time(argv: list[str], env: dict, fd3: bytes | None = None, stdin_path: str | None = None) -> float:
    """Seconds for one whole process: spawn, run, exit; fd 3 filled from a pipe when given."""
    actions = []
    read_end = None
    if fd3 is not None:
        read_end, write_end = os.pipe()
        os.write(write_end, fd3)
        os.close(write_end)
        actions.append((os.POSIX_SPAWN_DUP2, read_end, 3))
    if stdin_path is not None:
        actions.append((os.POSIX_SPAWN_OPEN, 0, stdin_path, os.O_RDONLY, 0))
    devnull = os.open(os.devnull, os.O_WRONLY)
    actions += [(os.POSIX_SPAWN_DUP2, devnull, 1), (os.POSIX_SPAWN_DUP2, devnull, 2)]
    start = time.perf_counter()
    pid = os.posix_spawn(argv[0], argv, env, file_actions=actions)
    _, status = os.waitpid(pid, 0)
    elapsed = time.perf_counter() - start
    os.close(devnull)
    if read_end is not None:
        os.close(read_end)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"{argv[0]} exited {code}")
    return elapsed


def median_of(runs: int, argv: list[str], env: dict, **kw) -> float:
    spawn_time(argv, env, **kw)  # warm the page cache
    return statistics.median(spawn_time(argv, env, **kw) for _ in range(runs))


def cdb_sandbox() -> tuple[str, dict]:
    """A vpopmail tree with one MD5-crypt user on the CDB store; returns (config, login env)."""
    from vpop import admin
    from vpop.config import load_settings

    sandbox = tempfile.mkdtemp(prefix="vpop-bench-", dir="/tmp")
    os.chmod(sandbox, 0o755)
    config = f"{sandbox}/vpop.conf"
    with open(config, "w") as handle:
        handle.write(f"vpopmail_home = {sandbox}/vpopmail\nqmail_home = {sandbox}/qmail\nstore = cdb\n"
                     f"syslog_socket = {sandbox}/no-syslog\n")
    for path in ("vpopmail/etc", "vpopmail/domains", "qmail/users", "qmail/control"):
        os.makedirs(f"{sandbox}/{path}")
    settings = load_settings({"VPOP_CONFIG": config})
    admin.add_domain(settings, "example.com", 89, 89)
    admin.add_user(settings, "example.com", "bob", "secret", hash_method="md5")
    return config, sandbox


def report(name: str, seconds: float, floor: float, budget: float | None) -> None:
    ratio = seconds / floor
    mark = "" if budget is None else ("  ok" if ratio <= budget else "  OVER BUDGET")
    limit = "" if budget is None else f" (budget {budget}x)"
    print(f"{name:<44} {seconds * 1000:7.2f} ms  {ratio:5.2f}x{limit}{mark}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", "--runs", type=int, default=30)
    args = parser.parse_args()
    sys.path.insert(0, os.path.join(ROOT, "lib"))
    env = {"PATH": "/usr/bin:/bin"}
    floor = median_of(args.runs, [PYTHON, "-I", "-c", "pass"], env)
    print(f"floor: {PYTHON} -I -c pass: {floor * 1000:.2f} ms (median of {args.runs})")

    config, sandbox = cdb_sandbox()
    login_env = {"PATH": "/usr/bin:/bin", "VPOP_CONFIG": config, "TCPLOCALPORT": "110",
                 "TCPREMOTEIP": "192.0.2.10"}
    fd3 = b"bob@example.com\0secret\0<1.2@bench>\0"
    seconds = median_of(args.runs, [f"{VENV_BIN}/vchkpw", "/bin/true"], login_env, fd3=fd3)
    report("vchkpw login, CDB store, MD5-crypt", seconds, floor, 1.6)
    return 0


if __name__ == "__main__":
    sys.exit(main())
