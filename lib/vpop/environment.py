"""The environment the program was started with, as it must be handed on.

Python coerces a C locale at start-up (PEP 538) by adding ``LC_CTYPE=C.UTF-8`` to its own
environment, even under ``-I``; ``os.environ`` then carries a variable that tcpserver,
qmail-popup or qmail-local never set, and every program we exec would inherit it.  When
``LC_CTYPE`` looks coerced (also a ``LC_CTYPE=C`` that was rewritten), the kernel's copy of
the start-up environment decides.
"""

import os


def original_environ() -> dict[str, str]:
    """``os.environ`` with ``LC_CTYPE`` as the process was started with it (or without it)."""
    env = dict(os.environ)
    if env.get("LC_CTYPE") == "C.UTF-8":
        try:
            with open("/proc/self/environ", "rb") as handle:
                started = handle.read()
        except OSError:
            return env
        for entry in started.split(b"\0"):
            if entry.startswith(b"LC_CTYPE="):
                env["LC_CTYPE"] = entry[len(b"LC_CTYPE="):].decode("utf-8", "surrogateescape")
                break
        else:
            del env["LC_CTYPE"]
    return env
