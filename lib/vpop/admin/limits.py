"""The library behind vmoddomlimits: a domain's limits as vpopmail's ``vlimits.c`` keeps them.

Where: the domain's ``.qmailadmin-limits`` (0600, the domain's uid/gid), falling back to
``~vpopmail/etc/vlimits.default``; with the MySQL store and ``mysql_limits = yes`` the domain's
row of the ``limits`` table (falling back to ``vlimits.default``).  :mod:`vpop.limits` reads the
same places for vchkpw's and vdelivermail's service flags.

A limits set is a dict keyed by the ``limits`` table's column names (:data:`COLUMNS`).
"""

import os

from vpop.admin.cli import AdminError
from vpop.assign import Domain
from vpop.config import Settings
from vpop.stores.base import Store
from vpop.stores.mysql import LIMITS_COLUMNS as COLUMNS

DISABLE_CREATE, DISABLE_MODIFY, DISABLE_DELETE = 0x01, 0x02, 0x04
DISABLE_ALL = 0x07
DISABLE_BITS = 3
LIMITS_FILE = ".qmailadmin-limits"
DEFAULT_FILE = "vlimits.default"

# file name -> column (vlimits_read_limits_file); the others have the column's name
FILE_NAMES = {"quota": "diskquota", "default_quota": "defaultquota",
              "default_maxmsgcount": "defaultmaxmsgcount",
              "disable_password_changing": "disable_passwordchanging",
              "disable_external_relay": "disable_relay"}
COUNTS = COLUMNS[:5]
SIZES = COLUMNS[5:9]
FLAGS = COLUMNS[9:19]
PERMS = ("perm_account", "perm_alias", "perm_forward", "perm_autoresponder", "perm_maillist",
         "perm_maillist_users", "perm_maillist_moderators", "perm_quota", "perm_defaultquota")
# -g letters (vmoddomlimits.c)
GID_LETTERS = {"u": "disable_dialup", "d": "disable_passwordchanging", "p": "disable_pop",
               "s": "disable_smtp", "w": "disable_webmail", "i": "disable_imap", "r": "disable_relay",
               "c": "disable_spamassassin", "x": "delete_spam", "m": "disable_maildrop"}
# -S "GID Flags:" order, names and the -g letter
SHOW_FLAGS = (("disable_imap", "NO_IMAP", "i"), ("disable_smtp", "NO_SMTP", "s"),
              ("disable_pop", "NO_POP", "p"),
              ("disable_webmail", "NO_WEBMAIL", "w"), ("disable_passwordchanging", "NO_PASSWD_CHNG", "d"),
              ("disable_relay", "NO_RELAY", "r"), ("disable_dialup", "NO_DIALUP", "u"),
              ("disable_spamassassin", "NO_SPAMASSASSIN", "c"), ("delete_spam", "DEL_SPAM", "x"),
              ("disable_maildrop", "NO_MAILDROP", "m"))
PERM_LETTERS = {"a": DISABLE_ALL, "c": DISABLE_CREATE, "m": DISABLE_MODIFY, "d": DISABLE_DELETE}
SHOW_PERMS = (("pop account", "perm_account"), ("alias", "perm_alias"), ("forward", "perm_forward"),
              ("autoresponder", "perm_autoresponder"), ("mailinglist", "perm_maillist"),
              ("mailinglist users", "perm_maillist_users"),
              ("mailinglist moderators", "perm_maillist_moderators"), ("quota", "perm_quota"),
              ("default quota", "perm_defaultquota"))


def defaults() -> dict:
    """``vdefault_limits``: counts -1 (no limit), everything else 0."""
    values = {name: 0 for name in (*COLUMNS, *PERMS)}
    values.update({name: -1 for name in COUNTS})
    return values


def _split_maillist(values: dict, perm: int) -> None:
    values["perm_maillist"] = perm & DISABLE_ALL
    values["perm_maillist_users"] = (perm >> DISABLE_BITS) & DISABLE_ALL
    values["perm_maillist_moderators"] = (perm >> 2 * DISABLE_BITS) & DISABLE_ALL


