"""vpop.tcprules against the real ucspi-tcp 0.88 ``tcprules``: same records, same bytes, same refusals."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import cdblib
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from vpop.errors import ConfigError, TemporaryFailure
from vpop.tcprules import build, parse_rules, write_rules_cdb

TCPRULES = shutil.which("tcprules", path=os.environ.get("PATH", "") + os.pathsep + "/usr/bin")


def real_tcprules(rules: bytes, directory: Path) -> tuple[int, bytes | None]:
    """Run tcprules on ``rules``; (exit code, cdb bytes or None).  Leaves nothing behind."""
    if TCPRULES is None:
        pytest.fail("tcprules not found; scripts/test.sh installs ucspi-tcp", pytrace=False)
    cdb, tmp = directory / "real.cdb", directory / "real.tmp"
    done = subprocess.run([TCPRULES, str(cdb), str(tmp)], input=rules, capture_output=True, timeout=30)
    data = cdb.read_bytes() if done.returncode == 0 else None
    for path in (cdb, tmp):
        path.unlink(missing_ok=True)
    assert done.returncode in (0, 100), done.stderr
    return done.returncode, data


def records(data: bytes) -> list[tuple[bytes, bytes]]:
    """All records of a cdb in file order, duplicates included."""
    return list(cdblib.Reader(data).iteritems())


def ours(text: str, directory: Path) -> bytes:
    out = directory / "ours.cdb"
    write_rules_cdb(parse_rules(text, "rules"), str(out))
    data = out.read_bytes()
    out.unlink()
    return data


RICH = (
    "# tcp.smtp, every form tcprules knows\n"
    '127.:allow,RELAYCLIENT=""\n'
    "10.1.2.3:deny\n"
    '192.168.1.4-9:allow,RELAYCLIENT="",RBLSMTPD=""\n'
    "172.16-18.:allow,NOTE='single \"quoted\"'\n"
    "=mail.example.com:allow,X=/slash quoted/,Y=,comma,\n"
    "=Mixed.Case.Host:deny\n"
    "=:allow,TCPREMOTEHOST='unknown'\n"
    "@ident:allow\n"
    "=host-1.example:allow\n"
    "1.2.3.4-6.x:allow\n"
    "-2:allow\n"
    "10.0.0.250-300:allow\n"
    "10.0.0.9-4:allow\n"
    "10.1.-1.:deny\n"
    "a=b-3:allow\n"
    "1.2.3.18446744073709551617-2:allow\n"
    "junk line without a colon\n"
    "\n"
    "   \n"
    "\t#not a comment:allow\n"
    " padded :allow\n"
    '10.9.9.9:allow,A="x:y",B=\'\',EMPTY="" \t \n'
    "10.9.9.9:deny\n"
    '10.9.9.9:allow,SECOND="dup"\n'
    '10.9.9.10:deny,MSG="go away"\n'
    'é:allow,Z="ü",NUL="a\0b"\n'
    ':allow,DEFAULT="yes"'  # no final newline
)


def test_rich_rules_match_tcprules(tmp_path: Path) -> None:
    code, real = real_tcprules(RICH.encode(), tmp_path)
    assert code == 0 and real is not None
    pairs = parse_rules(RICH, "tcp.smtp")
    assert pairs == records(real)
    assert ours(RICH, tmp_path) == real
    # spot checks of what tcpserver will see
    found = dict(reversed(pairs))  # first record wins, as in a cdb lookup
    assert found[b"127."] == b"+RELAYCLIENT=\0"
    assert found[b"10.1.2.3"] == b"D\0"
    assert found[b"10.9.9.9"] == b'+A=x:y\0+B=\0+EMPTY=\0'
    assert found[b"172.17."] == b'+NOTE=single "quoted"\0'
    assert found[b"=mail.example.com"] == b"+X=slash quoted\0+Y=comma\0"
    assert found[b"=Mixed.Case.Host"] == b"D\0"
    assert found[b""] == b"+DEFAULT=yes\0"
    assert [k for k, _ in pairs if k.startswith(b"192.168.1.")] == [b"192.168.1.%d" % n for n in range(4, 10)]
    assert [k for k, _ in pairs if k.startswith(b"10.0.0.")] == [b"10.0.0.%d" % n for n in range(250, 256)]
    assert b"10.0.0.9" not in found and b"10.0.0.4" not in found


def test_empty_rules_match_tcprules(tmp_path: Path) -> None:
    code, real = real_tcprules(b"", tmp_path)
    assert code == 0 and real is not None and len(real) == 2048
    assert parse_rules("", "x") == []
    assert ours("", tmp_path) == real


def test_key_with_hash_zero_is_kept(tmp_path: Path) -> None:
    """djb_hash(b"=ctejawes") == 0; pure-cdb's own finalize would let the next key in its slot replace it."""
    assert cdblib.djb_hash(b"=ctejawes") & 0xFFFFFFFF == 0
    assert cdblib.djb_hash(b"=aask") % 1024 == 0  # same table, same first slot
    text = "=ctejawes:allow\n=aask:deny\n"
    code, real = real_tcprules(text.encode(), tmp_path)
    assert code == 0 and real is not None
    mine = ours(text, tmp_path)
    assert mine == real
    assert cdblib.Reader(mine).get(b"=ctejawes") == b""


