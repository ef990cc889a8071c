"""One vlookupd worker: its own store and database connections, and a loop over its clients.

The master forks ``lookup_workers`` of these; each accepts from the shared listening socket and
serves its connections with ``epoll``, one request at a time (a request waits on the
database or on crypt(3) in this process only: the other workers go on).  A worker holds at most
one store, so the database sees exactly one connection (one read and one update connection when
the credentials name two servers) per worker.

Who may ask what is decided per connection from its peer credentials (``SO_PEERCRED``):
root and the ``lookup_trusted_users`` (vpopmail) may ask everything, the ``lookup_getpw_users``
(qmail-getpw's qmailp) only ``getpw`` and ``hello``, everyone else nothing.
"""

import os
import select
import signal
import socket
import struct
import time

from vpop.errors import DatabaseFailure, VpopError, is_database_failure, raised_at
from vpop.lookup.protocol import MAX_BODY, MAX_HEADER, ProtocolError, decode_body, encode, parse_header

from vlookupd import handlers
from vlookupd.cache import Cache, CachingStore

IDLE_SECONDS = 60  # a connection that sends nothing for this long is closed
MAX_CONNECTIONS = 512  # per worker; the longest idle goes first
SEND_SECONDS = 2  # an answer the client does not take in this time ends the connection
_PEERCRED = struct.Struct("3i")
_COUNTED = ("ok", "none", "refused", "temp", "denied", "bad", "stale", "internal")


class Peer:
    """The process at the other end: SO_PEERCRED's pid, uid and gid, and what it may ask."""

    __slots__ = ("pid", "uid", "gid", "cls")

    def __init__(self, pid: int, uid: int, gid: int, cls: str | None) -> None:
        self.pid = pid
        self.uid = uid
        self.gid = gid
        self.cls = cls


def resolve_users(names) -> set[int]:
    """uids of user names or numbers; unknown names are left out (and reported)."""
    import pwd

    from vpop.log import stderr_line

    uids = set()
    for name in names:
        if name.isdigit():
            uids.add(int(name))
            continue
        try:
            uids.add(pwd.getpwnam(name).pw_uid)
        except KeyError:
            stderr_line(f"vlookupd: no user {name}: left out of the lookup_*_users")
    return uids


class Trust:
    """uid -> peer class (see the module)."""

    def __init__(self, trusted: set[int], getpw: set[int]) -> None:
        self.trusted = trusted | {0}
        self.getpw = getpw - self.trusted

    @classmethod
    def of(cls, settings) -> "Trust":
        return cls(resolve_users(settings.lookup_trusted_users), resolve_users(settings.lookup_getpw_users))

    def classify(self, uid: int) -> str | None:
        if uid in self.trusted:
            return handlers.FULL
        if uid in self.getpw:
            return handlers.GETPW
        return None


class Connection:
    __slots__ = ("sock", "peer", "buffer", "active")

    def __init__(self, sock: socket.socket, peer: Peer) -> None:
        self.sock = sock
        self.peer = peer
        self.buffer = bytearray()
        self.active = time.monotonic()


