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

TYPE_CHECKING = False
if TYPE_CHECKING:
    from vpop.config import Settings
    from vpop.stores.base import Store

USAGE_EXIT = 2  # vpopmail: 0
MAX_PW_CLEAR_PASSWD = 128
RANDOM_LENGTH = 12  # vpopmail 5.6 (5.4: 8)
RANDOM_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


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


def getopt(program: str, args: Sequence[str], spec: str) -> tuple[list[tuple[str, str | None]], list[str]]:
    """glibc ``getopt(argc, argv, spec)`` as the C tools call it: ``x:`` takes an argument (attached
    or the next word), ``x::`` an optional one (attached only); options and operands may be mixed
    (glibc permutes), ``--`` ends the options.  An unknown option or a missing argument prints
    glibc's message on stderr and raises ``Usage("")`` (the caller adds its usage text).
    Returns ``([(letter, argument or None), ...], operands)``.
    """
    takes: dict[str, int] = {}
    i = 0
    while i < len(spec):
        letter = spec[i]
        count = 0
        while i + 1 + count < len(spec) and spec[i + 1 + count] == ":":
            count += 1
        takes[letter] = min(count, 2)
        i += 1 + count
    options: list[tuple[str, str | None]] = []
    operands: list[str] = []
    words = list(args)
    while words:
        word = words.pop(0)
        if word == "--":
            operands.extend(words)
            break
        if not word.startswith("-") or word == "-":
            operands.append(word)
            continue
        position = 1
        while position < len(word):
            letter = word[position]
            position += 1
            if letter not in takes or letter == ":":
                print(f"{program}: invalid option -- '{letter}'", file=sys.stderr, flush=True)
                raise Usage("")
            if takes[letter] == 0:
                options.append((letter, None))
                continue
            rest = word[position:]
            if rest:
                options.append((letter, rest))
            elif takes[letter] == 2:
                options.append((letter, None))
            elif words:
                options.append((letter, words.pop(0)))
            else:
                print(f"{program}: option requires an argument -- '{letter}'", file=sys.stderr, flush=True)
                raise Usage("")
            break
    return options, operands


Options = tuple[list[tuple[str, str | None]], list[str]]


def options(program: str, args: Sequence[str], spec: str, usage: str, help_text: str | None = None, *,
            help_anywhere: bool = False, version: bool = True) -> Options:
    """A command line through :func:`getopt`: ``--help`` (before ``--``; with ``help_anywhere``
    anywhere) prints ``help_text`` (the usage and how the tool differs from vpopmail's) and exits 0,
    a bad option prints the usage and exits 2.  With ``version``, each ``-v`` prints
    :func:`version_line` (as the C tools do while they read their options) and is left out."""
    words = list(args)
    head = words[:words.index("--")] if "--" in words and not help_anywhere else words
    if "--help" in head:
        raise AdminError(usage if help_text is None else help_text, 0)
    try:
        opts, operands = getopt(program, words, spec)
    except Usage:
        raise Usage(usage) from None
    if version and "v" in spec:
        for letter, _ in opts:
            if letter == "v":
                print(version_line(), flush=True)
        opts = [(letter, value) for letter, value in opts if letter != "v"]
    return opts, operands


def with_differences(usage: str, program: str, differences: str) -> str:
    """``--help`` text: the usage, an empty line, then ``Differences from vpopmail's <program>:``."""
    return usage + "\n\nDifferences from vpopmail's " + program + ":\n" + differences


def random_length(argument: str | None) -> int:
    """``-r[len]``: vpopmail's ``atoi`` of the length (12 without one); more than 128 is refused."""
    from vpop.numbers import atoi

    length = RANDOM_LENGTH if argument is None else atoi(argument)
    if length > MAX_PW_CLEAR_PASSWD:
        raise AdminError(f"Error: password too long (max={MAX_PW_CLEAR_PASSWD})", 256 - 27)
    return max(length, 0)


def random_password(length: int = RANDOM_LENGTH) -> str:
    """``-r[len]``: letters and digits from :mod:`secrets` (vpopmail: ``rand()`` seeded with the time)."""
    import secrets

    return "".join(secrets.choice(RANDOM_ALPHABET) for _ in range(length))


PROMPT_TRIES = 3


def password_operand(operands: Sequence[str], random: bool, password: str) -> str:
    """The password after the address when there is one (refused with ``-r``), else ``password``."""
    if len(operands) < 2:
        return password
    if random:
        raise AdminError("Error: don't use -r option when giving password on command line")
    return operands[1]


def ask_password(address: str, usage: str = "") -> str:
    """:func:`prompt_password`, or ``Error: No password entered`` (and the usage, if given)."""
    password = prompt_password(address)
    if not password:
        raise AdminError("Error: No password entered" + ("\n" + usage if usage else ""))
    return password


def prompt_password(address: str) -> str:
    """vpopmail's ``vgetpasswd``: ``Please enter password for <address>: ``, then ``enter password
    again: ``, on the terminal, without echo; ``Passwords do not match, try again`` until both
    agree.  Unlike vpopmail, which asked for ever: after 3 mismatches ``Error: Passwords do not
    match`` (255).  The end of the input (^D, no terminal left) is no password: ``""``, for the
    caller's ``Error: No password entered``."""
    import getpass

    for _ in range(PROMPT_TRIES):
        try:
            first = getpass.getpass(f"Please enter password for {address}: ")
            second = getpass.getpass("enter password again: ")
        except EOFError:
            return ""
        if first == second:
            return first
        print("Passwords do not match, try again", flush=True)
    raise AdminError("Error: Passwords do not match")


def load() -> "Settings":
    """The settings file (``VPOP_CONFIG``), as every admin command reads it."""
    from vpop.config import load_settings

    return load_settings()


def open_store(settings: "Settings") -> "Store":
    """The store the settings name, every read on the primary (the admin commands read what they
    are about to change; see vpop.stores.open_store)."""
    from vpop.stores import open_store as open_configured

    return open_configured(settings, primary=True)


def print_lines(lines: Sequence[str]) -> None:
    """A command's output lines on stdout, one a line (no lines: nothing, not even a newline)."""
    if lines:
        print("\n".join(lines), flush=True)


def version_line() -> str:
    """What ``-v`` prints (``version: <VERSION>``): the version of this distribution."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"version: {version('vpop')}"
    except PackageNotFoundError:
        return "version: unknown"
