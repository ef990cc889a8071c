"""Password verification: scheme detection, constant-time comparison.

Stored hashes as vpopmail keeps them are crypt(3) strings (DES, ``$1$`` MD5-crypt - the
5.4 default -, ``$5$``, ``$6$``, bcrypt ``$2a$/$2b$/$2y$``), optionally behind a
``{SCHEME}`` prefix (vpopmail 5.6 strips it and calls crypt).  crypt(3) strings go to the C
library's crypt (libxcrypt on Debian) through ``_crypt``: the ``crypt`` module would
cost ~18 ms of start-up because it probes every method when imported.  What crypt(3)
cannot do (non-crypt ``{SCHEME}`` hashes, passwords that are not UTF-8) goes to passlib,
imported only then.

Every comparison of secrets uses ``_operator._compare_digest`` (what ``hmac.compare_digest``
is, without importing hashlib).
"""

from _operator import _compare_digest

# {SCHEME} prefixes that name a crypt(3) string.
_CRYPT_SCHEMES = {"CRYPT", "DES-CRYPT", "MD5-CRYPT", "SHA256-CRYPT", "SHA512-CRYPT", "BLF-CRYPT",
                  "BCRYPT", "CRYPT_MD5"}
_PLAIN_SCHEMES = {"PLAIN", "CLEAR", "CLEARTEXT", "PLAINTEXT"}
# {SCHEME} prefixes in the LDAP/Dovecot form, verified by passlib.
_PASSLIB_SCHEMES = {
    "MD5": "ldap_md5",
    "SMD5": "ldap_salted_md5",
    "SHA": "ldap_sha1",
    "SHA1": "ldap_sha1",
    "SSHA": "ldap_salted_sha1",
    "SSHA256": "ldap_salted_sha256",
    "SSHA512": "ldap_salted_sha512",
}
_HEX = frozenset("0123456789abcdef")


def equal(a: bytes | str, b: bytes | str) -> bool:
    """Constant-time equality of two secrets (str arguments must be ASCII-safe)."""
    if isinstance(a, str):
        a = a.encode("utf-8", "surrogateescape")
    if isinstance(b, str):
        b = b.encode("utf-8", "surrogateescape")
    return _compare_digest(a, b)


def split_scheme(stored: str) -> tuple[str, str]:
    """``{SHA512-CRYPT}$6$...`` -> (``SHA512-CRYPT``, ``$6$...``); no prefix -> ("", stored)."""
    if stored.startswith("{"):
        end = stored.find("}")
        if end > 1:
            return stored[1:end].upper(), stored[end + 1:]
    return "", stored


def crypt_verify(password: bytes, stored: str) -> bool:
    """crypt(3) ``stored`` against ``password``."""
    if not stored:
        return False
    try:
        word = password.decode("utf-8")
    except UnicodeDecodeError:
        return _passlib_crypt_verify(password, stored)
    if "\0" in word:
        return False
    try:
        import _crypt
    except ImportError:  # Python 3.13 removed it: passlib then (slower to import, same answers)
        return _passlib_crypt_verify(password, stored)

    try:
        result = _crypt.crypt(word, stored)
    except OSError:
        return False
    if not result or result.startswith("*"):
        return False
    return equal(result, stored)


def _passlib_crypt_verify(password: bytes, stored: str) -> bool:
    """crypt(3) formats for passwords that are not UTF-8 text (``_crypt`` takes str only)."""
    from passlib import hash as ph

    for handler in (ph.md5_crypt, ph.sha512_crypt, ph.sha256_crypt, ph.bcrypt, ph.des_crypt):
        if handler.identify(stored):
            try:
                return handler.verify(password, stored)
            except (ValueError, TypeError, RuntimeError):
                # RuntimeError: passlib's MissingBackendError (bcrypt needs the bcrypt package);
                # a refusal, not a traceback and exit 1 with nothing logged.
                return False
    return False


def check_stored(stored: str) -> None:
    """A hash with a NUL or a byte that is not UTF-8 (read with surrogateescape) is damaged: 111."""
    if "\0" in stored or any("\udc80" <= c <= "\udcff" for c in stored):
        from vpop.errors import TemporaryFailure

        raise TemporaryFailure("damaged password field: a NUL or a byte that is not UTF-8")


def verify(password: bytes, stored: str) -> bool:
    """Check ``password`` (bytes as received) against a stored hash of any supported form.

    Raises TemporaryFailure for a damaged hash (see :func:`check_stored`), never a wrong answer.
    """
    check_stored(stored)
    scheme, rest = split_scheme(stored)
    if not scheme:
        return crypt_verify(password, stored)
    if scheme in _CRYPT_SCHEMES:
        return crypt_verify(password, rest)
    if scheme in _PLAIN_SCHEMES:
        return bool(rest) and equal(password, rest)
    name = _PASSLIB_SCHEMES.get(scheme)
    if name is None:
        return False
    from passlib import hash as ph

    try:
        return getattr(ph, name).verify(password, "{" + scheme.replace("SHA1", "SHA") + "}" + rest)
    except (ValueError, TypeError):
        return False