ACCEPTED = [
    "1.2.3.4:allow",
    "1.2.3.-:allow",
    "-:allow",
    ".-2:allow",
    "1-3:allow",
    "1.2.3.04-06:allow",
    "1.2.3.1-2.4-5:allow",
    "1.2.3.4-:allow",
    "1.2.3.1-99999999999999999999:allow",
    "1.2.3.18446744073709551616-2:allow",
    "1.2.3.1-18446744073709551618:allow",
    "1.2.3.4-6=:allow",
    "a@b-3:allow",
    "=a-3:allow",
    "1.2.3.4:allow,A==x=",
    '1.2.3.4:allow,="x"',
    '1.2.3.4:allow,A,B="x"',
    '1.2.3.4:allow,A="a\tb"',
    "a#b:allow",
    "1.2.3.4:allow \t ",
    "#1.2.3.4:junk",
    "no colon, ignored",
]

REJECTED = [
    "1.2.3.4:allowx",
    "1.2.3.4:ALLOW",
    "1.2.3.4: allow",
    "1.2.3.4:denyall",
    "1.2.3.4:",
    "1.2.3.4:foo",
    "a:b:allow",
    "::1:allow",
    "1.2.3.4:allow\r",
    "1.2.3.4:allow,A",
    "1.2.3.4:allow,A=value",
    "1.2.3.4:allow,A=",
    '1.2.3.4:allow,A="x',
    '1.2.3.4:allow,A="x"y"',
    '1.2.3.4:allow,A="x",',
    '1.2.3.4:allow ,A=""',
    '1.2.3.4:allow,A="" x',
    "1.2.3.4:allow,B=\tx\t",
    "1.2.3.4:allow\0",
    "1.2.3.4-6x:allow",
    "1.2.3.x-6:allow",
    "1.2.3.+4-6:allow",
    "1.2.3.4--6:allow",
    "1.2.3.4-5-6:allow",
    "ab4-6:allow",
    "1.2.3.4- 6:allow",
]


@pytest.mark.parametrize("line", ACCEPTED)
def test_accepted_line_matches_tcprules(line: str, tmp_path: Path) -> None:
    code, real = real_tcprules(line.encode() + b"\n", tmp_path)
    assert code == 0 and real is not None
    assert parse_rules(line + "\n", "r") == records(real)
    assert ours(line + "\n", tmp_path) == real


@pytest.mark.parametrize("line", REJECTED)
def test_rejected_line_is_a_config_error(line: str, tmp_path: Path) -> None:
    text = f"# two good lines first\n127.:allow\n{line}\n10.:allow\n"
    code, _ = real_tcprules(text.encode(), tmp_path)
    assert code == 100
    with pytest.raises(ConfigError) as caught:
        parse_rules(text, "/etc/tcp.smtp")
    assert caught.value.path == "/etc/tcp.smtp" and caught.value.line == 3
    # the line itself is never quoted: tcp.smtp may be a link to a secret, and this message is logged
    assert str(caught.value) == "/etc/tcp.smtp:3: tcprules cannot parse this line"
    assert caught.value.exit_code == 111


_TOKENS = st.sampled_from(
    ["1", "2", "9", "255", "300", "1.2.3.4", "10.", ".", "-", ":", "=", "@", "#", ",", "A", "x",
     '"', "'", " ", "\t", "\r", "allow", "deny", "18446744073709551617"]
)
_ADDRESS = st.lists(st.sampled_from(["1", "2", "255", "300", ".", "-", "=", "@", "x", "#", " "]),
                    max_size=6).map("".join)
_ENV = st.builds(
    lambda name, quote, value, close: f",{name}={quote}{value}{quote if close is None else close}",
    st.sampled_from(["A", "RELAYCLIENT", "", "A,B", "=x"]),
    st.sampled_from(['"', "'", "/", "x", ""]),
    st.sampled_from(["", "v", "a b", "x", "'", '"', ":", "\t"]),
    st.one_of(st.none(), st.none(), st.sampled_from(["", '"', "x"])),
)
_RULE = st.builds(
    lambda address, verb, env, tail: f"{address}:{verb}{''.join(env)}{tail}",
    _ADDRESS,
    st.sampled_from(["allow", "allow", "deny", "allw", ""]),
    st.lists(_ENV, max_size=3),
    st.sampled_from(["", "", "", " \t", "x"]),
)
_LINE = st.one_of(_RULE, _RULE, _RULE, st.lists(_TOKENS, max_size=8).map("".join))

