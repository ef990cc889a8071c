"""The delivery engine behind vdelivermail: lines, Maildirs with quota, mboxes, programs, forwards.

A *delivery line* is what a valias row, a user's ``.qmail`` line or the ``.qmail-default``
instruction says: ``#comment``, ``|program``, a Maildir (``/`` or ``./`` ..., ending ``/``),
an mbox file (``/`` or ``./`` ..., not ending ``/``) or an address (``&`` allowed).

Nothing here prints or exits: outcomes are exceptions of :mod:`vpop.errors`; a program that
exits 99 raises :class:`StopDelivery` ("delivered, ignore what follows").
"""

import os

from vpop.bounce import LOOPING, OVER_QUOTA, read_message_file
from vpop.errors import PermanentFailure, TemporaryFailure
from vpop.fdio import read_chunks, write_all
from vpop.message import Message, delivered_to, is_looping, return_path

# Program exit codes qmail-local (and vdelivermail) treat as permanent failures.
HARD_PROGRAM_EXITS = frozenset((64, 65, 70, 76, 77, 78, 100, 112))


# Python ignores SIGPIPE and SIGXFSZ; programs and qmail-inject get the defaults back.
_DEFAULT_SIGNALS = (13, 25)


class StopDelivery(Exception):  # noqa: N818 - a control-flow signal, not an error
    """A program exited 99: the message counts as delivered and nothing more is done."""


