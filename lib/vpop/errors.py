"""One exception type per outcome; each program maps them to exit codes in one place.

``TemporaryFailure`` -> 111, ``PermanentFailure`` -> 100, ``AuthFailure`` -> 1,
``UsageError`` -> 2.  ``vpopmail_code`` carries the exit code the C vpopmail program
would have used for the same case, for sites that set ``exit_codes = vpopmail``.
"""


class VpopError(Exception):
    """Base class.  ``exit_code`` is the checkpassword/qmail convention."""

    exit_code = 111

    def __init__(self, message: str = "", vpopmail_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.vpopmail_code = self.exit_code if vpopmail_code is None else vpopmail_code


class TemporaryFailure(VpopError):
    """Try again later: the store, the filesystem or the settings failed (111)."""

    exit_code = 111


class PermanentFailure(VpopError):
    """A certain, final answer: bounce the message (100)."""

    exit_code = 100


class AuthFailure(VpopError):
    """The login is refused (1)."""

    exit_code = 1


class UsageError(VpopError):
    """The program was called wrongly (2)."""

    exit_code = 2


class ConfigError(TemporaryFailure):
    """A settings or credentials file is unreadable or does not parse (111)."""

    def __init__(self, path: str, line: int | None, reason: str) -> None:
        where = f"{path}:{line}" if line else path
        super().__init__(f"{where}: {reason}")
        self.path = path
        self.line = line


class DatabaseFailure(TemporaryFailure):
    """The database could not be reached or could not answer (111)."""


class CommitUnanswered(DatabaseFailure):
    """A ``COMMIT`` failed: the transaction may have happened or not (only the server knows)."""


def is_database_failure(exc: BaseException) -> bool:
    return isinstance(exc, DatabaseFailure)


def raised_at(exc: BaseException, program: str) -> str:
    """file:line of the innermost frame of our own code (``vpop`` or the ``program`` package), else
    the innermost frame: where an unforeseen exception came from, for a log line that must not
    quote its message (it could hold a secret)."""
    ours = last = "?"
    tb = exc.__traceback__
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename
        last = f"{name}:{tb.tb_lineno}"
        if "/vpop/" in name or f"/{program}/" in name:
            ours = last
        tb = tb.tb_next
    return ours if ours != "?" else last