@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(_LINE, min_size=1, max_size=4))
def test_random_rules_agree_with_tcprules(lines: list[str], tmp_path: Path) -> None:
    text = "\n".join(lines) + "\n"
    code, real = real_tcprules(text.encode(), tmp_path)
    if code == 0:
        assert real is not None
        assert parse_rules(text, "r") == records(real)
        assert ours(text, tmp_path) == real
    else:
        with pytest.raises(ConfigError):
            parse_rules(text, "r")


# --------------------------------------------------------------------------------------------------
# Writing


def test_write_is_atomic_and_0644(tmp_path: Path) -> None:
    target = tmp_path / "tcp.smtp.cdb"
    target.write_bytes(b"old")
    old_umask = os.umask(0o077)
    try:
        write_rules_cdb([(b"1.2.3.4", b"")], str(target))
    finally:
        os.umask(old_umask)
    assert cdblib.Reader(target.read_bytes()).get(b"1.2.3.4") == b""
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tcp.smtp.cdb"]


def test_failed_write_keeps_old_cdb_and_leaves_no_tmp(tmp_path: Path) -> None:
    target = tmp_path / "tcp.smtp.cdb"
    target.write_bytes(b"old")

    def pairs():
        yield b"1.2.3.4", b""
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_rules_cdb(pairs(), str(target))
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tcp.smtp.cdb"]


def test_unwritable_place_is_a_temporary_failure(tmp_path: Path) -> None:
    with pytest.raises(TemporaryFailure):
        write_rules_cdb([], str(tmp_path / "missing" / "tcp.smtp.cdb"))


def test_owner_is_set_when_uid_given(tmp_path: Path) -> None:
    target = tmp_path / "tcp.smtp.cdb"
    uid, gid = (12345, 23456) if os.geteuid() == 0 else (os.getuid(), os.getgid())
    write_rules_cdb([], str(target), uid, gid)
    info = target.stat()
    assert (info.st_uid, info.st_gid) == (uid, gid)


# --------------------------------------------------------------------------------------------------
# build


def test_build_appends_lines_to_the_rules_file(tmp_path: Path) -> None:
    rules = tmp_path / "tcp.smtp"
    rules.write_text('127.:allow,RELAYCLIENT=""\n:allow\n')
    extra = ['192.0.2.10:allow,RELAYCLIENT="",RBLSMTPD=""', '198.51.100.7:allow,RELAYCLIENT="",RBLSMTPD=""']
    build(str(rules), extra, str(tmp_path / "tcp.smtp.cdb"))
    _, real = real_tcprules(rules.read_bytes() + "".join(x + "\n" for x in extra).encode(), tmp_path)
    assert (tmp_path / "tcp.smtp.cdb").read_bytes() == real
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tcp.smtp", "tcp.smtp.cdb"]


def test_build_without_rules_file_or_final_newline(tmp_path: Path) -> None:
    cdb = tmp_path / "tcp.smtp.cdb"
    build(str(tmp_path / "absent"), ["1.2.3.4:allow"], str(cdb))
    assert records(cdb.read_bytes()) == [(b"1.2.3.4", b"")]
    (tmp_path / "tcp.smtp").write_text("127.:deny")  # not glued onto the next line
    build(str(tmp_path / "tcp.smtp"), ["1.2.3.4:allow"], str(cdb))
    assert records(cdb.read_bytes()) == [(b"127.", b"D\0"), (b"1.2.3.4", b"")]


def test_build_with_bad_line_keeps_old_cdb(tmp_path: Path) -> None:
    rules, cdb = tmp_path / "tcp.smtp", tmp_path / "tcp.smtp.cdb"
    cdb.write_bytes(b"old")
    rules.write_text("127.:allow\n127.0.0.1:allow,RELAYCLIENT\n")
    with pytest.raises(ConfigError) as caught:
        build(str(rules), [], str(cdb))
    assert (caught.value.path, caught.value.line) == (str(rules), 2)
    rules.write_text("127.:allow\n")
    with pytest.raises(ConfigError) as caught:
        build(str(rules), ["ok:allow", "bad:"], str(cdb), extra_source="/etc/open-smtp")
    assert (caught.value.path, caught.value.line) == ("/etc/open-smtp", 2)
    assert cdb.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tcp.smtp", "tcp.smtp.cdb"]


def test_unreadable_rules_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "tcp.smtp").mkdir()
    with pytest.raises(ConfigError):
        build(str(tmp_path / "tcp.smtp"), [], str(tmp_path / "tcp.smtp.cdb"))
