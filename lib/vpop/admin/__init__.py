"""Adding domains and users the way vpopmail's ``vadddomain``/``vadduser`` lay them out.

Used by the demo, the tests and the admin commands (package ``vpop_admin``).  A domain gets its directory
under ``~vpopmail/domains``, a ``.qmail-default`` that runs vdelivermail, and the
``users/assign`` line ``+D-:D:U:G:P:-::`` (alias domains ``+A-:D:U:G:P:-::``) compiled
into ``users/cdb``.  A user gets a hashed directory with its Maildir and a record in the
configured store.
"""

import os

from vpop import assign
from vpop.config import Settings
from vpop.stores.base import User


def _append_unique(path: str, line: str) -> None:
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().split("\n")
    except FileNotFoundError:
        lines = []
    if line not in lines:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")


def _add_assign_line(qmail_home: str, line: str) -> None:
    users = qmail_home + "/users"
    os.makedirs(users, exist_ok=True)
    path = users + "/assign"
    try:
        with open(path, encoding="utf-8") as handle:
            lines = [entry for entry in handle.read().split("\n") if entry and not entry.startswith(".")]
    except FileNotFoundError:
        lines = []
    if line not in lines:
        lines.append(line)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write("".join(entry + "\n" for entry in lines) + ".\n")
    os.rename(tmp, path)
    assign.write_users_cdb(qmail_home)


def add_domain(settings: Settings, domain: str, uid: int, gid: int, vdelivermail: str = "",
               aliases: tuple[str, ...] = ()) -> str:
    """Create a domain (and its alias domains); return the domain directory."""
    domain = domain.lower()
    domain_dir = f"{settings.domains_path}/{domain}"
    os.makedirs(domain_dir, mode=0o750, exist_ok=True)
    os.chown(settings.domains_path, uid, gid) if os.geteuid() == 0 else None
    os.chown(domain_dir, uid, gid) if os.geteuid() == 0 else None
    program = vdelivermail or settings.vpopmail_home + "/bin/vdelivermail"
    qmail_default = domain_dir + "/.qmail-default"
    with open(qmail_default, "w", encoding="utf-8") as handle:
        handle.write(f"| {program} '' bounce-no-mailbox\n")
    os.chmod(qmail_default, 0o600)
    if os.geteuid() == 0:
        os.chown(qmail_default, uid, gid)
    if not os.path.exists(domain_dir + "/vpasswd") and settings.store == "cdb":
        from vpop.stores.cdb import write_vpasswd

        write_vpasswd(domain_dir, [], uid if os.geteuid() == 0 else None, gid)
    control = settings.qmail_home + "/control"
    os.makedirs(control, exist_ok=True)
    for name in (domain, *aliases):
        _add_assign_line(settings.qmail_home, f"+{name}-:{domain}:{uid}:{gid}:{domain_dir}:-::")
        _append_unique(control + "/virtualdomains", f"{name}:{name}")
        _append_unique(control + "/rcpthosts", name)
    return domain_dir


def add_user(settings: Settings, domain: str, user: str, password: str, **options) -> User:
    """Create a user in the configured store (moved to :func:`vpop.admin.users.add_user`)."""
    from vpop.admin.users import add_user as add

    return add(settings, domain, user, password, **options)
