"""vlookupd's frames: a header line and NUL-separated fields, one request, one answer.

::

    frame  = "VL1 " word " " length "\\n" body
    body   = *( key NUL value NUL )

``word`` is the operation in a request (``auth``, ``user`` ...) and the status in an answer
(``ok``, ``none``, ``refused``, ``temp`` ...); ``length`` counts the bytes of ``body`` (at most
:data:`MAX_BODY`).  Keys are short ASCII names, values any bytes but NUL (a login, a password,
a path); a key may repeat (one ``line`` per valias line).  A connection carries any number of
request/answer pairs in turn.  Lua reads a frame with ``receive("*l")`` and ``receive(length)``.

Only ``_socket``-free code here: both the daemon and its clients import this module.
"""

VERSION = b"VL1"
MAX_BODY = 1 << 16
MAX_HEADER = 64
# answers the client turns into its direct lookup rather than an outcome
UNANSWERED = frozenset({"denied", "bad", "stale", "internal"})


class ProtocolError(Exception):
    """A frame that does not parse (the peer is not speaking this protocol)."""


def _bytes(value) -> bytes:
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8", "surrogateescape")


def encode(word: str, fields) -> bytes:
    """One frame: ``word`` and the ``(key, value)`` pairs (values str, int or bytes, no NUL)."""
    parts = []
    for key, value in fields:
        data = _bytes(value)
        if b"\0" in data:
            raise ValueError(f"field {key} holds a NUL")
        parts.append(key.encode() + b"\0" + data + b"\0")
    body = b"".join(parts)
    if len(body) > MAX_BODY:
        raise ValueError("frame too long")
    return b"%s %s %d\n" % (VERSION, word.encode(), len(body)) + body


def parse_header(line: bytes) -> tuple[str, int]:
    """``word`` and body length of a header line (without its newline)."""
    parts = line.split(b" ")
    if len(parts) != 3 or parts[0] != VERSION:
        raise ProtocolError("not a VL1 header")
    word, length = parts[1], parts[2]
    if not word or len(word) > 16 or not word.replace(b"-", b"").isalpha() or not word.islower():
        raise ProtocolError("bad word in header")
    if not length.isdigit() or len(length) > 6 or int(length) > MAX_BODY:
        raise ProtocolError("bad length in header")
    return word.decode(), int(length)


class Fields:
    """The fields of a frame: ``get`` gives the first value of a key, ``all`` every value."""

    __slots__ = ("pairs",)

    def __init__(self, pairs: list[tuple[str, bytes]]) -> None:
        self.pairs = pairs

    def get(self, key: str, default: bytes | None = None) -> bytes | None:
        for name, value in self.pairs:
            if name == key:
                return value
        return default

    def text(self, key: str, default: str = "") -> str:
        value = self.get(key)
        return default if value is None else value.decode("utf-8", "surrogateescape")

    def number(self, key: str, default: int = 0) -> int:
        value = self.get(key)
        if value is None or not value.isdigit() or len(value) > 19:
            return default
        return int(value)

    def all(self, key: str) -> list[bytes]:
        return [value for name, value in self.pairs if name == key]


def decode_body(body: bytes) -> Fields:
    """The ``(key, value)`` pairs of a body; an odd count or an unterminated field is an error."""
    if not body:
        return Fields([])
    if not body.endswith(b"\0"):
        raise ProtocolError("unterminated field")
    items = body[:-1].split(b"\0")
    if len(items) % 2:
        raise ProtocolError("a key without a value")
    pairs = []
    for i in range(0, len(items), 2):
        key = items[i]
        if not key or len(key) > 32 or not key.isascii():
            raise ProtocolError("bad key")
        pairs.append((key.decode(), items[i + 1]))
    return Fields(pairs)