def parse_file(text: str) -> dict:
    """``vlimits_read_limits_file``: name, a run of blanks/``:``, value; a bare flag name sets it."""
    from vpop.numbers import atoi

    values = defaults()
    for raw in text.replace("\r", "\n").split("\n"):
        if not raw or raw.startswith("#"):
            continue
        name, value = raw, None
        for i, char in enumerate(raw):
            if char in " \t:":
                name, value = raw[:i], raw[i:].lstrip(" \t:")
                break
        column = FILE_NAMES.get(name, name)
        if column in FLAGS:
            values[column] = 1
        elif value is None:
            continue
        elif column == "perm_maillist":
            _split_maillist(values, atoi(value))
        elif column in COUNTS or column in SIZES:
            values[column] = atoi(value)
        elif column in PERMS:
            values[column] = atoi(value) & DISABLE_ALL
    return values


def format_file(values: dict) -> str:
    """``vlimits_write_limits_file``'s layout.  vpopmail wrote the mailing-list users' and
    moderators' bits into ``perm_quota``, where its reader never looks for them: they go with
    ``perm_maillist`` here, as the reader (and the ``limits`` table) has them."""
    lines = [f"{name}: {values[name]}" for name in COUNTS]
    lines += [f"quota: {values['diskquota']}", f"maxmsgcount: {values['maxmsgcount']}",
              f"default_quota: {values['defaultquota']}",
              f"default_maxmsgcount: {values['defaultmaxmsgcount']}"]
    for column in ("disable_pop", "disable_imap", "disable_dialup", "disable_passwordchanging",
                   "disable_webmail", "disable_relay", "disable_smtp", "disable_spamassassin", "delete_spam",
                   "disable_maildrop"):
        if values[column]:
            lines.append({v: k for k, v in FILE_NAMES.items()}.get(column, column))
    lines += [f"perm_account: {values['perm_account']}", f"perm_alias: {values['perm_alias']}",
              f"perm_forward: {values['perm_forward']}",
              f"perm_autoresponder: {values['perm_autoresponder']}",
              f"perm_maillist: {maillist_bits(values)}", f"perm_quota: {values['perm_quota']}",
              f"perm_defaultquota: {values['perm_defaultquota']}"]
    return "".join(line + "\n" for line in lines)


def maillist_bits(values: dict) -> int:
    return (values["perm_maillist"] | values["perm_maillist_users"] << DISABLE_BITS
            | values["perm_maillist_moderators"] << 2 * DISABLE_BITS)


def uses_table(settings: Settings) -> bool:
    return settings.store == "mysql" and settings.mysql_limits


def read_default(settings: Settings) -> dict:
    """``vlimits.default`` (vpopmail's defaults when it is missing)."""
    from vpop.files import read_file

    data = read_file(settings.etc_dir + "/" + DEFAULT_FILE, 1 << 16)
    return parse_file(data.decode("utf-8", "replace")) if data is not None else defaults()


def read_domain(settings: Settings, store: Store, domain: Domain) -> dict:
    """``vget_limits``: the table row or the domain's file, else ``vlimits.default``, else the
    built-in defaults (vpopmail failed with ``Failed to vget_limits`` when both files were missing)."""
    if uses_table(settings):
        row = store.limits_row(domain)
        if row is not None:
            _split_maillist(row, row["perm_maillist"])
            return {**defaults(), **row}
        return read_default(settings)
    from vpop.files import UserDir

    with UserDir(domain.dir, (domain.uid,), follow=True) as directory:
        data = directory.read(LIMITS_FILE, 1 << 16)
    if data is not None:
        return parse_file(data.decode("utf-8", "replace"))
    return read_default(settings)


def write_domain(settings: Settings, store: Store, domain: Domain, values: dict) -> None:
    """``vset_limits``: the row (one ``REPLACE``), or the file: temp file, fsync, rename, 0600 and the
    domain's uid/gid, in the domain directory opened without following a link."""
    from vpop.admin.notify import domain_changed

    if uses_table(settings):
        store.set_limits_row(domain, {**values, "perm_maillist": maillist_bits(values)})
        domain_changed(settings, domain.real)
        return
    from vpop.files import UserDir

    text = format_file(values).encode()
    uid = domain.uid if os.geteuid() == 0 else None
    with UserDir(domain.dir, (domain.uid,), follow=True) as directory:
        directory.replace(LIMITS_FILE, lambda handle: handle.write(text), uid, domain.gid, 0o600)
    domain_changed(settings, domain.real)


