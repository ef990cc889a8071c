"""vpopmaild's command tables: name -> (level, handler, minors), and what ``help`` lists.

The commands themselves: :mod:`vpopmaild.accounts`, :mod:`vpopmaild.domains`,
:mod:`vpopmaild.aliases`.  Levels: 0 anyone, 1 a user, 2 a domain admin, 3 a system admin.
The file commands are not offered (``-ERR 33.<n> Not Available``): a domain directory holds
``vpasswd`` (CDB) and ``.qmail`` files whose program lines run as the domain's uid, the owner
of every domain of the site, so "only inside one's own directory" would still hand a domain
admin the whole site, and a user their domain.  ``write_file`` reads its data lines up to the
``.`` first, so that they are not taken for commands.
"""

from vpopmaild import wire
from vpopmaild.accounts import (
    add_user,
    clogin,
    del_user,
    get_domain_size,
    get_lastauth,
    get_user_size,
    list_users,
    login,
    mod_user,
    slogin,
    user_count,
    user_info,
)
from vpopmaild.aliases import add_alias, delete_alias, list_alias, remove_alias
from vpopmaild.domains import (
    add_alias_domain,
    add_domain,
    add_ip_map,
    del_domain,
    del_ip_map,
    del_limits,
    dom_info,
    domain_count,
    find_domain,
    get_ip_map,
    get_limits,
    list_domains,
    set_limits,
    show_ip_map,
)
from vpopmaild.session import DOMAIN_ADMIN, SYSTEM_ADMIN, USER, Session


def quit_session(session: Session, words: wire.Words) -> None:
    return None


def login_help(session: Session, words: wire.Words) -> list[str]:
    return _help(LOGIN_HELP, 0)


def help_text(session: Session, words: wire.Words) -> list[str]:
    return _help(HELP, session.level)


def _help(entries, level: int) -> list[str]:
    lines = [wire.OK_MORE]
    for needed, name, text in entries:
        if level >= needed:
            lines += ["", name] if text is None else [f"{name} {text}"]
    return lines + [wire.END]


def _not_available(minor: int):
    def refuse(session: Session, words: wire.Words) -> list[str]:
        raise wire.Refusal(wire.NOT_AVAIL, minor, reason="file commands are not offered")

    return refuse


def write_file(session: Session, words: wire.Words) -> list[str]:
    """Refused like the other file commands, after its data lines (so that they are not taken
    for commands: Net_Vpopmaild sends them without waiting for an answer)."""
    session.read_block("write_file")
    raise wire.Refusal(wire.NOT_AVAIL, 2002, reason="file commands are not offered")


def _not_implemented(minor: int):
    def refuse(session: Session, words: wire.Words) -> list[str]:
        raise wire.Refusal(wire.NOT_IMPLEMENT, minor)

    return refuse


# ------------------------------------------------------------------ the tables

