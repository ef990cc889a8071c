"""The one parser of syslog datagrams in the tests: ``<PRI>Mmm dd hh:mm:ss TAG[PID]: MESSAGE``.

This is RFC 3164's form as glibc's syslog(3) and :mod:`vpop.log` send it to ``/dev/log``.  The
timestamp is fixed-width: a one-digit day is padded with a space (``Dec  1``), so a record cannot
be taken apart by splitting on single spaces.  :func:`parse` checks every field and raises
``ValueError`` naming what is wrong, so a malformed line fails the test that reads it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

FACILITY_MAIL = 2
SEVERITY = {"err": 3, "warning": 4, "notice": 5}

_RECORD = re.compile(
    rb"<(?P<pri>[0-9]{1,3})>"
    rb"(?P<month>[A-Z][a-z]{2}) (?P<day>[ 1-3][0-9]) "
    rb"(?P<hour>[0-9]{2}):(?P<minute>[0-9]{2}):(?P<second>[0-9]{2}) "
    rb"(?P<tag>[^\[\]: ]+)(?:\[(?P<pid>[0-9]+)\])?: "
    rb"(?P<message>.*)",
    re.DOTALL,
)


@dataclass(frozen=True)
class SyslogRecord:
    facility: int
    severity: int
    month: int  # 1..12
    day: int  # 1..31
    hour: int
    minute: int
    second: int
    tag: str
    pid: int | None
    message: str

    @property
    def priority(self) -> int:
        return self.facility * 8 + self.severity


def parse(raw: bytes) -> SyslogRecord:
    """One datagram, field by field; ``ValueError`` when any field is malformed."""
    match = _RECORD.fullmatch(raw)
    if match is None:
        raise ValueError(f"not an RFC 3164 syslog record: {raw[:80]!r}")
    pri = int(match["pri"])
    if pri > 191 or (len(match["pri"]) > 1 and match["pri"].startswith(b"0")):
        raise ValueError(f"bad priority <{match['pri'].decode()}> in {raw[:80]!r}")
    month_name = match["month"].decode()
    if month_name not in MONTHS:
        raise ValueError(f"bad month {month_name!r} in {raw[:80]!r}")
    day_text = match["day"].decode()
    if day_text == " 0":
        raise ValueError(f"bad day {day_text!r} in {raw[:80]!r}")
    day = int(day_text)
    hour, minute, second = int(match["hour"]), int(match["minute"]), int(match["second"])
    if not (1 <= day <= 31 and hour < 24 and minute < 60 and second < 61):
        raise ValueError(f"bad timestamp in {raw[:80]!r}")
    return SyslogRecord(
        facility=pri // 8,
        severity=pri % 8,
        month=MONTHS.index(month_name) + 1,
        day=day,
        hour=hour,
        minute=minute,
        second=second,
        tag=match["tag"].decode("utf-8", "replace"),
        pid=int(match["pid"]) if match["pid"] is not None else None,
        message=match["message"].decode("utf-8", "replace"),
    )