class Worker:
    """The loop, the store and the cache of one worker process."""

    def __init__(self, index: int, settings, listener: socket.socket, stats, trust: Trust, master_pid: int,
                 master_fd: int, log, load) -> None:
        self.index = index
        self.settings = settings
        self.listener = listener
        self.stats = stats
        self.row = stats.row(index)
        self.trust = trust
        self.master_pid = master_pid
        self.master_fd = master_fd
        self.log = log  # the daemon's own syslog lines
        self.load = load  # () -> (settings, identity): the settings file read again
        self.identity = load.identity
        self.pid = os.getpid()
        self.cache = Cache(settings.lookup_cache_seconds, settings.lookup_cache_entries, stats)
        self._store = None
        self.opened_at = 0  # the request during which the store was opened
        self.serial = 0  # requests served
        self.connections: dict[int, Connection] = {}
        self.stopping = False
        self.reload_wanted = False
        #: writes of the request being answered that wait for the answer to be sent (lastauth),
        #: with the logger of their failures
        self.later: list = []
        self.later_log = None

    # ------------------------------------------------------------------ the store

    def store(self):
        if self._store is None:
            from vpop.stores import open_store

            self._store = open_store(self.settings, self.log)
            self.opened_at = self.serial
        return self._store

    def reset_store(self) -> None:
        """Forget the store and its connections: the next request connects again."""
        if self._store is not None:
            try:
                self._store.close()
            except Exception:  # a broken connection may fail to close: it is gone either way
                pass
            self._store = None

    def caching_store(self, use_cache: bool) -> CachingStore:
        return CachingStore(self.store(), self.cache, self.row, self.invalidate, use_cache)

    def invalidate(self) -> None:
        """Void the cached answers of every worker (the shared generation moves on)."""
        self.row.add("invalidations")
        self.cache.clear()

    def with_reconnect(self, work, start_again=None):
        """``work()``; once more on new connections when the database failed on connections
        opened before this request (the server closed them meanwhile: wait_timeout, a restart)."""
        try:
            return work()
        except DatabaseFailure:
            if self._store is None or self.opened_at >= self.serial:
                raise
        self.reset_store()
        self.row.add("reconnects")
        if start_again is not None:
            start_again()
        return work()

    def warm_up(self) -> None:
        """Connect now, so that the pool's connections exist before the first client."""
        try:
            store = self.store()
            store.probe()
            store.connect_for_updates()
        except VpopError as exc:
            self.log.send(f"worker {self.index}: not connected yet: {exc.message}", "warning")
            self.reset_store()

    def after_answer(self, work: list, log) -> None:
        """Run ``work`` (callables) once the answer is sent; ``log`` flushed after them."""
        self.later, self.later_log = list(work), log

    def run_later(self) -> None:
        work, log = self.later, self.later_log
        self.later, self.later_log = [], None
        for item in work:
            try:
                item()  # lastauth: its own failures are logged by the engine
            except Exception as exc:  # noqa: BLE001 - the client has its answer: only the log can say it
                self.log.send(f"internal error {exc.__class__.__name__} at {raised_at(exc, 'vlookupd')} "
                              f"after an answer", "err")
        if log is not None:
            log.flush()

    # ------------------------------------------------------------------ settings

    def same_settings(self, fields) -> bool:
        """The client's settings file is the daemon's (read again if it changed meanwhile)."""
        wanted = fields.get("config_id")
        if wanted is None or wanted.decode("ascii", "replace") == self.identity:
            return True
        if self.load.changed():
            self.reload()
        return wanted.decode("ascii", "replace") == self.identity

    def reload(self) -> None:
        self.reload_wanted = False
        try:
            settings, identity = self.load()
        except VpopError as exc:
            self.log.send(f"worker {self.index}: settings not reloaded: {exc.message}", "err")
            return
        self.reset_store()
        self.settings, self.identity = settings, identity
        self.trust = Trust.of(settings)
        self.cache = Cache(settings.lookup_cache_seconds, settings.lookup_cache_entries, self.stats)

    # ------------------------------------------------------------------ requests

    def answer(self, peer: Peer, op: str, fields) -> tuple[str, list]:
        allowed = handlers.NEEDS.get(op)
        if allowed is None:
            return "bad", [("message", f"unknown request {op}")]
        if peer.cls not in allowed:
            return "denied", [("message", f"uid {peer.uid} may not ask {op}")]
        if not self.same_settings(fields):
            return "stale", [("message", f"the daemon runs with the settings of {self.load.path}")]
        from vpop import clock

        clock.fix(fields.text("clock") or None)  # the client's VPOP_CLOCK, or the system clock
        primary = fields.get("primary") == b"1"  # a client confirming a "not found" (replica lag)

        def work():
            if primary:
                self.store().read_from_primary()
            return handlers.HANDLERS[op](self, peer, fields)

        try:
            return self.with_reconnect(work)
        except handlers.BadRequest as exc:
            return "bad", [("message", str(exc))]
        except VpopError as exc:
            if is_database_failure(exc):
                self.reset_store()
            return handlers.outcome(exc)
        except Exception as exc:  # the client does its direct lookup, which will say what went wrong
            self.log.send(f"internal error {exc.__class__.__name__} at {raised_at(exc, 'vlookupd')} "
                          f"in {op}", "err")
            self.reset_store()
            return "internal", [("message", exc.__class__.__name__)]
        finally:
            clock.fix(None)
            if self._store is not None:
                self._store.follow_replica()  # a confirmation moves one request to the primary
            self.row.set("cache_entries", len(self.cache.items))

    def respond(self, conn: Connection, op: str, fields) -> bool:
        """Answer one request; False when the connection is to be closed."""
        started = time.monotonic()
        self.serial += 1
        self.row.add("requests")
        status, answer = self.answer(conn.peer, op, fields)
        self.row.add(status if status in _COUNTED else "bad")
        try:
            frame = encode(status, answer)
        except ValueError:
            status, frame = "internal", encode("internal", [("message", "answer too long")])
        keep = self.send(conn, frame) and status != "denied"
        self.row.latency(time.monotonic() - started)
        if self.later or self.later_log is not None:
            self.run_later()
        return keep

    def send(self, conn: Connection, frame: bytes) -> bool:
        try:
            conn.sock.settimeout(SEND_SECONDS)
            conn.sock.sendall(frame)
            conn.sock.setblocking(False)
            return True
        except OSError:
            return False

    # ------------------------------------------------------------------ the loop

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the master stops us
        signal.signal(signal.SIGHUP, self._hup)
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        self.row.set("pid", self.pid)
        self.warm_up()
        self.poller = select.epoll()
        self.listener.setblocking(False)
        # EPOLLEXCLUSIVE: a connection wakes one waiting worker, not all of them (on a small
        # machine the others would take the CPU from the client that is connecting)
        self.watched = {self.listener.fileno(): "listen", self.master_fd: "master", wake_r: "wake"}
        self.poller.register(self.listener.fileno(), select.EPOLLIN | getattr(select, "EPOLLEXCLUSIVE", 0))
        self.poller.register(self.master_fd, select.EPOLLIN)
        self.poller.register(wake_r, select.EPOLLIN)
        while not self.stopping:
            try:
                ready = self.poller.poll(5)
            except InterruptedError:
                ready = []
            for fd, _events in ready:
                what = self.watched.get(fd)
                if what == "listen":
                    self.accept()
                elif what == "master":
                    self.stopping = True  # the master is gone: its pipe reads EOF
                elif what == "wake":
                    try:
                        os.read(wake_r, 512)
                    except BlockingIOError:
                        pass
                elif what is not None:
                    self.readable(what)
            if self.reload_wanted:
                self.reload()
            self.close_idle()
        for conn in list(self.connections.values()):
            self.close(conn)
        self.poller.close()
        self.reset_store()

    def _stop(self, signum, frame) -> None:
        self.stopping = True

    def _hup(self, signum, frame) -> None:
        self.reload_wanted = True

    def accept(self) -> None:
        for _ in range(16):
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and friends: try again on the next round
                self.log.send(f"worker {self.index}: accept failed: {exc.strerror}", "err")
                return
            pid, uid, gid = _PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                             _PEERCRED.size))
            sock.setblocking(False)
            conn = Connection(sock, Peer(pid, uid, gid, self.trust.classify(uid)))
            self.row.add("connections")
            if len(self.connections) >= MAX_CONNECTIONS:
                self.close(min(self.connections.values(), key=lambda c: c.active))
            self.connections[sock.fileno()] = conn
            self.watched[sock.fileno()] = conn
            self.poller.register(sock.fileno(), select.EPOLLIN)
            # a client sends its request right after connecting: it is usually here already, and
            # reading it now saves a round through the poller
            self.readable(conn)

    def readable(self, conn: Connection) -> None:
        if conn.sock.fileno() not in self.connections:
            return  # closed meanwhile
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.close(conn)
            return
        conn.active = time.monotonic()
        conn.buffer += data
        while True:
            try:
                frame = self._take_frame(conn)
            except ProtocolError as exc:
                self.row.add("requests")
                self.row.add("bad")
                self.send(conn, encode("bad", [("message", str(exc))]))
                self.close(conn)
                return
            if frame is None:
                return
            op, fields = frame
            if not self.respond(conn, op, fields):
                self.close(conn)
                return

    @staticmethod
    def _take_frame(conn: Connection):
        """The next complete request in the buffer, or None (wait for more)."""
        end = conn.buffer.find(b"\n", 0, MAX_HEADER + 1)
        if end < 0:
            if len(conn.buffer) > MAX_HEADER:
                raise ProtocolError("header too long")
            return None
        op, length = parse_header(bytes(conn.buffer[:end]))
        if len(conn.buffer) < end + 1 + length:
            if length > MAX_BODY:
                raise ProtocolError("body too long")
            return None
        body = bytes(conn.buffer[end + 1:end + 1 + length])
        del conn.buffer[:end + 1 + length]
        return op, decode_body(body)

    def close(self, conn: Connection) -> None:
        fd = conn.sock.fileno()
        if fd < 0:
            return  # closed already
        self.connections.pop(fd, None)
        self.watched.pop(fd, None)
        try:
            self.poller.unregister(fd)
        except (OSError, ValueError):
            pass
        conn.sock.close()

    def close_idle(self) -> None:
        limit = time.monotonic() - IDLE_SECONDS
        for conn in [c for c in self.connections.values() if c.active < limit]:
            self.close(conn)
