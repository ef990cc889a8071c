"""Password schemes (vpop.passwords): crypt(3) families, {SCHEME} prefixes, APOP and CRAM-MD5,
then one real login through the installed vchkpw per family.

Hashes are made with passlib; bcrypt vectors are also the published OpenBSD/John-the-Ripper
ones, plus hashes made by the C library's crypt(3) for fresh salts.
"""

from __future__ import annotations

import _crypt
import hashlib
import hmac
from collections.abc import Iterator

import pytest
from helpers import fd3_payload
from passlib import hash as ph
from tree import Tree
from vpop import passwords

# Published vectors: Drepper's SHA-crypt specification, OpenBSD's bcrypt tests, RFC 1939, RFC 2195.
SHA512_VECTOR = ("Hello world!", "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJue"
                                 "sI68u4OTLiBFdcbYEdFCoEOfaS35inz1")
SHA256_VECTOR = ("Hello world!", "$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5")
BCRYPT_VECTORS = [
    ("U*U", "$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW"),
    ("U*U*", "$2a$05$CCCCCCCCCCCCCCCCCCCCC.VGOzA784oUp/Z0DY336zx7pLYAy0lwK"),
    ("", "$2a$05$CCCCCCCCCCCCCCCCCCCCC.7uG0VCzI2bS7j6ymqJi9CdcdxiRTWNy"),
]
APOP_VECTOR = (b"<1896.697170952@dbc.mtview.ca.us>", "tanstaaf", b"c4c9334bac560ecc979e58001b3e22fb")
CRAM_VECTOR = (b"<1896.697170952@postoffice.reston.mci.net>", "tanstaaftanstaaf",
               b"b913a602c7eda7a495b4e6e7334d3890")


def bcrypt_hash(password: str, ident: str) -> str:
    """A fresh bcrypt hash (cost 4) from the C library's crypt(3)."""
    salt = hashlib.sha256(password.encode() + ident.encode()).hexdigest()[:21] + "u"
    salt = salt.translate(str.maketrans("0123456789", "ABCDEFGHIJ"))
    return _crypt.crypt(password, f"${ident}$04${salt}")


def family_hashes(password: str) -> dict[str, str]:
    """One stored hash of ``password`` per form vpopmail sites have in vpasswd / pw_passwd."""
    sha512 = ph.sha512_crypt.using(rounds=5000).hash(password)
    return {
        "des": ph.des_crypt.hash(password),
        "md5": ph.md5_crypt.hash(password),
        "sha256": ph.sha256_crypt.using(rounds=5000).hash(password),
        "sha256-rounds": ph.sha256_crypt.using(rounds=12000).hash(password),
        "sha512": sha512,
        "bcrypt-2a": bcrypt_hash(password, "2a"),
        "bcrypt-2b": bcrypt_hash(password, "2b"),
        "bcrypt-2y": bcrypt_hash(password, "2y"),
        "{SHA512-CRYPT}": "{SHA512-CRYPT}" + sha512,
        "{CRYPT}": "{CRYPT}" + ph.md5_crypt.hash(password),
        "{crypt}-des": "{crypt}" + ph.des_crypt.hash(password),
        "{MD5-CRYPT}": "{MD5-CRYPT}" + ph.md5_crypt.hash(password),
        "{BLF-CRYPT}": "{BLF-CRYPT}" + bcrypt_hash(password, "2y"),
        "{PLAIN}": "{PLAIN}" + password,
        "{CLEARTEXT}": "{CLEARTEXT}" + password,
        "{SSHA}": ph.ldap_salted_sha1.hash(password),
        "{SHA}": ph.ldap_sha1.hash(password),
        "{MD5}": ph.ldap_md5.hash(password),
        "{SMD5}": ph.ldap_salted_md5.hash(password),
        "{SSHA256}": ph.ldap_salted_sha256.hash(password),
        "{SSHA512}": ph.ldap_salted_sha512.hash(password),
    }


FAMILIES = sorted(family_hashes("x"))


# ------------------------------------------------------------------------------------------------
# verify()


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family(family: str) -> None:
    stored = family_hashes("Ses4me!")[family]  # 7 characters: DES reads 8
    assert passwords.verify(b"Ses4me!", stored)
    assert not passwords.verify(b"ses4me!", stored)
    assert not passwords.verify(b"Ses4me", stored)
    assert not passwords.verify(b"", stored)


def test_the_families_are_what_they_claim() -> None:
    hashes = family_hashes("pw")
    assert len(hashes["des"]) == 13
    assert hashes["md5"].startswith("$1$") and hashes["sha256"].startswith("$5$")
    assert hashes["sha256-rounds"].startswith("$5$rounds=12000$") and hashes["sha512"].startswith("$6$")
    for ident in ("2a", "2b", "2y"):
        assert hashes[f"bcrypt-{ident}"].startswith(f"${ident}$04$")
    assert hashes["{SSHA}"].startswith("{SSHA}") and hashes["{MD5}"].startswith("{MD5}")


