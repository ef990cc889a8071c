"""One vpopmaild session: greeting, login (with its limits), then commands until ``quit``.

Limits, as vpopmaild.c has them (``LOGIN_ACTIVITY``, ``LOGIN_FAILURES``, ``READ_TIMEOUT``): at
most 4 lines before a login succeeds (the 4th unsuccessful one is answered, then ``-ERR 2.102``
and the end), 3 failed logins (the 3rd is followed by ``-ERR 5.105``), and each line within
``vpopmaild_timeout`` seconds (``-ERR 3.103`` before, ``-ERR 3.106`` after the login).  A line
longer than :data:`vpopmaild.wire.MAX_LINE` is ``-ERR 39.<n> Line too long``.

Logins go through :func:`vpop.auth.authenticate` (the engine vchkpw uses) as the service
``vpopmaild_service`` (default ``webmail``: a user with NO_WEBMAIL cannot use vpopmaild; vpopmail's
vpopmaild checked the password only), without lastauth or relay (an admin login is no mail
session).  Who may do what is :mod:`vpopmaild.commands`'s.  Every refusal is logged (syslog,
``vpop.log``) with the command, the address or domain it was about and who asked; never with a
password or any other text of the line.
"""

import time

from vpop import log as vlog
from vpop.names import ascii_lower

from vpopmaild import wire

LOGIN_ACTIVITY = 4  # lines before a login
LOGIN_FAILURES = 3  # failed logins per connection
MAX_BLOCK_LINES = 1000  # parameter lines of one mod_user / set_limits
QA_ADMIN, SA_ADMIN = 0x1000, 0x10000
USER, DOMAIN_ADMIN, SYSTEM_ADMIN = 1, 2, 3
FULL, COMPACT, SILENT = 0, 1, 2  # login, clogin, slogin


class LoginFailed(wire.Refusal):
    """A refused login: counts towards :data:`LOGIN_FAILURES`."""


