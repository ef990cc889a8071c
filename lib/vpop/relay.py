"""Roaming users (POP-before-SMTP), the CDB-store side: ``~vpopmail/etc/open-smtp`` and tcp.smtp.cdb.

After a successful POP/IMAP login vpopmail records the client IP in ``open-smtp``, one line
``IP:allow,RELAYCLIENT="",RBLSMTPD=""<TAB><unix time>`` per address, and rebuilds the tcpserver
rules cdb from ``tcp.smtp`` plus those lines cut at the TAB; ``clearopensmtp`` (cron) drops the old
lines and rebuilds (checkpassword.md §5).  The MySQL store keeps the IPs in its ``relay`` table
and only borrows :func:`rules_from_rows` from here.

IPv6: ucspi-tcp 0.88's ``tcprules`` splits a rule at its first colon, so it cannot express an IPv6
address and a C vpopmail rebuild fails as a whole once one is recorded.  Here IPv6 addresses are
recorded in ``open-smtp`` (and expire as usual) but left out of the rules, so everyone else's relay
keeps working.
"""

import os

TYPE_CHECKING = False  # typing costs import time; the names below are only for annotations
if TYPE_CHECKING:
    from collections.abc import Iterable

    from vpop.files import UserDir

RULE = 'allow,RELAYCLIENT="",RBLSMTPD=""'
"""The instruction vpopmail writes for an open relay (lower-case ``allow``, both variables empty)."""

_IP_CHARS = frozenset("0123456789abcdefABCDEF.:")
_SPACE = b" \t\n\v\f\r"  # C isspace() in the C locale, skipped by atol()


def check_ip(ip: str) -> str:
    """Return ``ip`` if it is a dotted-quad IPv4 or a textual IPv6 address, else raise ValueError.

    The address becomes the key of an ``allow`` rule, so anything more than digits, dots, hex and
    colons could add a second rule, an instruction, or a prefix or range (``10.``, ``1-9``) that
    opens the relay to a whole network.
    """
    if not isinstance(ip, str) or not ip or len(ip) > 45 or not set(ip) <= _IP_CHARS:
        raise ValueError(f"not an IP address: {ip!r}")
    if ":" in ip:
        import ipaddress

        try:
            ipaddress.IPv6Address(ip)
        except ValueError:
            raise ValueError(f"not an IP address: {ip!r}") from None
    else:
        parts = ip.split(".")
        if len(parts) != 4 or not all(p.isdigit() and len(p) <= 3 and int(p) <= 255 for p in parts):
            raise ValueError(f"not an IP address: {ip!r}")
    return ip


def rules_from_rows(ips: "Iterable[str]") -> list[str]:
    """The ``IP:allow,RELAYCLIENT="",RBLSMTPD=""`` lines for the MySQL store's ``relay`` rows.

    Every IP is checked (ValueError); IPv6 addresses are left out (see the module docstring).
    """
    return [f"{ip}:{RULE}" for ip in ips if ":" not in check_ip(ip)]


def _is_entry_for(line: bytes, ip: bytes) -> bool:
    """Whether an open-smtp line records ``ip``.

    For IPv4 this is vpopmail's test, the text before the first colon (a line without one, where
    its strtok() would keep the newline, is no entry); an IPv6 address has colons of its own, so
    there the rule must follow the address directly.
    """
    if b":" not in ip:
        address, colon, _ = line.partition(b":")
        return bool(colon) and address == ip
    return line.startswith(ip + b":allow") or line.startswith(ip + b":deny")


def _is_ipv6_rule(rule: bytes) -> bool:
    """Whether a rule (an open-smtp line cut at the TAB) is for an IPv6 address."""
    for word in (b":allow", b":deny"):
        at = rule.find(word)
        if at > 0:
            address = rule[:at]
            return b":" in address and all(chr(c) in _IP_CHARS for c in address)
    return False


def _atol(text: bytes) -> int:
    """C ``atol``: leading white space, an optional sign, then as many digits as there are."""
    text = text.lstrip(_SPACE)
    sign = -1 if text[:1] == b"-" else 1
    if text[:1] in (b"-", b"+"):
        text = text[1:]
    digits = len(text) - len(text.lstrip(b"0123456789"))
    return sign * int(text[:digits] or b"0")