def test_published_sha_crypt_vectors() -> None:
    for password, stored in (SHA512_VECTOR, SHA256_VECTOR):
        assert passwords.verify(password.encode(), stored)
        assert passwords.verify(password.encode(), "{SHA512-CRYPT}" + stored)  # prefix is not checked
        assert not passwords.verify(b"Hello world", stored)


@pytest.mark.parametrize(("password", "stored"), BCRYPT_VECTORS)
@pytest.mark.parametrize("ident", ["2a", "2b", "2y"])
def test_published_bcrypt_vectors(password: str, stored: str, ident: str) -> None:
    # $2a$, $2b$ and $2y$ differ only for 8-bit and over-long passwords: same digest here.
    stored = stored.replace("$2a$", f"${ident}$")
    assert passwords.verify(password.encode(), stored)
    assert not passwords.verify(password.encode() + b"x", stored)


def test_des_uses_eight_characters_like_crypt() -> None:
    stored = ph.des_crypt.hash("password")
    assert passwords.verify(b"password-and-more", stored)
    assert not passwords.verify(b"passwor", stored)


def test_non_utf8_password_bytes() -> None:
    secret = b"p\xe4ss\xff\xfe"
    for stored in (ph.md5_crypt.hash(secret), ph.sha512_crypt.using(rounds=5000).hash(secret),
                   ph.des_crypt.hash(secret)):
        assert passwords.verify(secret, stored), stored
        assert not passwords.verify(b"p\xe4ss\xff", stored)
        assert not passwords.verify("päss".encode(), stored)
    # the same text sent as UTF-8 is another password
    latin1 = "pässwörd".encode("latin-1")
    stored = ph.md5_crypt.hash(latin1)
    assert passwords.verify(latin1, stored)
    assert not passwords.verify("pässwörd".encode(), stored)


def test_non_utf8_password_against_bcrypt_does_not_raise() -> None:
    stored = bcrypt_hash("whatever", "2b")
    assert passwords.verify(b"\xff\xfe", stored) is False


def test_non_utf8_password_against_bcrypt() -> None:
    # _crypt takes str only; such passwords go to passlib, whose bcrypt backend is the bcrypt package.
    stored = passwords.make_hash("x", "bcrypt")
    assert stored.startswith("$2b$") and passwords.verify(b"x", stored)
    stored = ph.bcrypt.hash(b"p\xe4ss")
    assert passwords.verify(b"p\xe4ss", stored)
    assert not passwords.verify(b"p\xe4sS", stored)


def test_utf8_password() -> None:
    stored = ph.sha512_crypt.using(rounds=5000).hash("pässwörd€")
    assert passwords.verify("pässwörd€".encode(), stored)
    assert passwords.verify("pässwörd€".encode(), bcrypt_hash("pässwörd€", "2b"))


@pytest.mark.parametrize("stored", ["", "{CRYPT}", "{PLAIN}", "{SHA512-CRYPT}", "{SSHA}", "{MD5}"])
def test_empty_stored_hash_refuses(stored: str) -> None:
    for password in (b"", b"x", stored.encode()):
        assert not passwords.verify(password, stored)


@pytest.mark.parametrize("stored", ["{FOO}secret", "{SHA999}abc", "{}secret", "{PLAIN", "*", "!",
                                    "!$1$abc$def", "*LK*", "x", "$9$whatever", "$1$", "$6$salt$",
                                    "{MD5}not-base64!", "{SSHA}AA=="])
def test_unknown_or_broken_schemes_refuse(stored: str) -> None:
    for password in (b"secret", b"", stored.encode(), b"x"):
        assert not passwords.verify(password, stored)


def test_plain_scheme_compares_exactly() -> None:
    assert passwords.verify(b"Secret", "{PLAIN}Secret")
    assert passwords.verify(b"Secret", "{plain}Secret")
    assert not passwords.verify(b"secret", "{PLAIN}Secret")
    assert not passwords.verify(b"Secret ", "{PLAIN}Secret")


def test_nul_in_password_never_matches_a_prefix() -> None:
    stored = ph.md5_crypt.hash("secret")
    assert not passwords.verify(b"secret\0", stored)
    assert not passwords.verify(b"secret\0more", stored)


def test_split_scheme() -> None:
    assert passwords.split_scheme("{sha512-crypt}$6$x") == ("SHA512-CRYPT", "$6$x")
    assert passwords.split_scheme("$1$abc$def") == ("", "$1$abc$def")
    assert passwords.split_scheme("{}x") == ("", "{}x")


def test_equal() -> None:
    assert passwords.equal(b"abc", "abc") and passwords.equal("", b"")
    assert not passwords.equal(b"abc", b"abd") and not passwords.equal(b"abc", b"ab")


# ------------------------------------------------------------------------------------------------
# APOP and CRAM-MD5


