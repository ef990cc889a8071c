"""Numbers read from files, rows and the environment: ASCII digits only, and bounded.

``str.isdigit`` accepts ``²`` and other digits that ``int`` refuses, and ``int`` refuses
numbers of more than 4,300 digits: a value that would crash a program on its way through
one of those is read here instead.
"""

UID_MAX = 4_294_967_294  # uid_t is 32 bits; (uid_t) -1 means "no change" to setuid(2)


def ascii_number(text: str | bytes, most: int) -> int | None:
    """``text`` as a whole number if it is ASCII digits only and at most ``most``, else None."""
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError:
            return None
    if not text or len(text) > len(str(most)) or not (text.isascii() and text.isdigit()):
        return None
    number = int(text)
    return number if number <= most else None


def atoi(value: object) -> int:
    """vpopmail's ``atoi``: white space, a sign, the ASCII digits that follow; empty, NULL or junk -> 0.

    At most 18 digits are read (a C ``long`` holds them; what C does past that is undefined).
    """
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    text = str(value).strip()
    sign = -1 if text.startswith("-") else 1
    text = text[1:] if text[:1] in ("-", "+") else text
    digits = len(text) - len(text.lstrip("0123456789"))
    return sign * int(text[:min(digits, 18)]) if digits else 0
