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


# --- The policy: new hashes, and which stored hashes are weaker than it ---------------------
#
# Strength order (a rank; higher is stronger), for ``rehash_on_login``:
#   0 clear ({PLAIN}, {CLEAR}...)  1 fast digests ({MD5}, {SHA}, {SSHA*}...)  2 DES crypt
#   3 MD5-crypt ($1$)  4 SHA256-crypt ($5$)  5 SHA512-crypt ($6$)  6 bcrypt ($2a/b/y$) = yescrypt ($y$)
# A stored hash is weaker than the policy when its rank is lower, or when it is the policy's own
# scheme at a lower cost (SHA-crypt with fewer rounds than 5000, bcrypt under cost 12).  bcrypt and
# yescrypt rank alike: neither is rewritten into the other.  Anything else (an unknown prefix, a
# locked ``*``/``!`` hash) is never rewritten.
_ITOA64 = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"  # crypt(3)'s alphabet
_BCRYPT64 = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"  # bcrypt's own order
_RANK = {"plain": 0, "digest": 1, "des": 2, "md5-crypt": 3, "sha256-crypt": 4, "sha512-crypt": 5,
         "bcrypt": 6, "yescrypt": 6}
SHA_CRYPT_ROUNDS = 5000  # crypt(3)'s default, as vpopmail 5.6 writes them
BCRYPT_COST = 12  # passlib's default, what the admin tools wrote
# libxcrypt's crypt_gensalt("$y$", 0, ...): yescrypt flavour j, N = 2^12, r = 32 (the "9T"),
# Debian's default (login.defs YESCRYPT_COST_FACTOR 5).
YESCRYPT_PARAMS = "$y$j9T$"


def hash_scheme(stored: str) -> tuple[str, int]:
    """(scheme, cost) of a stored hash: ("plain", 0), ("des", 0), ("sha512-crypt", rounds) ...

    ("", 0) for what the policy never rewrites (unknown formats, locked or empty hashes).
    """
    prefix, rest = split_scheme(stored)
    if prefix in _PLAIN_SCHEMES:
        return "plain", 0
    if prefix in _PASSLIB_SCHEMES:
        return "digest", 0
    if prefix and prefix not in _CRYPT_SCHEMES:
        return "", 0
    if rest.startswith("$1$"):
        return "md5-crypt", 0
    if rest.startswith(("$5$", "$6$")):
        rounds = SHA_CRYPT_ROUNDS
        if rest[3:].startswith("rounds="):
            number = rest[10:].split("$", 1)[0]
            rounds = int(number) if number.isdigit() and number.isascii() and len(number) < 10 else 0
        return ("sha256-crypt" if rest[1] == "5" else "sha512-crypt"), rounds
    if rest[:4] in ("$2a$", "$2b$", "$2y$"):
        cost = rest[4:6]
        return "bcrypt", int(cost) if cost.isdigit() and cost.isascii() else 0
    if rest.startswith("$y$"):
        return "yescrypt", 0
    if len(rest) == 13 and all(c in _ITOA64 for c in rest):
        return "des", 0
    if len(rest) == 20 and rest[0] == "_" and all(c in _ITOA64 for c in rest[1:]):
        return "des", 0  # BSDi extended DES
    return "", 0


def weaker_than_policy(stored: str, scheme: str) -> bool:
    """Whether ``stored`` is weaker than new hashes of the policy ``scheme`` (see the order above)."""
    kind, cost = hash_scheme(stored)
    if not kind:
        return False
    rank = _RANK[kind]
    if rank != _RANK[scheme]:
        return rank < _RANK[scheme]
    if kind != scheme:
        return False  # bcrypt and yescrypt: alike
    if kind == "sha512-crypt":
        return cost < SHA_CRYPT_ROUNDS
    if kind == "bcrypt":
        return cost < BCRYPT_COST
    return False


def _random_bytes(count: int) -> bytes:
    """The kernel's CSPRNG: ``os.urandom`` is what ``secrets.token_bytes`` returns, without the
    9 ms that importing ``secrets`` (base64, re, hmac, hashlib, random) adds to the login."""
    import os

    return os.urandom(count)


def _salt_chars(count: int) -> str:
    """``count`` characters of crypt(3)'s alphabet, each uniform (64 divides 256: no bias)."""
    return "".join(_ITOA64[byte & 63] for byte in _random_bytes(count))


def _encode64(data: bytes, alphabet: str, little_endian: bool) -> str:
    """crypt's base-64: yescrypt packs 3 bytes little-endian and emits the low 6 bits first; bcrypt
    packs them big-endian and emits the high bits first.  A short last group emits only the
    characters its bits need (16 bytes -> 22 characters for both)."""
    out = []
    for start in range(0, len(data), 3):
        group = data[start:start + 3]
        chars = len(group) + 1
        if little_endian:
            value = int.from_bytes(group, "little")
            out.extend(alphabet[(value >> (6 * i)) & 63] for i in range(chars))
        else:
            value = int.from_bytes(group + bytes(3 - len(group)), "big")
            out.extend(alphabet[(value >> (18 - 6 * i)) & 63] for i in range(chars))
    return "".join(out)


def new_salt(scheme: str) -> str:
    """A crypt(3) setting for a new hash of ``scheme``, its randomness from the kernel's CSPRNG.

    Formats as libxcrypt's ``crypt_gensalt`` makes them (tests compare the two): md5-crypt
    ``$1$`` + 8 characters, sha512-crypt ``$6$`` + 16 (no ``rounds=``: the default 5000),
    yescrypt ``$y$j9T$`` + 16 random bytes in yescrypt's encoding, bcrypt ``$2b$12$`` + 16 bytes
    in bcrypt's.
    """
    if scheme == "md5-crypt":
        return "$1$" + _salt_chars(8)
    if scheme == "sha512-crypt":
        return "$6$" + _salt_chars(16)
    if scheme == "yescrypt":
        return YESCRYPT_PARAMS + _encode64(_random_bytes(16), _ITOA64, True)
    if scheme == "bcrypt":
        return f"$2b${BCRYPT_COST:02d}$" + _encode64(_random_bytes(16), _BCRYPT64, False)
    raise ValueError(f"unknown password scheme {scheme!r}")


def new_hash(password: str, scheme: str) -> str:
    """A new hash of ``password`` in the policy ``scheme`` (one of :data:`POLICY_SCHEMES`).

    Made by the C library's crypt(3) (libxcrypt) through ``_crypt``, never passlib: a login that
    rehashes pays no passlib import.  Raises ValueError when crypt(3) refuses (a NUL in the
    password, a scheme this libcrypt lacks): the caller keeps the old hash.
    """
    if "\0" in password:
        raise ValueError("a password with a NUL cannot be hashed by crypt(3)")
    import _crypt

    setting = new_salt(scheme)
    try:
        result = _crypt.crypt(password, setting)
    except OSError as exc:
        raise ValueError(f"crypt(3) refused {scheme}: {exc.strerror}") from None
    if not result or result.startswith("*") or not result.startswith(setting[:7]):
        raise ValueError(f"crypt(3) cannot make {scheme} hashes")
    return result


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
