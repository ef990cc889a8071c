"""Adding domains and users the way vpopmail's ``vadddomain``/``vadduser`` lay them out.

Used by the demo, the tests and the admin commands (package ``vpop_admin``).  The domain library is
:mod:`vpop.admin.domains` (a directory under ``~vpopmail/domains``, its ``.qmail-default``,
``users/assign`` + ``users/cdb``, virtualdomains and rcpthosts); a user gets a hashed directory with
its Maildir and a record in the configured store.
"""

import os

from vpop import assign
from vpop.config import Settings
from vpop.stores.base import User


def add_domain(settings: Settings, domain: str, uid: int, gid: int, vdelivermail: str = "",
               aliases: tuple[str, ...] = ()) -> str:
    """Create a domain (and its alias domains), no postmaster; return the domain directory
    (moved to :func:`vpop.admin.domains.add_domain`)."""
    from vpop.admin.domains import add_domain as add

    domain_dir = add(settings, domain, uid, gid, vdelivermail, aliases)
    return domain_dir


def add_user(settings: Settings, domain: str, user: str, password: str, *, quota: str = "NOQUOTA",
             flags: int = 0, gecos: str = "", hash_method: str = "md5", blank_dir: bool = False,
             store=None) -> User:
    """Create a user in the configured store; ``blank_dir`` leaves pw_dir empty (as billing does)."""
    from vpop.passwords import make_hash
    from vpop.stores import open_store

    found = assign.lookup(settings.qmail_home, domain.lower())
    if found is None:
        raise ValueError(f"no such domain {domain}")
    store = store or open_store(settings)
    user = user.lower()
    path = "" if blank_dir else store.make_user_dir(found, user, found.uid if os.geteuid() == 0 else None,
                                                     found.gid)
    record = User(user, found.real, make_hash(password, hash_method), 0, flags, gecos or user, path, quota,
                  password if settings.clear_passwords else "")
    store.add_user(record, found)
    return record
