"""The environment the program was started with, as it must be handed on.

Python coerces a C locale at start-up (PEP 538) by adding ``LC_CTYPE=C.UTF-8`` to its own
environment, even under ``-I``; ``os.environ`` then carries a variable that tcpserver,
qmail-popup or qmail-local never set, and every program we exec would inherit it.  When
``LC_CTYPE`` looks coerced (also a ``LC_CTYPE=C`` that was rewritten), the kernel's copy of
the start-up environment decides.

``posix`` only (vchkpw's quick path reads its environment before it imports ``os``, if ever).
"""

import posix
import sys


def original_environb() -> dict[bytes, bytes]:
    """``posix.environ`` (bytes) with ``LC_CTYPE`` as the process was started with it (or without it)."""
    env = dict(posix.environ)
    if env.get(b"LC_CTYPE") == b"C.UTF-8":
        try:
            with open("/proc/self/environ", "rb") as handle:
                started = handle.read()
        except OSError:
            return env
        for entry in started.split(b"\0"):
            if entry.startswith(b"LC_CTYPE="):
                env[b"LC_CTYPE"] = entry[len(b"LC_CTYPE="):]
                break
        else:
            del env[b"LC_CTYPE"]
    return env


def original_environ(environb: dict[bytes, bytes] | None = None) -> dict[str, str]:
    """:func:`original_environb` (or ``environb``, read by it before) as text, decoded as
    ``os.environ`` decodes it.  Read it before a setuid: /proc/self/environ is root's then."""
    encoding = sys.getfilesystemencoding()
    environb = original_environb() if environb is None else environb
    return {key.decode(encoding, "surrogateescape"): value.decode(encoding, "surrogateescape")
            for key, value in environb.items()}
