"""What every admin command shares: vpopmail's way of failing, and one place that maps outcomes to exits.

vpopmail's tools print ``Error: <text>`` on **stdout** and exit with ``256 + VA_*`` (255 for most,
245 for "domain does not exist", 243 for "domain already exists"...; see
``shared/reference/admin-vpopmaild-dovecot24.md`` §1).  Where vpopmail exits 0 on a usage error,
ours exits 2 (said in each command's ``--help``).  A store or file that cannot be used
(:class:`~vpop.errors.TemporaryFailure`) is ``Error: <text>`` and 111, and nothing is changed.
"""

import sys
from collections.abc import Callable, Sequence

from vpop.errors import TemporaryFailure

USAGE_EXIT = 2  # vpopmail: 0


class AdminError(Exception):
    """A refusal with vpopmail's text and exit code (the text is printed as is)."""

    def __init__(self, message: str, code: int = 255) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class Usage(AdminError):
    """A bad command line: the usage text, exit 2."""

    def __init__(self, message: str) -> None:
        super().__init__(message, USAGE_EXIT)


def run(command: Callable[[Sequence[str]], int], argv: Sequence[str] | None = None) -> int:
    """Run ``command(argv[1:])``; the only place where an admin command's outcomes become exit codes."""
    args = list(sys.argv[1:] if argv is None else argv[1:])
    try:
        return command(args)
    except AdminError as exc:
        print(exc.message, flush=True)
        return exc.code
    except TemporaryFailure as exc:
        print(f"Error: {exc.message}", flush=True)
        return 111
    except KeyboardInterrupt:
        return 130
