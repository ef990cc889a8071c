"""vlookupd: the shared lookup daemon, in the foreground, as a supervisor (daemontools, runit,
systemd) starts it.

    vlookupd                      serve on ``lookup_socket`` with the settings of VPOP_CONFIG
    vlookupd --stats              print the running daemon's counters (one ``name value`` a line)
    vlookupd --invalidate WHAT    drop its cached answers (WHAT: user@domain, @domain or '*')

The master binds the socket, forks ``lookup_workers`` workers (:mod:`vlookupd.worker`) and
replaces one that dies; it holds no database connection itself.  Signals: TERM or INT stop it
(the socket is removed), HUP makes every worker read the settings and the credentials again,
USR1 logs the counters to syslog.  Exit 0 after TERM/INT, 2 on a usage error, 111 when it cannot
start (settings, socket in use).
"""

import os
import signal
import socket
import sys
import time

from vpop import log as vlog
from vpop.errors import ConfigError, TemporaryFailure, VpopError

USAGE = "usage: vlookupd [--stats | --invalidate user@domain|@domain|*]"
_SIGNALS = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1}
_RESPAWN_PAUSE = 1.0  # a worker that died within this time of its start is replaced after it


class SettingsFile:
    """The daemon's settings file: read it, and tell when it changed since it was read."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.identity = ""

    def __call__(self):
        from vpop.config import load_settings
        from vpop.lookup.client import config_identity

        identity = config_identity(self.path)
        settings = load_settings({"VPOP_CONFIG": self.path})
        self.identity = identity
        return settings, identity

    def changed(self) -> bool:
        from vpop.lookup.client import config_identity

        return config_identity(self.path) != self.identity


def bind_socket(path: str) -> socket.socket:
    """The listening socket at ``path`` (mode 0666: the peer's uid decides, not the mode)."""
    directory = os.path.dirname(path)
    os.makedirs(directory, 0o755, exist_ok=True)
    info = os.stat(directory)
    if info.st_uid != 0 or info.st_mode & 0o022:
        vlog.stderr_line(f"vlookupd: warning: {directory} can be written by others than root: another "
                         f"program could take the socket's name (vchkpw and vdelivermail check that the "
                         f"daemon is root, Dovecot's Lua script cannot); use a root-owned 0755 directory")
    if os.path.lexists(path):
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(1)
        try:
            probe.connect(path)
        except OSError:
            import stat

            if not stat.S_ISSOCK(os.lstat(path).st_mode):  # a file the setting names by mistake
                raise TemporaryFailure(f"{path} exists and is not a socket: not removed") from None
            os.unlink(path)  # left by a daemon that is gone
        else:
            raise TemporaryFailure(f"another vlookupd answers on {path}")
        finally:
            probe.close()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # mode 0666 from the bind itself (the peer's uid decides, see worker.Trust): a chmod by name
    # afterwards could follow a link put there meanwhile
    old_umask = os.umask(0o111)
    try:
        listener.bind(path)
    finally:
        os.umask(old_umask)
    listener.listen(256)
    return listener


class Master:
    """Forks the workers, replaces the ones that die, relays signals."""

    def __init__(self, settings, load: SettingsFile, log) -> None:
        from vlookupd.stats import SharedStats
        from vlookupd.worker import Trust

        self.settings = settings
        self.load = load
        self.log = log
        self.count = settings.lookup_workers
        self.trust = Trust.of(settings)
        self.stats = SharedStats(self.count)
        self.listener = bind_socket(settings.lookup_socket)
        self.pids: dict[int, int] = {}  # pid -> worker index
        self.started: dict[int, float] = {}  # worker index -> when
        self.pending: dict[int, float] = {}  # worker index -> when to start it
        self.pipes: dict[int, int] = {}  # worker index -> the write end its worker watches

    def spawn(self, index: int) -> None:
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(write_end)
            for other in self.pipes.values():
                os.close(other)
            signal.pthread_sigmask(signal.SIG_SETMASK, set())
            code = 0
            try:
                from vlookupd.worker import Worker

                Worker(index, self.settings, self.listener, self.stats, self.trust, os.getppid(), read_end,
                       self.log, self.load).run()
            except BaseException as exc:  # noqa: BLE001 - a worker must never return into the master's loop
                self.log.send(f"worker {index} failed: {exc.__class__.__name__}: {exc}", "err")
                code = 1
            os._exit(code)
        os.close(read_end)
        old = self.pipes.pop(index, None)
        if old is not None:
            os.close(old)
        self.pipes[index] = write_end
        self.pids[pid] = index
        self.started[index] = time.monotonic()

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            index = self.pids.pop(pid, None)
            if index is None:
                continue
            self.log.send(f"worker {index} (pid {pid}) ended: {_status(status)}; replaced", "err")
            young = time.monotonic() - self.started.get(index, 0.0) < _RESPAWN_PAUSE
            self.pending[index] = time.monotonic() + (_RESPAWN_PAUSE if young else 0.0)

    def report(self) -> None:
        from vlookupd.stats import rss_kib, summary

        pids = [os.getpid(), *self.pids]
        self.log.send(summary(self.stats.totals(), rss_kib(pids)))

    def stop(self) -> None:
        for pid in list(self.pids):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        while self.pids and time.monotonic() < deadline:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid:
                self.pids.pop(pid, None)
            else:
                time.sleep(0.02)
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            os.unlink(self.settings.lookup_socket)
        except OSError:
            pass

    def run(self) -> int:
        signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        self.log.send(f"started: {self.count} workers, store {self.settings.store}, "
                      f"socket {self.settings.lookup_socket}")
        for index in range(self.count):
            self.spawn(index)
        while True:
            now = time.monotonic()
            for index, when in list(self.pending.items()):
                if when <= now:
                    del self.pending[index]
                    self.spawn(index)
            info = signal.sigtimedwait(_SIGNALS, 0.5)
            if info is None:
                continue
            if info.si_signo == signal.SIGCHLD:
                self.reap()
            elif info.si_signo in (signal.SIGTERM, signal.SIGINT):
                self.stop()
                self.log.send("stopped")
                return 0
            elif info.si_signo == signal.SIGHUP:
                for pid in self.pids:
                    os.kill(pid, signal.SIGHUP)
            elif info.si_signo == signal.SIGUSR1:
                self.report()


def _status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {os.WTERMSIG(status)}"
    return f"exit {os.waitstatus_to_exitcode(status)}"


def serve(settings, load: SettingsFile) -> int:
    log = vlog.Logger("vlookupd", "e", settings.syslog_socket)
    if settings.lookup_socket == "none":
        raise ConfigError(settings.path, None, "lookup_socket is not set: vlookupd has no socket to serve")
    if settings.lookup_workers < 1:
        raise ConfigError(settings.path, None, "lookup_workers must be at least 1")
    try:
        master = Master(settings, load, log)
    except OSError as exc:
        raise TemporaryFailure(f"cannot listen on {settings.lookup_socket}: {exc.strerror}") from None
    return master.run()


def ask(settings, op: str, fields) -> int:
    """``--stats`` and ``--invalidate``: one request to the running daemon."""
    from vpop.lookup.client import tell

    answer = tell(settings, op, fields)
    if answer is None:
        vlog.stderr_line(f"vlookupd: no daemon answers on {settings.lookup_socket}")
        return 111
    for key, value in answer.pairs:
        os.write(1, key.encode() + b" " + value + b"\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv if argv is None else argv
    args = argv[1:]
    if args in (["-h"], ["--help"]):
        os.write(1, (USAGE + "\n").encode())
        return 0
    if args and not (args == ["--stats"] or (len(args) == 2 and args[0] == "--invalidate")):
        vlog.stderr_line(USAGE)
        return 2
    try:
        from vpop.config import DEFAULT_PATH

        load = SettingsFile(os.environ.get("VPOP_CONFIG") or DEFAULT_PATH)
        settings, _identity = load()
        if args == ["--stats"]:
            return ask(settings, "stats", [])
        if args:
            return ask(settings, "invalidate", [("what", args[1])])
        return serve(settings, load)
    except VpopError as exc:
        vlog.stderr_line(f"vlookupd: {exc.message}")
        return 111
