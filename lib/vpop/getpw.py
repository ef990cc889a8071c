"""qmail-getpw's lookup rules, shared by qmail-getpw and vlookupd's ``candidates`` request.

qmail-getpw tries the local part, then each prefix ending before a ``-``, longest first; a
candidate of 32 bytes or more is skipped (GETPW_USERLEN) and only A-Z are lower-cased
(``case_lowerb``).  Each candidate is looked for in the ``mailbox`` table (qmail-mysql store),
then in /etc/passwd (``getpw_system_users``).  Whether a found entry is taken (its home owned by
its uid) is decided by qmail-getpw itself, with its own permissions (see ``qmail_getpw.main``).

No ``os`` here: qmail-getpw through the daemon must start in little more than the interpreter's time.
"""

BREAK = b"-"
USERLEN = 32

#: user, uid, gid, home as qmail-getpw prints them (names and homes as bytes).
Entry = tuple[bytes, int, int, bytes]


def candidates(local: bytes) -> list[tuple[int, bytes]]:
    """``(position, name)`` of each candidate of ``local``, in the order they are tried: the
    position where the name ends in ``local`` and the name ASCII-lower-cased."""
    found = []
    for pos in range(len(local), 0, -1):
        if pos != len(local) and local[pos:pos + 1] != BREAK:
            continue
        if pos >= USERLEN:
            continue
        found.append((pos, local[:pos].lower()))  # bytes.lower(): A-Z only, as case_lowerb
    return found


def find_entry(store, system_users: bool, name: bytes) -> Entry | None:
    """The entry of ``name``: the ``mailbox`` row when ``store`` is given, else (or when there is
    none) /etc/passwd's when ``system_users``.

    The table holds UTF-8 text, so the name is decoded as UTF-8 whatever the locale; a name
    that is not UTF-8 matches no row (the store says so).  /etc/passwd is asked with the bytes
    themselves, as getpwnam(3) would be.
    """
    if store is not None:
        account = store.mailbox(name.decode("utf-8", "surrogateescape"))
        if account is not None:
            return (account.name.encode("utf-8", "surrogateescape"), account.uid, account.gid,
                    account.home.encode("utf-8", "surrogateescape"))
    if system_users:
        import pwd
        import sys

        encoding = sys.getfilesystemencoding()
        try:
            entry = pwd.getpwnam(name.decode(encoding, "surrogateescape"))
        except KeyError:
            return None
        return (entry.pw_name.encode(encoding, "surrogateescape"), entry.pw_uid, entry.pw_gid,
                entry.pw_dir.encode(encoding, "surrogateescape"))
    return None