class Delivery:
    """One run of vdelivermail for one recipient."""

    def __init__(self, settings, environ: dict, message: Message, user: str, domain) -> None:
        self.settings = settings
        self.environ = environ
        self.message = message
        self.user = user
        self.domain = domain
        self.address = f"{user}@{domain.real}"

    # ----------------------------------------------------------------- headers
    def return_path(self) -> bytes:
        return return_path(self.environ)

    def delivered_to(self, address: str) -> bytes:
        return delivered_to(address)

    # ----------------------------------------------------------------- lines
    def deliver_line(self, line: str, base_dir: str, quota: str = "", own_maildir: bool = False) -> None:
        """Carry out one delivery line; relative paths are relative to ``base_dir``."""
        if line.startswith("#"):
            return
        target = line[1:] if line.startswith("&") else line
        if is_looping(self.message, target, self.environ.get("DTLINE", "")):
            raise PermanentFailure(LOOPING)
        if line.startswith("|"):
            self.run_program(line.lstrip(" |"), base_dir)
        elif line.startswith(("/", ".")):
            path = line if line.startswith("/") else os.path.join(base_dir, line)
            if _unsafe_path(path):
                raise PermanentFailure(f"refusing delivery to {line}")
            # ``./Maildir/`` names <base_dir>/Maildir/ (Delivered-To is derived from the path)
            path = os.path.normpath(path) + ("/" if line.endswith("/") else "")
            if line.endswith("/"):
                self.deliver_maildir(path, quota, own_maildir)
            else:
                self.deliver_mbox(path)
        else:
            self.forward(line[1:] if line.startswith("&") else line)

    def dot_qmail(self, user_dir: str, ext: str = "") -> bool:
        """The user's own ``.qmail`` (with qmail_ext: ``.qmail-EXT``, the ``-default`` chain).

        Returns False when there is no such file or it is empty (deliver to the Maildir).
        Lines run in order; blank lines are skipped, trailing blanks stripped (as qmail-local).
        """
        names = []
        if ext:
            names.append(".qmail-" + ext)
            parts = ext.split("-")
            for i in range(len(parts) - 1, -1, -1):
                names.append(".qmail-" + "".join(p + "-" for p in parts[:i]) + "default")
        names.append(".qmail")
        for name in names:
            try:
                with open(os.path.join(user_dir, name), "rb") as handle:
                    data = handle.read(1 << 20)
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                continue
            except OSError as exc:
                raise TemporaryFailure(f"Unable to open {name}: {exc.strerror}. (#4.3.0)") from None
            lines = [line.rstrip(" \t\r") for line in data.decode("utf-8", "surrogateescape").split("\n")]
            lines = [line for line in lines if line]
            if not lines:
                return False
            for line in lines:
                self.deliver_line(line, user_dir)
            return True
        return False

    # ----------------------------------------------------------------- Maildir
    def deliver_maildir(self, maildir: str, quota: str = "", own_maildir: bool = False) -> str:
        """Maildir delivery with Maildir++ quota; returns the new file's path."""
        from vpop import maildir as md
        from vpop import quota as mq

        quota = mq.effective_quota(maildir, quota)
        if quota:
            over, percent = mq.check(maildir, quota, self.message.size, 1,
                                     self.settings.quota_small_message_bytes)
            if over:
                # As vpopmail: the message file verbatim (else the built-in line), the quota
                # warning, then an empty line.
                data = read_message_file(self.domain.dir, self.settings.domains_path, ".over-quota.msg")
                text = OVER_QUOTA + "\n" if data is None else data.decode("utf-8", "replace")
                self.quota_warning(maildir, quota)
                raise PermanentFailure(text + "\n")
            if percent >= self.settings.quota_warn_percent:
                self.quota_warning(maildir, quota)
        recipient = self.address if own_maildir else (md.maildir_to_email(maildir) or self.address)
        headers = self.return_path() + self.delivered_to(recipient)
        return mq.deliver_counted(maildir, headers, self.message.fd, quota)

    def quota_warning(self, maildir: str, quota: str = "") -> None:
        """Deliver ``.quotawarn.msg`` once a day (vpopmail's ``deliver_quota_warning``).

        Like any Maildir delivery it counts towards the quota (appended to ``maildirsize``).
        """
        from vpop import clock
        from vpop import maildir as md
        from vpop import quota as mq

        # vpopmail touches quotawarn on every warning condition, message file or not (at most once
        # a day): the day starts then, whether or not there is a text to send.
        if not mq.claim_warning(maildir):
            return
        text = read_message_file(self.domain.dir, self.settings.domains_path, ".quotawarn.msg")
        if text is None:
            return
        date = clock.rfc822_date(clock.now())
        recipient = md.maildir_to_email(maildir) or self.address
        headers = self.delivered_to(recipient) + f"Date: {date}\n".encode()
        empty = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)  # the whole text goes as "headers"
        try:
            mq.deliver_counted(maildir, headers + text, empty, quota)
        finally:
            os.close(empty)

    # ----------------------------------------------------------------- mbox
    def deliver_mbox(self, path: str) -> None:
        from vpop.mbox import deliver_mbox

        headers = self.return_path() + self.delivered_to(self.address)
        deliver_mbox(path, self.environ.get("SENDER", ""), headers, self.message.fd)

    # ----------------------------------------------------------------- programs
    def run_program(self, command: str, cwd: str) -> None:
        """``/bin/sh -c command`` with the message on stdin; exit codes as qmail-local maps them."""
        env = dict(self.environ)
        env["SHELL"] = "/bin/sh"
        try:  # as vpopmail's check_forward_deliver: a user's .qmail programs run in the user's dir
            os.chdir(cwd)
        except OSError as exc:
            raise TemporaryFailure(f"Unable to switch to {cwd}: {exc.strerror}. (#4.3.0)") from None
        self.message.rewind()
        try:
            pid = os.posix_spawn("/bin/sh", ["/bin/sh", "-c", command], env,
                                 file_actions=[(os.POSIX_SPAWN_DUP2, self.message.fd, 0)],
                                 setsigdef=_DEFAULT_SIGNALS)
        except OSError as exc:
            raise TemporaryFailure(f"Unable to fork: {exc.errno}.") from None
        status = _wait(pid)
        if os.WIFSIGNALED(status):
            raise TemporaryFailure("Aack, child crashed. (#4.3.0)")
        code = os.waitstatus_to_exitcode(status)
        if code == 0:
            return
        if code == 99:
            raise StopDelivery()
        if code in HARD_PROGRAM_EXITS:
            raise PermanentFailure("")
        raise TemporaryFailure("")

    # ----------------------------------------------------------------- forwards
    def forward(self, address: str) -> None:
        """Re-inject the message to ``address`` through qmail-inject."""
        if not address or address.startswith("-") or any(c in address for c in "\0\n\r"):
            raise PermanentFailure(f"refusing to forward to {address!r}")
        dtline = self.environ.get("DTLINE", "")
        if len(dtline) >= 15:
            header = self.delivered_to(f"{self.user}@{self.environ.get('HOST', self.domain.name)}")
        else:
            header = self.delivered_to(address)
        inject = self.settings.qmail_inject
        read_end, write_end = os.pipe()
        try:
            pid = os.posix_spawn(inject, [inject, "--", address], self.environ,
                                 file_actions=[(os.POSIX_SPAWN_DUP2, read_end, 0),
                                               (os.POSIX_SPAWN_CLOSE, write_end)],
                                 setsigdef=_DEFAULT_SIGNALS)
        except OSError:
            os.close(read_end)
            os.close(write_end)
            raise TemporaryFailure("Unable to launch qmail-inject.") from None
        os.close(read_end)
        failed = None
        try:
            write_all(write_end, self.return_path() + header)
            for chunk in read_chunks(self.message.fd, 0, 65536):
                write_all(write_end, chunk)
        except OSError as exc:
            failed = exc
        finally:
            os.close(write_end)
        status = _wait(pid)
        if failed is not None:
            raise TemporaryFailure(f"write to qmail-inject failed: {failed.errno}\n"
                                   "system error calling qmail-inject")
        if os.WIFSIGNALED(status):
            raise TemporaryFailure("system error calling qmail-inject")
        code = os.waitstatus_to_exitcode(status)
        if code == 0:
            return
        if code == 100:
            raise PermanentFailure("system error calling qmail-inject")
        raise TemporaryFailure("system error calling qmail-inject")


def _wait(pid: int) -> int:
    while True:
        try:
            return os.waitpid(pid, 0)[1]
        except InterruptedError:
            continue


def _unsafe_path(path: str) -> bool:
    return "\0" in path or "/../" in path + "/" or any(ord(c) < 32 for c in path)
