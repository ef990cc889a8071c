"""vpop.relay: open-smtp (CDB store roaming users) and the tcp.smtp.cdb it rebuilds."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import cdblib
import pytest
from test_tcprules import real_tcprules, records
from vpop.errors import ConfigError
from vpop.relay import RULE, check_ip, clear_expired, open_relay, rules_from_rows

TCP_SMTP = '127.:allow,RELAYCLIENT=""\n10.0.0.1-3:deny\n'
OPEN = b'allow,RELAYCLIENT="",RBLSMTPD=""'
NOW = 1_700_000_000


@pytest.fixture
def etc(tmp_path: Path) -> Path:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "tcp.smtp").write_text(TCP_SMTP)
    return etc


def relay(etc: Path, ip: str, now: int = NOW, **kwargs) -> bool:
    return open_relay(str(etc), ip, now, str(etc / "tcp.smtp"), **kwargs)


def store(etc: Path) -> bytes:
    return (etc / "open-smtp").read_bytes()


def expected_cdb(etc: Path, tmp_path: Path) -> bytes:
    """What vpopmail's pipe into the real tcprules gives: tcp.smtp, then open-smtp lines cut at the TAB."""
    text = (etc / "tcp.smtp").read_bytes()
    text += b"".join(line.split(b"\t")[0] + b"\n" for line in store(etc).splitlines())
    code, data = real_tcprules(text, tmp_path)
    assert code == 0 and data is not None
    return data


def test_new_ip_is_recorded_and_the_cdb_rebuilt(etc: Path, tmp_path: Path) -> None:
    assert relay(etc, "192.0.2.10") is True
    assert store(etc) == b'192.0.2.10:allow,RELAYCLIENT="",RBLSMTPD=""\t1700000000\n'
    cdb = (etc / "tcp.smtp.cdb").read_bytes()
    assert cdb == expected_cdb(etc, tmp_path)
    rules = cdblib.Reader(cdb)
    assert rules.get(b"192.0.2.10") == b"+RELAYCLIENT=\0+RBLSMTPD=\0"
    assert rules.get(b"127.") == b"+RELAYCLIENT=\0" and rules.get(b"10.0.0.2") == b"D\0"
    names = sorted(p.name for p in etc.iterdir())
    assert names == ["open-smtp", "open-smtp.lock", "tcp.smtp", "tcp.smtp.cdb"]
    assert (etc / "open-smtp").stat().st_mode & 0o777 == 0o644
    assert (etc / "tcp.smtp.cdb").stat().st_mode & 0o777 == 0o644


def test_known_ip_moves_to_the_end_without_rebuild(etc: Path, tmp_path: Path) -> None:
    for n, ip in enumerate(["192.0.2.1", "192.0.2.10", "192.0.2.100"]):
        assert relay(etc, ip, NOW + n) is True
    before = (etc / "tcp.smtp.cdb").read_bytes()
    (etc / "tcp.smtp").write_text("127.:deny\n")  # would change the cdb if it were rebuilt
    assert relay(etc, "192.0.2.10", NOW + 60) is False
    assert store(etc).splitlines() == [
        b"192.0.2.1:" + OPEN + b"\t1700000000",
        b"192.0.2.100:" + OPEN + b"\t1700000002",
        b"192.0.2.10:" + OPEN + b"\t1700000060",
    ]
    assert (etc / "tcp.smtp.cdb").read_bytes() == before
    assert relay(etc, "192.0.2.11", NOW + 61) is True  # a new one rebuilds, with the new tcp.smtp
    assert (etc / "tcp.smtp.cdb").read_bytes() == expected_cdb(etc, tmp_path)
    assert cdblib.Reader((etc / "tcp.smtp.cdb").read_bytes()).get(b"127.") == b"D\0"


