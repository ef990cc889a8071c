"""The wall clock every program reads: ``time.time()``, unless ``VPOP_CLOCK`` sets it.

Everything that writes or judges a time the mail system keeps (syslog stamps, Maildir names,
mbox ``From `` lines, ``Date:`` headers, ``lastauth``, relay entries, the once-a-day
``quotawarn``, the Maildir++ recount age) asks :func:`now`.  ``VPOP_CLOCK=<seconds since the
epoch>`` (digits, optionally a fraction) fixes that clock for one run, so tests set the date and
the hour instead of depending on the day they happen to run on.  It is as trusted as
``VPOP_CONFIG``: whoever sets a program's environment can already choose its settings.

Files whose times matter are stamped with this clock (``utime``), so a test can compare them
with the clock it set.  Waits and timeouts use ``time.monotonic()``, never this clock, and so
does the age of another program's dot-lock (a real elapsed time).
"""

import posix
import time

from vpop.errors import ConfigError

ENV = "VPOP_CLOCK"

_fixed_ns: int | None = None
_read = False
_UNSET = object()
_given = _UNSET  # a VPOP_CLOCK text set by fix() (vlookupd: the asking client's), else the environment's


def _parse(text: str) -> int:
    """``VPOP_CLOCK``'s digits (and up to 9 decimals) as whole nanoseconds, exactly."""
    whole, dot, fraction = text.partition(".")
    if not (whole.isascii() and whole.isdigit() and len(whole) <= 12) or (
            dot and not (fraction.isascii() and fraction.isdigit() and len(fraction) <= 9)):
        raise ConfigError(ENV, None, f"expected seconds since the epoch, not {text[:40]!r}")
    return int(whole) * 1_000_000_000 + int(fraction.ljust(9, "0") if dot else 0)


def _fixed() -> int | None:
    global _fixed_ns, _read
    if not _read:
        if _given is _UNSET:  # posix, not os: a delivery's quick path imports no os
            raw = posix.environ.get(ENV.encode())
            text = None if raw is None else raw.decode("utf-8", "surrogateescape")
        else:
            text = _given
        _fixed_ns = None if text is None or text == "" else _parse(text)
        _read = True
    return _fixed_ns


def fix(text: str | None) -> None:
    """From now on the clock is what ``VPOP_CLOCK=text`` makes it (None: the system clock).

    vlookupd answers each client by the client's clock; a bad text raises when the clock is
    read, as a bad ``VPOP_CLOCK`` does.
    """
    global _given, _read
    _given = text
    _read = False


def now() -> float:
    """Seconds since the epoch: ``VPOP_CLOCK`` when set, else the system clock.

    Raises :class:`~vpop.errors.ConfigError` (111) when ``VPOP_CLOCK`` is not a number.
    """
    fixed = _fixed()
    return time.time() if fixed is None else fixed / 1_000_000_000


def now_ns() -> int:
    """:func:`now` in nanoseconds (for names that carry microseconds)."""
    fixed = _fixed()
    return time.time_ns() if fixed is None else fixed


WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")  # struct_time.tm_wday: Monday == 0
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def syslog_stamp(t: float) -> str:
    """RFC 3164's ``Mmm dd hh:mm:ss`` in local time, a one-digit day padded with a space (as glibc)."""
    tm = time.localtime(t)
    return f"{MONTHS[tm.tm_mon - 1]} {tm.tm_mday:2d} {tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d}"


def ctime_gmt(t: float) -> str:
    """``Www Mmm dd hh:mm:ss yyyy`` in GMT, as qmail's myctime() writes mbox ``From `` lines."""
    tm = time.gmtime(t)
    return (f"{WEEKDAYS[tm.tm_wday]} {MONTHS[tm.tm_mon - 1]} {tm.tm_mday:02d} "
            f"{tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d} {tm.tm_year}")


def rfc822_date(t: float) -> str:
    """A ``Date:`` value in GMT, ``Www, dd Mmm yyyy hh:mm:ss +0000``, in English whatever the locale."""
    tm = time.gmtime(t)
    return (f"{WEEKDAYS[tm.tm_wday]}, {tm.tm_mday:02d} {MONTHS[tm.tm_mon - 1]} {tm.tm_year} "
            f"{tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d} +0000")


def stamp(fd_or_path: int | str) -> None:
    """Set a file's access and modification times to :func:`now`."""
    t = now_ns()
    posix.utime(fd_or_path, ns=(t, t))
