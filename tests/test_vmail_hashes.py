"""vmail-sql's ``popbox.password_hash`` forms (tpop3d's ``check_password``), with fixed vectors.

The vectors were made outside this project: ``printf secret | md5sum``, ``| openssl dgst -md5 -binary |
base64``, ``| sha1sum``, Perl's ``crypt("secret", "ab")``, ``openssl passwd -1 -salt saltsalt secret``
and MySQL's documented ``OLD_PASSWORD('password')``.  The integration tests (test_vmail_sql.py) run the
same forms through the installed vchkpw, plus hashes computed by the MariaDB server itself.
"""

from __future__ import annotations

import pytest
from passlib import hash as ph
from vpop.passwords import mysql323_hash
from vpop.stores.vmail_sql import SCHEMES, hash_scheme, verify_vmail_hash

MD5_HEX = "5ebe2294ecd0e0f08eab7690d2a6ee69"  # md5("secret")
MD5_B64 = "Xr4ilOzQ4PCOq3aQ0qbuaQ=="  # the same digest, base64
SHA1_HEX = "e5e9fa1ba31ecd1ae84f75caaa474f3a663f05f4"  # sha1("secret")
DES = "abNANd1rDfiNc"  # crypt("secret", "ab")
MD5_CRYPT = "$1$saltsalt$9xy1btjgzLYfb7hivXtC//"  # crypt("secret", "$1$saltsalt$")
OLD_PASSWORD = "5d2e19393cc5ef67"  # OLD_PASSWORD('password')

# (stored hash, the password it was made from)
GOOD = [
    (MD5_HEX, b"secret"),
    (MD5_HEX.upper(), b"secret"),
    ("{md5}" + MD5_HEX, b"secret"),
    ("{md5}" + MD5_HEX.upper(), b"secret"),
    (MD5_B64, b"secret"),
    ("{md5}" + MD5_B64, b"secret"),
    ("{md5}7NgXN2YTcHxnXUN6XPer/A==", b"MariaDB42!"),
    ("{md5}ecd817376613707c675d437a5cf7abfc", b"MariaDB42!"),
    ("{crypt}" + DES, b"secret"),
    ("{crypt}" + MD5_CRYPT, b"secret"),
    ("{crypt_md5}" + MD5_CRYPT, b"secret"),
    ("{plaintext}secret", b"secret"),
    ("{plaintext}p\u00e4ss word", "p\u00e4ss word".encode()),
    ("{mysql}" + OLD_PASSWORD, b"password"),
    ("{mysql}" + OLD_PASSWORD.upper(), b"password"),
    ("{mysql}" + OLD_PASSWORD[:8], b"password"),
    ("{mysql}0732aa4d6a3a72a8", b"MariaDB42!"),
    ("{sha1}" + SHA1_HEX, b"secret"),
    ("{sha1}" + SHA1_HEX.upper(), b"secret"),
]


@pytest.mark.parametrize(("stored", "password"), GOOD)
def test_right_password(stored: str, password: bytes) -> None:
    assert verify_vmail_hash(password, stored) is True


@pytest.mark.parametrize(("stored", "password"), GOOD)
def test_wrong_passwords(stored: str, password: bytes) -> None:
    for wrong in (b"", b"Secret", password + b"x", password[:-1], password.upper()):
        if wrong != password:
            assert verify_vmail_hash(wrong, stored) is False, wrong


@pytest.mark.parametrize("stored", [
    "",                                    # no prefix, so md5, of length 0
    MD5_HEX[:31],                          # md5 of a wrong length
    "{md5}" + MD5_HEX + "0",
    "{md5}" + MD5_B64[:-1],
    "{mysql}" + OLD_PASSWORD[:15],         # neither 16 nor 8 hex
    "{mysql}*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19",  # 4.1 PASSWORD(): tpop3d does not take it
    "{sha1}" + SHA1_HEX[:39],
    "{whirlpool}" + MD5_HEX,               # unknown scheme
    "{}" + MD5_HEX,
    "{ssha}" + SHA1_HEX,
])
def test_malformed_or_unknown_is_no_answer(stored: str) -> None:
    """None, not False: the caller refuses, and logs that the hash itself is unusable."""
    assert verify_vmail_hash(b"secret", stored) is None
    assert verify_vmail_hash(b"password", stored) is None


@pytest.mark.parametrize("stored", [
    MD5_B64.swapcase(),          # base64 is compared case-sensitively
    MD5_B64.lower(),
    "{plaintext}",               # an empty clear password never matches, not even an empty one
    "{plaintext}SECRET",         # plain text is compared exactly
    "{crypt}",
    "{crypt}!",                  # a locked crypt entry
    "{crypt}*",
    "{crypt_md5}$1$saltsalt$",
    "{crypt}" + DES[:12],
])
def test_near_misses_refuse(stored: str) -> None:
    assert not verify_vmail_hash(b"secret", stored)
    assert not verify_vmail_hash(b"", stored)


def test_des_crypt_reads_eight_characters() -> None:
    # crypt(3) DES takes the first eight characters: tpop3d's {crypt} inherits that.
    stored = "{crypt}" + ph.des_crypt.using(salt="zz").hash("12345678")
    assert verify_vmail_hash(b"12345678", stored) is True
    assert verify_vmail_hash(b"12345678-and-more", stored) is True
    assert verify_vmail_hash(b"1234567", stored) is False


@pytest.mark.parametrize(("stored", "scheme", "value"), [
    ("{crypt_md5}" + MD5_CRYPT, "crypt_md5", MD5_CRYPT),
    ("{crypt}" + DES, "crypt", DES),
    ("{plaintext}{x}y", "plaintext", "{x}y"),
    ("{sha1}" + SHA1_HEX, "sha1", SHA1_HEX),
    (MD5_HEX, "md5", MD5_HEX),
    ("abc}def", "md5", "abc}def"),      # a brace that is not a prefix
    ("{abc", "md5", "{abc"),            # '{' without '}' is no prefix either
    ("{whirlpool}x", "whirlpool", "x"),
])
def test_hash_scheme(stored: str, scheme: str, value: str) -> None:
    assert hash_scheme(stored) == (scheme, value)


def test_known_schemes() -> None:
    assert set(SCHEMES) == {"md5", "crypt", "crypt_md5", "plaintext", "mysql", "sha1"}


@pytest.mark.parametrize("password", [b"password", b"MariaDB42!", b"a b\tc", b"", b"\xff\x80x", b"x" * 200])
def test_old_password_against_passlib(password: bytes) -> None:
    # The hand-written pre-4.1 PASSWORD() (spaces and tabs skipped) against passlib's mysql323.
    assert mysql323_hash(password) == ph.mysql323.hash(password)
    stored = "{mysql}" + ph.mysql323.hash(password)
    assert verify_vmail_hash(password, stored) is True
    assert verify_vmail_hash(password.replace(b" ", b"").replace(b"\t", b""), stored) is True