class Session:
    """The state of one connection: who is logged in, at which level, and the store in use."""

    def __init__(self, settings, log: vlog.Logger, connection: wire.Connection, environ: dict) -> None:
        from vpop.names import remote_ip

        self.settings = settings
        self.log = log
        self.connection = connection
        self.environ = environ
        self.ip = remote_ip(environ)
        self.level = 0
        self.output = FULL
        self.user = ""
        self.domain = None  # the logged-in user's vpop.assign.Domain
        self.record = None  # and record (postmaster with QA_ADMIN OR'ed in, as vpopmail)
        self.target = ""  # what the command in hand is about (address or domain), for the log
        self.draining = False  # a mod_user was refused before its ack: drop its parameter lines
        self._store = None

    # ------------------------------------------------------------------ helpers for the commands

    @property
    def store(self):
        if self._store is None:
            from vpop.stores import open_store

            # every read on the update server: what an admin acts on must not lag behind
            # (see shared/reference/replication.md; the logins read the replica, as vchkpw)
            self._store = open_store(self.settings, primary=True)
        return self._store

    def who(self) -> str:
        name = f"{self.user}@{self.domain.real}" if self.domain is not None else "-"
        return f"{name}:{self.ip}"

    def say(self, category: int, text: str) -> None:
        self.log.log(category, f"vpopmaild: {text}")

    def read_block(self, command: str) -> "tuple[list[bytes], bool]":
        """The lines after an ack up to the one that starts with ``.``, all within one timeout
        (vpopmail gave each line its own); (lines, one was too long)."""
        lines: list[bytes] = []
        too_long = False
        deadline = time.monotonic() + self.connection.timeout  # one for the whole block
        while True:
            try:
                line = self.connection.read_line(deadline)
            except wire.TooLong:
                too_long = True
                continue
            except wire.Closed:
                self.say(vlog.LOGON,
                         f"client gone during {command} {self.target}: nothing changed {self.who()}")
                raise
            if line.startswith(b"."):
                return lines, too_long
            lines.append(line)
            if len(lines) > MAX_BLOCK_LINES:
                refusal = wire.Refusal(wire.INVALID_PARAM, 999)
                self.refused(command, refusal, "more than 1000 lines")
                self.connection.send([refusal.line()])
                raise wire.Closed()

    def refused(self, command: str, refusal: wire.Refusal, reason: str = "") -> None:
        reason = reason or refusal.reason
        about = f" {self.target}" if self.target else ""
        why = f": {reason}" if reason else ""
        category = vlog.ACCESS if refusal.major in (wire.NOT_AUTHORIZED, wire.NOT_AUTH_DOMAIN,
                                                    wire.PASSWD_CHNG_REFUSED) else vlog.LOGON
        text = refusal.text if refusal.major == 0 else wire.MESSAGES[refusal.major]
        self.say(category, f"{command}{about} refused ({refusal.major}.{refusal.minor:03d} {text}){why} "
                           f"by {self.who()}")

    # ------------------------------------------------------------------ the session

    def run(self) -> int:
        try:
            if self.settings.store not in ("cdb", "mysql"):
                self.say(vlog.INTERNAL, f"store {self.settings.store} has no vpopmail users {self.who()}")
                self.connection.send([wire.Refusal(wire.CANT_OPEN_AUTH, 101).line()])
                return 111
            self.connection.send([wire.OK])
            return self.serve()
        except wire.Timeout as exc:
            if exc.writing:
                timeout = self.settings.vpopmaild_timeout
                self.say(vlog.LOGON, f"write timeout ({timeout} s): the client does not read {self.who()}")
                return 1
            minor = 103 if self.level == 0 else 106
            self.say(vlog.LOGON, f"read timeout ({self.settings.vpopmaild_timeout} s) {self.who()}")
            try:
                self.connection.send([wire.Refusal(wire.RD_TIMEOUT, minor).line()])
            except (wire.Closed, wire.Timeout):
                pass
            return 1
        except wire.Closed:
            return 1
        finally:
            if self._store is not None:
                self._store.close()

    def serve(self) -> int:
        from vpopmaild import commands

        attempts = failures = 0
        while self.level == 0:
            attempts += 1
            answer, status = self.one_line(commands.LOGIN_COMMANDS, 104, 110)
            if status == "quit":
                self.connection.send(answer)
                return 0
            if status == "failed":
                failures += 1
                if failures >= LOGIN_FAILURES:
                    self.say(vlog.LOGON, f"{failures} failed logins: connection closed {self.who()}")
                    self.connection.send(answer + [wire.Refusal(wire.TOO_MANY_LOGIN, 105).line()])
                    return 1
            if self.level == 0 and attempts >= LOGIN_ACTIVITY:
                self.say(vlog.LOGON, f"{attempts} lines without a login: connection closed {self.who()}")
                self.connection.send(answer + [wire.Refusal(wire.TOO_MANY_ACTION, 102).line()])
                return 1
            if answer:
                self.connection.send(answer)
        while True:
            answer, status = self.one_line(commands.COMMANDS, 107, 108)
            if answer:
                self.connection.send(answer)
            if status == "quit":
                return 0

    def one_line(self, table: dict, unknown_minor: int, too_long_minor: int) -> "tuple[list[str], str]":
        """Read and answer one line; (answer lines, ``""``/``"failed"``/``"quit"``)."""
        self.target = ""
        try:
            line = self.connection.read_line()
        except wire.TooLong:
            refusal = wire.Refusal(wire.LINE_TOO_LONG, too_long_minor)
            self.refused("line", refusal, f"more than {wire.MAX_LINE} bytes")
            self.draining = False
            return [refusal.line()], ""
        words = wire.Words(line)
        name = words.text()
        if self.draining:
            from vpopmaild.accounts import MOD_USER_PARAMS

            if line.startswith(b"."):
                self.draining = False
                return [], ""
            if name is not None and name in MOD_USER_PARAMS:
                return [], ""
            self.draining = False
        if name is None:
            return [], ""  # blank lines are ignored (and count before the login)
        command = ascii_lower(name)
        entry = table.get(command)
        if entry is None:
            refusal = wire.Refusal(wire.INVALID_COMMAND, unknown_minor)
            self.refused("command", refusal, "unknown command")
            return [refusal.line()], ""
        level, handler, denied, failed = entry[:4]
        try:
            if self.level < level:
                raise wire.Refusal(wire.NOT_AUTHORIZED, denied, reason=f"needs level {level}")
            answer = self.guarded(handler, words, failed)
        except LoginFailed as refusal:
            if not refusal.reason.startswith("logged"):
                self.refused(command, refusal)
            return [refusal.line()], "failed"
        except wire.Refusal as refusal:
            self.refused(command, refusal)
            return [refusal.line()], ""
        if answer is None:
            return [wire.OK], "quit"
        return answer, ""

    def guarded(self, handler, words: wire.Words, failed: int) -> "list[str] | None":
        """Run a command; the admin library's refusals and temporary failures become ``-ERR`` lines."""
        from vpop.admin.cli import AdminError
        from vpop.errors import TemporaryFailure

        try:
            return handler(self, words)
        except AdminError as exc:
            text = " ".join(exc.message.removeprefix("Error: ").split())
            raise wire.Refusal(0, failed, text) from None
        except TemporaryFailure as exc:
            self.say(vlog.INTERNAL, f"{exc.message} {self.who()}")
            raise wire.Refusal(wire.TEMPORARY, failed, reason="temporary failure") from None