# name -> (level, handler, "not authorized" minor, library-failure minor)
LOGIN_COMMANDS = {
    "login": (0, login, 0, 209), "clogin": (0, clogin, 0, 209), "slogin": (0, slogin, 0, 209),
    "help": (0, login_help, 0, 0), "exit": (0, quit_session, 0, 0), "quit": (0, quit_session, 0, 0),
    "q": (0, quit_session, 0, 0),
}
COMMANDS = {
    "user_info": (DOMAIN_ADMIN, user_info, 601, 605),
    "list_domains": (SYSTEM_ADMIN, list_domains, 2301, 2302),
    "find_domain": (SYSTEM_ADMIN, find_domain, 2401, 2403),
    "domain_count": (SYSTEM_ADMIN, domain_count, 2501, 2502),
    "add_alias_domain": (SYSTEM_ADMIN, add_alias_domain, 1201, 1204),
    "add_domain": (SYSTEM_ADMIN, add_domain, 801, 804),
    "del_domain": (SYSTEM_ADMIN, del_domain, 1301, 1303),
    "dom_info": (SYSTEM_ADMIN, dom_info, 1401, 1403),
    "get_limits": (DOMAIN_ADMIN, get_limits, 3401, 3403),
    "set_limits": (SYSTEM_ADMIN, set_limits, 3501, 3504),
    "del_limits": (SYSTEM_ADMIN, del_limits, 3601, 3603),
    "get_domain_size": (DOMAIN_ADMIN, get_domain_size, 3901, 3904),
    "add_user": (DOMAIN_ADMIN, add_user, 301, 305),
    "del_user": (DOMAIN_ADMIN, del_user, 401, 405),
    "user_count": (DOMAIN_ADMIN, user_count, 2601, 2604),
    "list_users": (DOMAIN_ADMIN, list_users, 2701, 2704),
    "list_lists": (DOMAIN_ADMIN, _not_implemented(2901), 2901, 2905),
    "mod_user": (USER, mod_user, 500, 507),
    "get_lastauth": (USER, get_lastauth, 3701, 3706),
    "get_user_size": (USER, get_user_size, 3801, 3806),
    "add_alias": (DOMAIN_ADMIN, add_alias, 901, 907),
    "delete_alias": (DOMAIN_ADMIN, delete_alias, 1101, 1106),
    "list_alias": (DOMAIN_ADMIN, list_alias, 2801, 2806),
    "remove_alias": (DOMAIN_ADMIN, remove_alias, 1001, 1007),
    "mk_dir": (USER, _not_available(1601), 1601, 1602),
    "rm_dir": (USER, _not_available(1701), 1701, 1702),
    "list_dir": (USER, _not_available(1801), 1801, 1802),
    "rm_file": (USER, _not_available(1901), 1901, 1902),
    "rename_file": (USER, _not_available(3807), 3807, 3803),
    "write_file": (USER, write_file, 2001, 2002),
    "read_file": (USER, _not_available(2101), 2101, 2102),
    "stat_file": (USER, _not_available(2201), 2201, 2202),
    "get_ip_map": (SYSTEM_ADMIN, get_ip_map, 3001, 3003),
    "add_ip_map": (SYSTEM_ADMIN, add_ip_map, 3101, 3105),
    "del_ip_map": (SYSTEM_ADMIN, del_ip_map, 3201, 3204),
    "show_ip_map": (SYSTEM_ADMIN, show_ip_map, 3301, 3302),
    "add_list": (DOMAIN_ADMIN, _not_implemented(4001), 4001, 4001),
    "del_list": (DOMAIN_ADMIN, _not_implemented(4101), 4101, 4101),
    "mod_list": (DOMAIN_ADMIN, _not_implemented(4201), 4201, 4201),
    "exit": (0, quit_session, 0, 0), "quit": (0, quit_session, 0, 0), "q": (0, quit_session, 0, 0),
    "help": (0, help_text, 0, 0),
}

# help: (level, command or section, text or None for a section line), as vpopmaild.c's tables
LOGIN_HELP = (
    (0, "Login", None), (0, "login", "login user@domain password - expanded bitmaps"),
    (0, "clogin", "login user@domain password - compact bitmapts"),
    (0, "slogin", "login user@domain password - silent results"),
    (0, "Utility", None), (0, "help", "help"), (0, "exit", "quit"), (0, "quit", "quit"), (0, "q", "quit"),
)
HELP = (
    (2, "Domain", None), (2, "user_info", "user_domain<crlf>"), (3, "list_domains", "[page per_page]<crlf>"),
    (3, "find_domain", "domain [per-page]<crlf>"), (3, "domain_count", "<crlf>"),
    (3, "add_alias_domain", "domain alias<crlf>"), (3, "add_domain", "domain postmaster-password<crlf>"),
    (3, "del_domain", "domain<crlf>"), (3, "dom_info", "domain<crlf>"), (2, "get_limits", "domain<crlf>"),
    (3, "set_limits", "domain (option lines)<crlf>.<crlf>"), (3, "del_limits", "domain<crlf>"),
    (2, "get_domain_size", "domain<crlf>"),
    (1, "User", None), (2, "add_user", "user@domain password<crlf>"), (2, "del_user", "user@domain<crlf>"),
    (2, "user_count", "domain <crlf>"), (2, "list_users", "domain [page per_page]<crlf>"),
    (1, "mod_user", "user@domain (option lines)<crlf>.<crlf>"), (1, "get_lastauth", "user@domain<crlf>"),
    (1, "get_user_size", "user@domain<crlf>"),
    (2, "Alias", None), (2, "add_alias", "user@domain user@otherdomain<crlf>"),
    (2, "delete_alias", "user@domain<crlf>"), (2, "list_alias", "domain<crlf>"),
    (2, "remove_alias", "user@domain user@otherdomain<crlf>"),
    (3, "IP Map", None), (3, "get_ip_map", "ip<crlf>"), (3, "add_ip_map", "ip domain<crlf>"),
    (3, "del_ip_map", "ip domain<crlf>"), (3, "show_ip_map", "<crlf>"),
    (0, "Utility", None), (0, "exit", "quit"), (0, "quit", "quit"), (0, "q", "quit"), (0, "help", "help"),
)