def test_apop_rfc1939_vector() -> None:
    challenge, secret, digest = APOP_VECTOR
    assert passwords.apop_verify(digest, challenge, secret)
    assert not passwords.apop_verify(digest.upper(), challenge, secret)  # vchkpw compares lower-case hex
    assert not passwords.apop_verify(digest, challenge + b" ", secret)
    assert not passwords.apop_verify(digest, challenge, secret + "x")


def test_apop_refuses_without_challenge_or_clear_password() -> None:
    secret = "tanstaaf"
    md5_of_password = hashlib.md5(secret.encode()).hexdigest().encode()
    assert not passwords.apop_verify(md5_of_password, b"", secret)  # the C loophole
    assert not passwords.apop_verify(hashlib.md5(b"<1.2@h>").hexdigest().encode(), b"<1.2@h>", "")


@pytest.mark.parametrize("response", [b"", b"c4c9334bac560ecc979e58001b3e22f",
                                      b"c4c9334bac560ecc979e58001b3e22fb0",
                                      b"g4c9334bac560ecc979e58001b3e22fb", b"tanstaaf"])
def test_apop_malformed_responses(response: bytes) -> None:
    assert not passwords.apop_verify(response, APOP_VECTOR[0], APOP_VECTOR[1])


def test_cram_md5_rfc2195_vector() -> None:
    challenge, secret, digest = CRAM_VECTOR
    assert passwords.cram_md5_verify(digest, challenge, secret)
    assert not passwords.cram_md5_verify(digest.upper(), challenge, secret)
    assert not passwords.cram_md5_verify(digest, challenge + b"x", secret)
    assert not passwords.cram_md5_verify(digest, b"", secret)
    assert not passwords.cram_md5_verify(digest, challenge, "")
    assert not passwords.cram_md5_verify(digest, challenge, "tanstaaftanstaaF")


def test_cram_md5_with_utf8_secret() -> None:
    challenge = b"<42.1700000000@mail.example.com>"
    digest = hmac.new("clé".encode(), challenge, "md5").hexdigest().encode()
    assert passwords.cram_md5_verify(digest, challenge, "clé")


def test_looks_like_md5_hex() -> None:
    assert passwords.looks_like_md5_hex(b"0123456789abcdef0123456789abcdef")
    assert not passwords.looks_like_md5_hex(b"0123456789ABCDEF0123456789abcdef")
    assert not passwords.looks_like_md5_hex(b"\xff" * 32)


# ------------------------------------------------------------------------------------------------
# Through the installed vchkpw, one login per family


@pytest.fixture(scope="module")
def tree() -> Iterator[Tree]:
    with Tree(logging="y") as t:
        t.add_domain("example.com")
        for family, stored in family_hashes("Open-Sesame").items():
            t.add_user("example.com", login_name(family).split("@")[0], "Open-Sesame", passwd=stored)
        t.add_user("example.com", "latin", "unused", passwd=ph.md5_crypt.hash(b"p\xe4ss"))
        t.add_user("example.com", "vector", "unused", passwd=BCRYPT_VECTORS[0][1].replace("$2a$", "$2y$"))
        t.syslog_lines()
        yield t


def login_name(family: str) -> str:
    """user<N>@example.com, one user per family."""
    return f"user{FAMILIES.index(family)}@example.com"


@pytest.mark.parametrize("family", FAMILIES)
def test_login_per_family(tree: Tree, family: str) -> None:
    done, record = tree.login(fd3_payload(login_name(family), "Open-Sesame", b"<1.2@pop>"))
    assert done.returncode == 0, done.stderr
    assert record is not None and record["uid"] == 89
    assert tree.syslog_lines() == [f"vchkpw-pop3: (PLAIN) login success {login_name(family)}:192.0.2.10"]
    done, record = tree.login(fd3_payload(login_name(family), "open-sesame", b"<1.2@pop>"))
    assert done.returncode == 1 and record is None
    assert tree.syslog_lines() == [f"vchkpw-pop3: password fail {login_name(family)}:192.0.2.10"]


def test_login_with_non_utf8_password(tree: Tree) -> None:
    done, record = tree.login(fd3_payload("latin@example.com", b"p\xe4ss", b"<1.2@pop>"))
    assert done.returncode == 0, done.stderr
    assert record is not None
    done, record = tree.login(fd3_payload("latin@example.com", "päss", b"<1.2@pop>"))
    assert done.returncode == 1 and record is None


def test_login_with_published_bcrypt_vector(tree: Tree) -> None:
    done, record = tree.login(fd3_payload("vector@example.com", "U*U", b"<1.2@pop>"))
    assert done.returncode == 0, done.stderr
    done, record = tree.login(fd3_payload("vector@example.com", b"U*U\xff", b"<1.2@pop>"))
    assert done.returncode == 1 and record is None
    assert b"Traceback" not in done.stderr
