"""The tests' syslog parser on every day and month, and the programs' settable clock (VPOP_CLOCK).

The parser (``syslogrecord.parse``) is what every test that reads a syslog line goes through; a
one-digit day is space-padded (``Dec  1``), which once broke a test on the 1st to the 9th of each
month.  The clock tests run the installed programs with ``VPOP_CLOCK`` and ``TZ`` set, so what
they check does not depend on the day, the hour or the zone of the machine running them.
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import epoch, fd3_payload
from syslogrecord import FACILITY_MAIL, MONTHS, SEVERITY, parse
from tree import REMOTE_IP, Tree
from vpop import clock

OK_LINE = f"vchkpw-pop3: (PLAIN) login success bob@example.com:{REMOTE_IP}"


# ------------------------------------------------------------------------------------------------
# The parser


@pytest.mark.parametrize("month", range(1, 13))
def test_every_day_of_every_month(month: int) -> None:
    for day in range(1, 32):
        raw = f"<21>{MONTHS[month - 1]} {day:>2} 21:30:29 vpopmail[7311]: vchkpw-pop3: a b  c".encode()
        record = parse(raw)
        when = (record.month, record.day, record.hour, record.minute, record.second)
        assert when == (month, day, 21, 30, 29)
        assert (record.facility, record.severity, record.priority) == (FACILITY_MAIL, SEVERITY["notice"], 21)
        assert (record.tag, record.pid, record.message) == ("vpopmail", 7311, "vchkpw-pop3: a b  c")


def test_the_record_that_broke_on_the_first() -> None:
    record = parse(b"<21>Dec  1 21:30:29 vpopmail[7311]: vchkpw-pop3: (PLAIN) login success x@y:1.2.3.4")
    assert (record.month, record.day, record.tag) == (12, 1, "vpopmail")
    assert record.message == "vchkpw-pop3: (PLAIN) login success x@y:1.2.3.4"


def test_the_stamps_vpop_log_writes_for_every_date_of_a_leap_year() -> None:
    """vpop.clock.syslog_stamp (what vpop.log sends) parses back to the local date it was given."""
    days = 0
    for month in range(1, 13):
        for day in range(1, calendar.monthrange(2028, month)[1] + 1):
            for hour, minute, second in ((9, 5, 7), (23, 59, 59)):
                t = time.mktime((2028, month, day, hour, minute, second, 0, 0, -1))
                local = time.localtime(t)
                record = parse(f"<21>{clock.syslog_stamp(t)} vpopmail[1]: x".encode())
                assert (record.month, record.day, record.hour, record.minute, record.second) == (
                    local.tm_mon, local.tm_mday, local.tm_hour, local.tm_min, local.tm_sec)
            days += 1
    assert days == 366


@pytest.mark.parametrize("raw", [
    b"<21>Dec 01 21:30:29 vpopmail[7311]: zero-padded day",
    b"<21>Dec 1 21:30:29 vpopmail[7311]: day not padded",
    b"<21>Dec  0 21:30:29 vpopmail[7311]: day zero",
    b"<21>Dec 32 21:30:29 vpopmail[7311]: day 32",
    b"<21>Dez  1 21:30:29 vpopmail[7311]: German month",
    b"<21>Dec  1 24:00:00 vpopmail[7311]: hour 24",
    b"<192>Dec  1 21:30:29 vpopmail[7311]: priority too big",
    b"<021>Dec  1 21:30:29 vpopmail[7311]: leading zero",
    b"Dec  1 21:30:29 vpopmail[7311]: no priority",
    b"<21>Dec  1 21:30:29 vpopmail[7311] no colon",
    b"<21>2026-12-01T21:30:29Z vpopmail[7311]: RFC 5424 stamp",
])
def test_malformed_records_are_refused(raw: bytes) -> None:
    with pytest.raises(ValueError):
        parse(raw)


# ------------------------------------------------------------------------------------------------
# The programs' clock


@pytest.fixture
def tree() -> Iterator[Tree]:
    with Tree(logging="y") as t:
        t.add_domain("example.com")
        t.bob = t.add_user("example.com", "bob", "secret")
        yield t


def pop_login(tree: Tree, zone: str) -> tuple[int, object]:
    done, record = tree.login(fd3_payload("bob@example.com", "secret", "<1.2@pop.example.com>"), TZ=zone)
    assert done.returncode == 0, done.stderr
    (line,) = tree.syslog_parsed()
    assert line.message == OK_LINE and line.tag == "vpopmail"
    return done.returncode, line


@pytest.mark.parametrize(("utc", "zone", "local"), [
    ("2026-12-01 09:05:07", "UTC", (12, 1, 9, 5, 7)),
    ("2026-12-31 23:59:59", "UTC", (12, 31, 23, 59, 59)),
    ("2026-11-30 10:00:00", "Pacific/Kiritimati", (12, 1, 0, 0, 0)),  # UTC+14: already the 1st
    ("2027-01-01 02:00:00", "America/St_Johns", (12, 31, 22, 30, 0)),  # UTC-3:30: still the old year
    ("2027-02-28 12:00:00", "UTC", (2, 28, 12, 0, 0)),
    ("2028-02-29 12:00:00", "UTC", (2, 29, 12, 0, 0)),
])
def test_vchkpw_stamps_syslog_with_the_set_clock_in_local_time(tree: Tree, utc: str, zone: str,
                                                               local: tuple[int, ...]) -> None:
    tree.clock = epoch(utc)
    _, line = pop_login(tree, zone)
    assert (line.month, line.day, line.hour, line.minute, line.second) == local


def test_a_fraction_of_a_second_reaches_maildir_names(tree: Tree) -> None:
    tree.clock = epoch("2027-01-05 12:00:00") + 0.25
    done = tree.deliver("bob@example.com", b"Subject: t\n\nx\n")
    assert done.returncode == 0, done.stderr
    (name,) = [p.name for p in Path(tree.bob.dir, "Maildir", "new").iterdir()]
    assert name.startswith(f"{int(tree.clock)}.M250000P")


@pytest.mark.parametrize("value", ["yesterday", "-5", "1e9", "12.", "²", "1" * 13, " 1"])
def test_a_bad_clock_is_a_clear_temporary_failure(tree: Tree, value: str) -> None:
    done = tree.deliver("bob@example.com", b"Subject: t\n\nx\n", env={"VPOP_CLOCK": value})
    assert done.returncode == 111
    assert b"VPOP_CLOCK: expected seconds since the epoch" in done.stdout + done.stderr
    assert list(Path(tree.bob.dir, "Maildir", "new").iterdir()) == []
    assert list(Path(tree.bob.dir, "Maildir", "tmp").iterdir()) == []
