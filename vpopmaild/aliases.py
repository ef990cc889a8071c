"""vpopmaild's alias commands: add_alias, remove_alias, delete_alias, list_alias (domain admins).

On MySQL the ``valias`` table, on CDB the domain's ``.qmail-<alias>`` files (as valias keeps
them).  ``add_alias`` takes the rest of the line as the delivery line (vpopmail took one word);
a domain admin may add forwards only: lines that run a program or write a file (``|``, ``/``,
``.``) run as the domain's uid, the owner of every domain of the site, and are for system admins,
and so is an alias named as an existing account (it would take the account's mail).
"""

from vpopmaild import arguments, wire
from vpopmaild.session import SYSTEM_ADMIN, Session


def _alias_arg(session: Session, words: wire.Words, minors: "tuple[int, int, int]"):
    """``alias@domain`` of the alias commands: (alias, domain); minors: required, invalid, not yours."""
    from vpop.admin.aliases import check_alias_name
    from vpop.admin.cli import AdminError

    text = arguments.required(words, wire.ALIAS_REQD, minors[0])
    alias, name = arguments.address(session, text, minors[1], wire.INVALID_ALIAS)
    found = arguments.find_domain(session, name)
    arguments.own_domain(session, found, minors[2])
    if found is None:
        raise wire.Refusal(wire.INVALID_ALIAS, minors[1], reason="no such domain")
    try:
        check_alias_name(session.settings, alias)
    except AdminError:
        raise wire.Refusal(wire.INVALID_ALIAS, minors[1], reason="the name of the catch-all") from None
    return alias, found


def _alias_line(session: Session, words: wire.Words, required: int, denied: int) -> str:
    from vpop.admin.aliases import check_alias_line

    raw = words.rest()
    if raw is None or not raw.strip():
        raise wire.Refusal(wire.ALIAS_LINE_REQD, required)
    line = check_alias_line(raw.decode("utf-8", "surrogateescape"))
    if session.level < SYSTEM_ADMIN and line[:1] in ("|", "/", "."):
        raise wire.Refusal(wire.NOT_AUTHORIZED, denied,
                           reason="program and file deliveries are for system admins")
    return line


def add_alias(session: Session, words: wire.Words) -> list[str]:
    missing = wire.Refusal(wire.ALIAS_INSERT_FAIL, 907, reason="the alias has that line already")
    return _line_change(session, words, "add_alias", (902, 903, 904, 906, 908), "insert_valias", missing,
                        account_minor=909)


def remove_alias(session: Session, words: wire.Words) -> list[str]:
    missing = wire.Refusal(wire.ALIAS_REMOVE_FAIL, 1007, reason="no such line")
    return _line_change(session, words, "remove_alias", (1002, 1003, 1004, 1006, 1008), "remove_valias_line",
                        missing)


def _line_change(session: Session, words: wire.Words, command: str, minors: "tuple[int, ...]", method: str,
                 refusal: wire.Refusal, account_minor: int = 0) -> list[str]:
    """``<command> alias@domain line`` through the store's ``method``; its False is ``refusal``.
    ``account_minor``: below a system admin, an alias named as an existing account is refused."""
    alias, found = _alias_arg(session, words, minors[:3])
    line = _alias_line(session, words, minors[3], minors[4])
    if account_minor and session.level < SYSTEM_ADMIN and session.store.get_user(alias, found) is not None:
        # valias is read before the account (MySQL), .qmail-<name> before .qmail-default (CDB):
        # such an alias would take the account's mail, a system admin's too
        raise wire.Refusal(wire.NOT_AUTHORIZED, account_minor, reason="an account has that name")
    session.store.connect_for_updates()
    if not getattr(session.store, method)(alias, found, line):
        raise refusal
    arguments.audit(session, command)
    return [wire.OK]


def delete_alias(session: Session, words: wire.Words) -> list[str]:
    alias, found = _alias_arg(session, words, (1102, 1103, 1104))
    session.store.connect_for_updates()
    if not session.store.delete_valias(alias, found):
        raise wire.Refusal(wire.ALIAS_DELETE_FAIL, 1106, reason="no such alias")
    arguments.audit(session, "delete_alias")
    return [wire.OK]


def list_alias(session: Session, words: wire.Words) -> list[str]:
    """``list_alias domain`` (every alias) or ``list_alias alias@domain``: ``alias@domain line``."""
    text = arguments.required(words, wire.DOMAIN_REQD, 2802)
    if "@" in text:
        alias, found = _alias_arg(session, wire_words(text), (2802, 2803, 2804))
    else:
        alias = None
        session.target = arguments.shown(text)
        found = arguments.find_domain(session, text)
        arguments.own_domain(session, found, 2804)
        if found is None:
            raise wire.Refusal(0, 2803, "Domain does not exist")
    shown = found.name
    pairs = session.store.list_valiases(found, alias)
    return [wire.OK_MORE, *(f"{name}@{shown} {line}" for name, line in pairs), wire.END]


def wire_words(text: str) -> wire.Words:
    return wire.Words(text.encode("utf-8", "surrogateescape"))
