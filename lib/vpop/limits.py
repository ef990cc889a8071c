"""Domain limits (qmailadmin's ``.qmailadmin-limits``, ``vlimits.default``) and the flag mask.

File syntax as vpopmail's ``vlimits.c`` reads it: one item per line; lines starting with
``#`` and empty lines ignored; name and value separated by any run of space, TAB or ``:``;
a flag is set by its bare name.  ``pw_flags`` = ``pw_gid`` OR the mask of the domain's
``disable_*`` flags, unless the user has ``V_OVERRIDE``.
"""

from vpop.flags import V_OVERRIDE

FLAG_BITS = {
    "disable_password_changing": 0x01,
    "disable_pop": 0x02,
    "disable_webmail": 0x04,
    "disable_imap": 0x08,
    "disable_external_relay": 0x20,
    "disable_dialup": 0x40,
    "disable_smtp": 0x800,
    "disable_spamassassin": 0x4000,
    "delete_spam": 0x8000,
    "disable_maildrop": 0x40000,
    # the same flags under the column names of the MySQL ``limits`` table
    "disable_passwordchanging": 0x01,
    "disable_relay": 0x20,
}


def parse_limits(text: str) -> dict:
    """Parse limits text into {name: value} (flags map to "1")."""
    limits: dict = {}
    for raw in text.split("\n"):
        line = raw.rstrip("\r")
        if not line or line.startswith("#"):
            continue
        for sep in " \t:":
            line = line.replace(sep, " ")
        parts = line.split()
        if not parts:
            continue
        limits[parts[0].lower()] = parts[1] if len(parts) > 1 else "1"
    return limits


def read_limits_file(domain_dir: str, etc_dir: str, domain_uid: int | None = None) -> dict | None:
    """``<domain>/.qmailadmin-limits``, else ``etc/vlimits.default``, else None.

    vchkpw reads these as root from directories the domain's uid and the vpopmail uid can write:
    through :class:`vpop.files.UserDir`, so a link, FIFO or foreign file there is a
    TemporaryFailure naming it (the limits cannot be known), never followed, never waited on.
    ``domain_uid`` is the owner the domain directory must have (root always passes); None leaves
    its owner unchecked.  Only the first 64 KiB of a file are read, as before.
    """
    from vpop.files import ANY_OWNER, PARENT_OWNER, read_file

    domain_owners = ANY_OWNER if domain_uid is None else (domain_uid,)
    for path, owners in ((domain_dir + "/.qmailadmin-limits", domain_owners),
                         (etc_dir + "/vlimits.default", PARENT_OWNER)):
        data = read_file(path, 65536, owners, truncate=True)
        if data is not None:
            return parse_limits(data.decode("utf-8", "replace"))
    return None


def flag_mask(limits: dict | None) -> int:
    """The pw_gid bits that the domain's ``disable_*`` limits add."""
    mask = 0
    if limits:
        for name, bit in FLAG_BITS.items():
            value = limits.get(name)
            if value is not None and value.strip() not in ("", "0"):
                mask |= bit
    return mask


def effective_flags(pw_gid: int, limits: dict | None) -> int:
    """``pw_flags``: the user's bits plus the domain's, unless the user has V_OVERRIDE."""
    if pw_gid & V_OVERRIDE:
        return pw_gid
    return pw_gid | flag_mask(limits)
