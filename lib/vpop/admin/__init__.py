"""Adding domains and users the way vpopmail's ``vadddomain``/``vadduser`` lay them out.

Used by the demo, the tests and the admin commands (package ``vpop_admin``).  The domain library is
:mod:`vpop.admin.domains` (a directory under ``~vpopmail/domains``, its ``.qmail-default``,
``users/assign`` + ``users/cdb``, virtualdomains and rcpthosts); a user gets a hashed directory with
its Maildir and a record in the configured store.
"""

from vpop.config import Settings
from vpop.stores.base import User


def add_domain(settings: Settings, domain: str, uid: int, gid: int, vdelivermail: str = "",
               aliases: tuple[str, ...] = ()) -> str:
    """Create a domain (and its alias domains), no postmaster; return the domain directory
    (moved to :func:`vpop.admin.domains.add_domain`)."""
    from vpop.admin.domains import add_domain as add

    return add(settings, domain, uid, gid, vdelivermail, aliases)


def add_user(settings: Settings, domain: str, user: str, password: str, **options) -> User:
    """Create a user in the configured store (moved to :func:`vpop.admin.users.add_user`)."""
    from vpop.admin.users import add_user as add

    return add(settings, domain, user, password, **options)