def test_other_lines_are_copied_as_they_are(etc: Path) -> None:
    (etc / "open-smtp").write_bytes(
        b'1.2.3.40:allow,RELAYCLIENT="",RBLSMTPD=""\t5\n'
        b"1.2.3.4:allow\t6\n"
        b"=host.example:deny\t7\n"
        b"1.2.3.4\n"  # no colon: not this IP's entry
        b'1.2.3.41:allow,RELAYCLIENT=""\t8'  # no final newline
    )
    assert relay(etc, "1.2.3.4", 9) is False
    assert store(etc) == (
        b'1.2.3.40:allow,RELAYCLIENT="",RBLSMTPD=""\t5\n'
        b"=host.example:deny\t7\n"
        b"1.2.3.4\n"
        b'1.2.3.41:allow,RELAYCLIENT=""\t8\n'
        b"1.2.3.4:" + OPEN + b"\t9\n"
    )


def test_no_rebuild_when_asked_not_to(etc: Path) -> None:
    assert relay(etc, "192.0.2.10", rebuild=False) is True
    assert not (etc / "tcp.smtp.cdb").exists()
    assert store(etc).startswith(b"192.0.2.10:")


def test_missing_tcp_file_means_only_the_relay_rules(etc: Path) -> None:
    (etc / "tcp.smtp").unlink()
    relay(etc, "192.0.2.10")
    assert records((etc / "tcp.smtp.cdb").read_bytes()) == [(b"192.0.2.10", b"+RELAYCLIENT=\0+RBLSMTPD=\0")]


def test_bad_tcp_file_is_a_config_error(etc: Path) -> None:
    (etc / "tcp.smtp").write_text("127.:allow\n127.0.0.1:allow,RELAYCLIENT\n")
    with pytest.raises(ConfigError) as caught:
        relay(etc, "192.0.2.10")
    assert (caught.value.path, caught.value.line) == (str(etc / "tcp.smtp"), 2)
    assert not (etc / "tcp.smtp.cdb").exists()
    assert not [p for p in etc.iterdir() if ".tmp." in p.name]


def test_owner_is_set_when_uid_given(etc: Path) -> None:
    uid, gid = (12345, 23456) if os.geteuid() == 0 else (os.getuid(), os.getgid())
    relay(etc, "192.0.2.10", uid=uid, gid=gid)
    for name in ("open-smtp", "tcp.smtp.cdb", "open-smtp.lock"):  # the lock too: vpopmail's tools take it
        info = (etc / name).stat()
        assert (info.st_uid, info.st_gid) == (uid, gid)


@pytest.mark.parametrize(
    "ip",
    ["", "1.2.3.", "10.", "1.2.3.4-9", "1.2.3.4:allow", "1.2.3.4\n5.6.7.8", "1.2.3.4\t", " 1.2.3.4",
     "=host", "@x", "1.2.3", "1.2.3.4.5", "1.2.3.256", "1.2.3.1234", "abc", "a.b.c.d", "1.2.3.४",
     "fe80::1%eth0", ":::", "1::2::3", "2001:db8::g", "1" * 46, None],
)
def test_bad_ip_is_refused_before_any_file(etc: Path, ip) -> None:
    with pytest.raises(ValueError):
        relay(etc, ip)
    with pytest.raises(ValueError):
        rules_from_rows(["192.0.2.1", ip])
    assert sorted(p.name for p in etc.iterdir()) == ["tcp.smtp"]


@pytest.mark.parametrize("ip", ["0.0.0.0", "192.0.2.10", "255.255.255.255", "::1", "2001:DB8::1",
                                "::ffff:192.0.2.1"])
def test_good_ip(ip: str) -> None:
    assert check_ip(ip) == ip