def delete_domain(settings: Settings, store: Store, domain: Domain) -> None:
    """``vdel_limits``: the row or the file goes (none is no error, as vpopmail)."""
    from vpop.admin.notify import domain_changed

    if uses_table(settings):
        store.delete_limits_row(domain)
        domain_changed(settings, domain.real)
        return
    from vpop.files import UserDir, _problem

    with UserDir(domain.dir, (domain.uid,), follow=True) as directory:
        if directory.stat(LIMITS_FILE) is None:
            return
        try:
            os.unlink(LIMITS_FILE, dir_fd=directory.fd)
        except OSError as exc:
            raise _problem(directory.name(LIMITS_FILE), "remove", exc) from None
    domain_changed(settings, domain.real)


def write_default(settings: Settings, values: dict) -> None:
    """``vlimits.default``, owned as ``~vpopmail/etc`` (0644)."""
    from vpop.files import UserDir

    text = format_file(values).encode()
    with UserDir(settings.etc_dir, follow=True) as directory:
        owner = os.fstat(directory.fd)
        directory.replace(DEFAULT_FILE, lambda handle: handle.write(text),
                          owner.st_uid if os.geteuid() == 0 else None, owner.st_gid, 0o644)


def show_lines(values: dict, title: str) -> list[str]:
    """``vmoddomlimits -S``, line for line."""
    lines = [title, "--"]
    lines += [f"Max Pop Accounts: {values['maxpopaccounts']}", f"Max Aliases: {values['maxaliases']}",
              f"Max Forwards: {values['maxforwards']}", f"Max Autoresponders: {values['maxautoresponders']}",
              f"Max Mailinglists: {values['maxmailinglists']}", "GID Flags:"]
    letters = ""
    for column, name, letter in SHOW_FLAGS:
        if values[column]:
            lines.append(f"  {name}")
            letters += letter
    lines.append(f"Flags (for commandline): {letters}")
    text = "Flags for non postmaster accounts:"
    for label, column in SHOW_PERMS:
        perm = values[column]
        text += "\n  " + f"{label}:".ljust(24)
        text += "DENY_CREATE  " if perm & DISABLE_CREATE else "ALLOW_CREATE "
        text += "DENY_MODIFY  " if perm & DISABLE_MODIFY else "ALLOW_MODIFY "
        text += "DENY_DELETE  " if perm & DISABLE_DELETE else "ALLOW_DELETE "
    lines += text.split("\n")
    lines += [f"Domain Quota: {values['diskquota']} MB",
              f"Default User Quota: {values['defaultquota']} bytes",
              f"Max Domain Messages: {values['maxmsgcount']}",
              f"Default Max Messages per User: {values['defaultmaxmsgcount']}"]
    return lines


def number(text: str, signed: bool) -> int:
    """A count or size of the command line: digits (and ``-`` for the counts, -1 = no limit);
    vpopmail's ``atoi`` read ``abc`` as 0."""
    body = text[1:] if signed and text.startswith("-") else text
    if not body.isascii() or not body.isdigit() or len(body) > 19:
        raise AdminError(f"Error: invalid number {text}")
    return int(text)


def user_quota_bytes(text: str) -> int:
    """``-q``: ``format_maildirquota`` then ``strtoll`` (``10M`` = 10485760; NOQUOTA = 0)."""
    from vpop.admin.users import format_quota

    formatted = format_quota(text.upper())
    if formatted == "NOQUOTA":
        return 0
    head = formatted.split(",", 1)[0]
    return int(head[:-1]) if head.endswith("S") else 0


def apply_perm(text: str) -> int:
    perm = 0
    for letter in text:
        perm |= PERM_LETTERS.get(letter, 0)
    return perm