def _etc(etc_dir: str) -> "UserDir":
    """``~vpopmail/etc``, as root may use it: the vpopmail uid can write there (see :class:`UserDir`)."""
    from vpop.files import UserDir

    return UserDir(etc_dir)


def _lines(data: bytes | None) -> list[bytes]:
    """The lines of open-smtp without their newlines; a missing file has none."""
    if not data:
        return []
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return lines


def _store(etc: "UserDir", lines: list[bytes], uid: int | None, gid: int | None) -> None:
    data = b"".join(line + b"\n" for line in lines)
    etc.replace("open-smtp", lambda fileobj: fileobj.write(data), uid, gid)


def _rebuild(etc: "UserDir", lines: list[bytes], tcp_file: str, uid: int | None, gid: int | None) -> None:
    """``<tcp_file>.cdb`` from ``tcp_file`` and each open-smtp line cut at the TAB."""
    from vpop import tcprules

    rules = [line.split(b"\t", 1)[0] for line in lines]
    extra = [rule.decode("utf-8", "surrogateescape") for rule in rules if not _is_ipv6_rule(rule)]
    same = os.path.dirname(tcp_file) == etc.path
    tcprules.build(tcp_file, extra, tcp_file + ".cdb", uid, gid, extra_source=etc.name("open-smtp"),
                   directory=etc if same else None)


def open_relay(
    etc_dir: str,
    ip: str,
    now: int,
    tcp_file: str,
    rebuild: bool = True,
    uid: int | None = None,
    gid: int | None = None,
) -> bool:
    """Record ``ip`` in ``<etc_dir>/open-smtp`` with time ``now``; return whether it was new.

    Other lines keep their order; this IP's old line, if any, goes and a fresh one is appended.
    Only a new IP rebuilds ``<tcp_file>.cdb`` (when ``rebuild`` is set), as in vpopmail: a known
    IP is already in the rules.  All of it happens under the lock, so two logins cannot write a
    cdb from an older open-smtp last.  ``uid``/``gid`` (when ``uid`` is given) own the new files
    and the lock (vpopmail leaves its lock root's 0600, which the tools running as vpopmail
    cannot take).  Every file is used as :class:`vpop.files.UserDir` allows: root runs this in a
    directory the vpopmail uid can write, so a link, FIFO or foreign file is refused
    (TemporaryFailure naming it) and ``etc_dir`` must not be a link.
    Raises ValueError for a bad IP (before touching any file), TemporaryFailure for file errors,
    ConfigError for a ``tcp_file`` line tcprules would reject.
    """
    key = check_ip(ip).encode("ascii")
    with _etc(etc_dir) as etc:
        fd = etc.lock("open-smtp.lock", uid, gid)
        try:
            lines = _lines(etc.read("open-smtp"))
            kept = [line for line in lines if not _is_entry_for(line, key)]
            new = len(kept) == len(lines)
            kept.append(b"%s:%s\t%d" % (key, RULE.encode("ascii"), now))
            _store(etc, kept, uid, gid)
            if new and rebuild:
                _rebuild(etc, kept, tcp_file, uid, gid)
        finally:
            os.close(fd)  # releases the lock
    return new


def clear_expired(
    etc_dir: str,
    now: int,
    minutes: int,
    tcp_file: str,
    rebuild: bool = True,
    uid: int | None = None,
    gid: int | None = None,
) -> int:
    """``clearopensmtp``: drop open-smtp entries older than ``minutes``, then rebuild; return how many went.

    An entry stays when ``timestamp + minutes*60 > now``.  As in clearopensmtp.c the timestamp is
    the second TAB-separated field read with ``atol``, and a line without one is dropped.  The
    cdb is rebuilt even when nothing expired, which also picks up edits to ``tcp_file``.
    """
    with _etc(etc_dir) as etc:
        fd = etc.lock("open-smtp.lock", uid, gid)
        try:
            lines = _lines(etc.read("open-smtp"))
            kept = []
            for line in lines:
                fields = [field for field in line.split(b"\t") if field]
                if len(fields) >= 2 and _atol(fields[1]) + minutes * 60 > now:
                    kept.append(line)
            _store(etc, kept, uid, gid)
            if rebuild:
                _rebuild(etc, kept, tcp_file, uid, gid)
        finally:
            os.close(fd)
    return len(lines) - len(kept)