def test_ipv6_is_recorded_but_kept_out_of_the_rules(etc: Path, tmp_path: Path) -> None:
    """tcprules 0.88 splits at the first colon, so it cannot take an IPv6 rule; the others must still work."""
    assert relay(etc, "2001:db8::1", NOW) is True
    assert relay(etc, "192.0.2.10", NOW + 1) is True
    assert relay(etc, "2001:db8::1", NOW + 2) is False
    assert relay(etc, "2001:db8::", NOW + 3) is True  # a prefix of the other address is another address
    assert store(etc).splitlines() == [
        b"192.0.2.10:" + OPEN + b"\t1700000001",
        b"2001:db8::1:" + OPEN + b"\t1700000002",
        b"2001:db8:::" + OPEN + b"\t1700000003",
    ]
    keys = [k for k, _ in records((etc / "tcp.smtp.cdb").read_bytes())]
    assert keys == [b"127.", b"10.0.0.1", b"10.0.0.2", b"10.0.0.3", b"192.0.2.10"]


def test_rules_from_rows() -> None:
    assert rules_from_rows(["192.0.2.1", "2001:db8::1", "198.51.100.7"]) == [
        f"192.0.2.1:{RULE}",
        f"198.51.100.7:{RULE}",
    ]
    assert RULE == 'allow,RELAYCLIENT="",RBLSMTPD=""'
    assert rules_from_rows([]) == []


def test_clear_expired(etc: Path, tmp_path: Path) -> None:
    minutes = 180
    (etc / "open-smtp").write_bytes(
        b"192.0.2.1:" + OPEN + b"\t%d\n" % (NOW - minutes * 60)  # exactly expired
        + b"192.0.2.2:" + OPEN + b"\t%d\n" % (NOW - minutes * 60 + 1)  # one second left
        + b"192.0.2.3:" + OPEN + b"\t\t %dxyz\n" % NOW  # strtok skips the empty field, atol the blank
        + b"192.0.2.4:" + OPEN + b"\n"  # no timestamp
        + b"192.0.2.5:" + OPEN + b"\tsoon\n"  # atol gives 0
        + b"\n"
        + b"192.0.2.6:" + OPEN + b"\t%d" % (NOW + 5)
    )
    assert clear_expired(str(etc), NOW, minutes, str(etc / "tcp.smtp")) == 4
    assert store(etc).splitlines() == [
        b"192.0.2.2:" + OPEN + b"\t%d" % (NOW - minutes * 60 + 1),
        b"192.0.2.3:" + OPEN + b"\t\t %dxyz" % NOW,
        b"192.0.2.6:" + OPEN + b"\t%d" % (NOW + 5),
    ]
    cdb = (etc / "tcp.smtp.cdb").read_bytes()
    assert cdb == expected_cdb(etc, tmp_path)
    assert [k for k, _ in records(cdb)][-3:] == [b"192.0.2.2", b"192.0.2.3", b"192.0.2.6"]
    # nothing left to expire still rebuilds (picks up tcp.smtp edits); an absent open-smtp is empty
    (etc / "tcp.smtp").write_text("")
    assert clear_expired(str(etc), NOW + minutes * 60 + 10, minutes, str(etc / "tcp.smtp")) == 3
    assert store(etc) == b"" and records((etc / "tcp.smtp.cdb").read_bytes()) == []
    (etc / "open-smtp").unlink()
    assert clear_expired(str(etc), NOW, minutes, str(etc / "tcp.smtp"), rebuild=False) == 0
    assert not [p for p in etc.iterdir() if ".tmp." in p.name]


def _open_many(etc: str, first: int) -> None:
    for n in range(first, first + 5):
        open_relay(etc, f"192.0.2.{n}", NOW + n, os.path.join(etc, "tcp.smtp"))


def test_concurrent_logins_lose_nothing(etc: Path) -> None:
    """The lock makes read-modify-write and rebuild one step, so the last cdb written has every IP."""
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_open_many, args=(str(etc), first)) for first in range(0, 30, 5)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    ips = sorted(line.split(b":")[0] for line in store(etc).splitlines())
    assert ips == sorted(b"192.0.2.%d" % n for n in range(30))
    keys = {k for k, _ in records((etc / "tcp.smtp.cdb").read_bytes())}
    assert set(ips) <= keys
    assert not [p for p in etc.iterdir() if ".tmp." in p.name]
