"""The arguments of vpopmaild's commands, and who may name what.

Levels as vpopmail means them: 1 a user (their own account), 2 a domain administrator (the
``postmaster`` of a domain, or an account with QA_ADMIN: that domain and its alias domains),
3 a system administrator (SA_ADMIN: every domain).  Addresses are read as vpopmail's
``parse_email`` reads them (:func:`vpop.admin.users.parse_email`); domains through users/assign.
"""

from vpop.names import ascii_lower

from vpopmaild import wire
from vpopmaild.session import DOMAIN_ADMIN, SA_ADMIN, SYSTEM_ADMIN, USER, Session


def required(words: wire.Words, major: int, minor: int) -> str:
    text = words.text()
    if text is None:
        raise wire.Refusal(major, minor)
    return text


def address(session: Session, text: str, invalid_minor: int,
             major: int = wire.INVALID_EMAIL) -> "tuple[str, str]":
    """``user@domain`` as vpopmail's parse_email reads it (the default domain when none is given)."""
    from vpop.admin.cli import AdminError
    from vpop.admin.users import parse_email

    session.target = shown(text)
    try:
        user, domain = parse_email(session.settings, text)
    except AdminError:
        raise wire.Refusal(major, invalid_minor, reason="invalid address") from None
    if not domain:
        raise wire.Refusal(major, invalid_minor, reason="no domain")
    session.target = f"{user}@{domain}"
    return user, domain


def shown(text: str) -> str:
    """An argument as it may appear in a log line: printable ASCII, at most 100 characters."""
    return "".join(c if " " < c < "\x7f" else "?" for c in text[:100])


def find_domain(session: Session, name: str):
    """The domain from users/assign (an alias gives its real one), or None."""
    from vpop.admin.domains import known

    return known(session.settings, ascii_lower(name)) if name else None


def own_domain(session: Session, domain, minor: int) -> None:
    """A domain admin acts on their own domain (and its aliases) only; users are checked apart."""
    if session.level == DOMAIN_ADMIN and (domain is None or domain.real != session.domain.real):
        raise wire.Refusal(wire.NOT_AUTH_DOMAIN, minor, reason="not the admin's domain")


def domain_arg(session: Session, words: wire.Words, required_minor: int, denied_minor: int,
                missing_minor: int, missing_major: int = 0):
    """A domain argument: required, the admin's own (level 2), known."""
    name = required(words, wire.DOMAIN_REQD, required_minor)
    session.target = shown(name)
    found = find_domain(session, name)
    own_domain(session, found, denied_minor)
    if found is None:
        if missing_major:
            raise wire.Refusal(missing_major, missing_minor, reason="no such domain")
        raise wire.Refusal(0, missing_minor, "Domain does not exist")
    return found


def account(session: Session, words: wire.Words, minors: "tuple[int, int, int, int]", *,
             users_own: bool) -> "tuple[object, object]":
    """``user@domain`` of a command about one account: (domain, record).

    ``minors``: address required, invalid address, not authorized for it, no such user.  A user
    (level 1) may name their own account only when ``users_own``; a domain admin their domain.
    """
    from vpop.admin.users import get_user

    text = required(words, wire.EMAIL_REQD, minors[0])
    user, name = address(session, text, minors[1])
    found = find_domain(session, name)
    if session.level == USER:
        if not users_own or found is None or found.real != session.domain.real or user != session.user:
            raise wire.Refusal(wire.NOT_AUTH_DOMAIN, minors[2], reason="not the user's own account")
    own_domain(session, found, minors[2])
    if found is None:
        raise wire.Refusal(wire.NO_USER, minors[3], reason="no such domain")
    from vpop.admin.cli import AdminError

    try:
        record = get_user(session.store, found, user, name)
    except AdminError:
        raise wire.Refusal(wire.NO_USER, minors[3], reason="no such user") from None
    return found, record


def not_a_system_admin(session: Session, record, minor: int) -> None:
    """A domain admin cannot read, change or delete a system admin's account (vpopmail let
    postmaster read and set the password of a SA_ADMIN account in the domain, and so become a
    system admin)."""
    if session.level < SYSTEM_ADMIN and record.gid & SA_ADMIN and record.name != session.user:
        raise wire.Refusal(wire.NOT_AUTHORIZED, minor, reason="the account is a system admin's")


def new_password(raw: "bytes | None", minor: int) -> str:
    from vpop.admin.users import check_password

    if raw is None:
        raise wire.Refusal(wire.PASSWORD_REQD, minor)
    try:
        return check_password(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise wire.Refusal(wire.INVALID_PARAM, minor, reason="password is not UTF-8") from None


def page(words: wire.Words) -> "tuple[int, int]":
    """``[page per_page]`` (atoi, negatives as 0): the slice of a list; (0, 0) is everything."""
    from vpop.numbers import atoi

    page = max(atoi(words.text() or ""), 0)
    per_page = max(atoi(words.text() or ""), 0)
    if page > 0 and per_page > 0:
        return (page - 1) * per_page, page * per_page
    return 0, 0


def paged(items: list, span: "tuple[int, int]") -> list:
    start, end = span
    return items[start:end] if end else items


def audit(session: Session, command: str, detail: str = "") -> None:
    """A change that was made, at logging level y/v (vpop.log's AUTH category)."""
    from vpop import log as vlog

    extra = f" ({detail})" if detail else ""
    session.say(vlog.AUTH, f"{command} {session.target}{extra} by {session.who()}")