# Hashes of a random secret that was thrown away, one per scheme a site may name as its policy
# (``password_scheme``), at the cost new hashes of that scheme have: sha512-crypt with
# crypt(3)'s default 5000 rounds (vpopmail 5.6), yescrypt with Debian's default cost, bcrypt
# at passlib's cost 12, md5-crypt (vpopmail 5.4).
POLICY_SCHEMES = ("sha512-crypt", "yescrypt", "bcrypt", "md5-crypt")
_UNKNOWABLE = {
    "sha512-crypt": "$6$3.2d1QUa58Zi1VM4$iDXCJT1dKLXWCefEEbj0bGND/W/qvuF6DZTFUUVU0bxgYKvGlDUSF0kfmAAYo3MO"
                    ".pAOTJminCkzsdg5RgQEI/",
    "yescrypt": "$y$j9T$F5Jx5fExrKuPp53xLKQ..1$bWQaLVX.AKoEWq6u12FP64J9JLBrSfRD0uS2Rd6cWX/",
    "bcrypt": "$2b$12$H10ww5q5.jEg4iP2SPymteBYCe6xKuPcTP0uzkJ45krGmvbtostAy",
    "md5-crypt": "$1$2iP2Lrdt$MaG5Rc28e.nqqTTPrjz1i/",
}


def spend_like_a_check(password: bytes, scheme: str) -> None:
    """Verify ``password`` against a hash nobody knows the password of, and forget the answer.

    An unknown user or domain then costs what a wrong password costs, so that a login cannot
    tell which names exist by timing the answer (bcrypt answered 64 ms sooner without it).
    """
    crypt_verify(password, _UNKNOWABLE[scheme])


def looks_like_md5_hex(text: bytes) -> bool:
    """APOP and CRAM-MD5 answers are 32 lower-case hex digits; anything else cannot match."""
    return len(text) == 32 and _HEX.issuperset(text.decode("latin-1"))


def apop_verify(response: bytes, challenge: bytes, clear: str) -> bool:
    """APOP: hex MD5(challenge || clear password).  No challenge, no APOP (the C loophole)."""
    if not challenge or not clear or not looks_like_md5_hex(response):
        return False
    import hashlib

    digest = hashlib.md5(challenge + clear.encode("utf-8", "surrogateescape")).hexdigest()
    return equal(digest, response)


def cram_md5_verify(response: bytes, challenge: bytes, clear: str) -> bool:
    """CRAM-MD5: hex HMAC-MD5(key = clear password, challenge)."""
    if not challenge or not clear or not looks_like_md5_hex(response):
        return False
    import hmac

    digest = hmac.new(clear.encode("utf-8", "surrogateescape"), challenge, "md5").hexdigest()
    return equal(digest, response)


def make_hash(password: str, method: str = "md5") -> str:
    """A new crypt(3) hash (for the admin tools and tests): md5 (vpopmail 5.4), sha512, bcrypt.

    SHA-crypt hashes get crypt(3)'s default 5000 rounds, as vpopmail 5.6 writes them (passlib's
    own default, 656000, would make every login cost a third of a second).
    """
    from passlib import hash as ph

    handler = {"md5": ph.md5_crypt, "sha512": ph.sha512_crypt.using(rounds=5000),
               "sha256": ph.sha256_crypt.using(rounds=5000), "bcrypt": ph.bcrypt, "des": ph.des_crypt}[method]
    return handler.hash(password)


def mysql323_hash(password: bytes) -> str:
    """MySQL's pre-4.1 ``PASSWORD()``/``OLD_PASSWORD()``: 16 lower-case hex digits.

    Written out (ten lines) rather than taken from passlib: importing passlib's mysql
    handlers costs ~39 ms, three times a whole Python start; tests check it against passlib.
    """
    nr, add, nr2 = 1345345333, 7, 0x12345671
    for c in password:
        if c in (32, 9):
            continue
        nr ^= (((nr & 63) + add) * c + (nr << 8)) & 0xFFFFFFFF
        nr2 = (nr2 + ((nr2 << 8) ^ nr)) & 0xFFFFFFFF
        add += c
    return f"{nr & 0x7FFFFFFF:08x}{nr2 & 0x7FFFFFFF:08x}"


def mysql41_hash(password: bytes) -> str:
    """MySQL 4.1+ ``PASSWORD()``: ``*`` + upper-case hex SHA1(SHA1(password))."""
    import hashlib

    return "*" + hashlib.sha1(hashlib.sha1(password).digest()).hexdigest().upper()


def mysql_password_verify(password: bytes, stored: str) -> bool:
    """Either ``PASSWORD()`` format, hex digits in either case; anything else refuses."""
    stored = stored.strip()
    if len(stored) == 41 and stored.startswith("*"):
        return equal(mysql41_hash(password), stored.upper())
    if len(stored) == 16:
        return equal(mysql323_hash(password), stored.lower())
    return False
