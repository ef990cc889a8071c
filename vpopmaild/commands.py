"""vpopmaild's commands: their words, answers and permission rules.

Levels as vpopmail means them: 1 a user (their own account), 2 a domain administrator (the
``postmaster`` of a domain, or an account with QA_ADMIN: that domain and its alias domains),
3 a system administrator (SA_ADMIN: every domain).  Where vpopmail's code allowed more than it
meant, these rules hold instead (README, "vpopmaild"): a user changes their own password only
when NO_PASSWD_CHNG is not set (refused at ``mod_user`` itself, the one line Roundcube reads);
``encrypted_password``, SA_ADMIN/SA_EXPERT and V_OVERRIDE are for system administrators; a
domain administrator cannot change or delete a system administrator's account, nor add alias
lines that run programs or write files (``|``, ``/``, ``.``: they would run as the domain's uid).
The file commands are not offered (``-ERR 33 Not Available``): a domain directory holds
``vpasswd`` (CDB) and ``.qmail`` files whose program lines run as the uid of every domain of the
site, so "only inside one's own directory" would still hand a postmaster the whole site.

Each answer is a list of lines; a refusal raises :class:`vpopmaild.wire.Refusal`.  The minor
numbers are vpopmaild.c's where it had one.
"""

from vpopmaild import wire
from vpopmaild.session import (
    COMPACT,
    DOMAIN_ADMIN,
    FULL,
    QA_ADMIN,
    SA_ADMIN,
    SILENT,
    SYSTEM_ADMIN,
    USER,
    LoginFailed,
    Session,
)

V_OVERRIDE = 0x2000
NO_PASSWD_CHNG = 0x01

# the flag lines of a full user_info, in vpopmaild.c's order (name, bit)
FLAG_LINES = (
    ("no_password_change", 0x01), ("no_pop", 0x02), ("no_webmail", 0x04), ("no_imap", 0x08),
    ("bounce_mail", 0x10), ("no_relay", 0x20), ("no_dialup", 0x40), ("user_flag_0", 0x80),
    ("user_flag_1", 0x100), ("user_flag_2", 0x200), ("user_flag_3", 0x400), ("no_smtp", 0x800),
    ("domain_admin_privileges", QA_ADMIN), ("override_domain_limits", V_OVERRIDE),
    ("no_spamassassin", 0x4000), ("delete_spam", 0x8000), ("no_maildrop", 0x40000),
    ("system_admin_privileges", SA_ADMIN),
)

# who may change a mod_user parameter: anyone with the account, an "override" admin (a system
# admin, or a domain admin with V_OVERRIDE), a domain admin, a system admin
ANYONE, OVERRIDE, DOMAIN, SYSTEM = "anyone", "override", "domain", "system"
FLAG_PARAMS = {
    "no_password_change": (0x01, OVERRIDE), "no_pop": (0x02, OVERRIDE), "no_webmail": (0x04, OVERRIDE),
    "no_imap": (0x08, OVERRIDE), "bounce_mail": (0x10, OVERRIDE), "no_relay": (0x20, OVERRIDE),
    "no_dialup": (0x40, OVERRIDE), "user_flag_0": (0x80, OVERRIDE), "user_flag_1": (0x100, OVERRIDE),
    "user_flag_2": (0x200, ANYONE), "user_flag_3": (0x400, ANYONE), "no_smtp": (0x800, OVERRIDE),
    "domain_admin_privileges": (QA_ADMIN, DOMAIN), "override_domain_limits": (V_OVERRIDE, SYSTEM),
    "no_spamassassin": (0x4000, ANYONE), "delete_spam": (0x8000, ANYONE), "no_maildrop": (0x40000, ANYONE),
    "system_admin_privileges": (SA_ADMIN, SYSTEM), "system_expert_privileges": (0x20000, SYSTEM),
}
MOD_USER_PARAMS = frozenset({"comment", "quota", "encrypted_password", "clear_text_password",
                             "clear_all_flags", *FLAG_PARAMS})

# get_limits / set_limits names -> vpop.admin.limits columns, in vpopmaild.c's order
LIMIT_NUMBERS = (("max_popaccounts", "maxpopaccounts"), ("max_aliases", "maxaliases"),
                 ("max_forwards", "maxforwards"), ("max_autoresponders", "maxautoresponders"),
                 ("max_mailinglists", "maxmailinglists"), ("disk_quota", "diskquota"),
                 ("max_msgcount", "maxmsgcount"), ("default_quota", "defaultquota"),
                 ("default_maxmsgcount", "defaultmaxmsgcount"))
LIMIT_FLAGS = (("disable_pop", "disable_pop"), ("disable_imap", "disable_imap"),
               ("disable_dialup", "disable_dialup"),
               ("disable_password_changing", "disable_passwordchanging"),
               ("disable_webmail", "disable_webmail"), ("disable_external_relay", "disable_relay"),
               ("disable_smtp", "disable_smtp"), ("disable_spamassassin", "disable_spamassassin"),
               ("delete_spam", "delete_spam"), ("disable_maildrop", "disable_maildrop"))
LIMIT_PERMS = ("perm_account", "perm_alias", "perm_forward", "perm_autoresponder", "perm_maillist",
               "perm_quota", "perm_defaultquota", "perm_maillist_users", "perm_maillist_moderators")


# ------------------------------------------------------------------ arguments


def _required(words: wire.Words, major: int, minor: int) -> str:
    text = words.text()
    if text is None:
        raise wire.Refusal(major, minor)
    return text


def _address(session: Session, text: str, invalid_minor: int,
             major: int = wire.INVALID_EMAIL) -> "tuple[str, str]":
    """``user@domain`` as vpopmail's parse_email reads it (the default domain when none is given)."""
    from vpop.admin.cli import AdminError
    from vpop.admin.users import parse_email

    session.target = _shown(text)
    try:
        user, domain = parse_email(session.settings, text)
    except AdminError:
        raise wire.Refusal(major, invalid_minor, reason="invalid address") from None
    if not domain:
        raise wire.Refusal(major, invalid_minor, reason="no domain")
    session.target = f"{user}@{domain}"
    return user, domain


def _shown(text: str) -> str:
    """An argument as it may appear in a log line: printable ASCII, at most 100 characters."""
    return "".join(c if " " < c < "\x7f" else "?" for c in text[:100])


def _find(session: Session, name: str):
    """The domain from users/assign (an alias gives its real one), or None."""
    from vpop.admin.domains import known

    return known(session.settings, name.lower()) if name else None


def _own_domain(session: Session, domain, minor: int) -> None:
    """A domain admin acts on their own domain (and its aliases) only; users are checked apart."""
    if session.level == DOMAIN_ADMIN and (domain is None or domain.real != session.domain.real):
        raise wire.Refusal(wire.NOT_AUTH_DOMAIN, minor, reason="not the admin's domain")


def _domain_arg(session: Session, words: wire.Words, required_minor: int, denied_minor: int,
                missing_minor: int, missing_major: int = 0):
    """A domain argument: required, the admin's own (level 2), known."""
    name = _required(words, wire.DOMAIN_REQD, required_minor)
    session.target = _shown(name)
    found = _find(session, name)
    _own_domain(session, found, denied_minor)
    if found is None:
        if missing_major:
            raise wire.Refusal(missing_major, missing_minor, reason="no such domain")
        raise wire.Refusal(0, missing_minor, "Domain does not exist")
    return found


def _account(session: Session, words: wire.Words, minors: "tuple[int, int, int, int]", *,
             users_own: bool) -> "tuple[object, object]":
    """``user@domain`` of a command about one account: (domain, record).

    ``minors``: address required, invalid address, not authorized for it, no such user.  A user
    (level 1) may name their own account only when ``users_own``; a domain admin their domain.
    """
    from vpop.admin.users import get_user

    text = _required(words, wire.EMAIL_REQD, minors[0])
    user, name = _address(session, text, minors[1])
    found = _find(session, name)
    if session.level == USER:
        if not users_own or found is None or found.real != session.domain.real or user != session.user:
            raise wire.Refusal(wire.NOT_AUTH_DOMAIN, minors[2], reason="not the user's own account")
    _own_domain(session, found, minors[2])
    if found is None:
        raise wire.Refusal(wire.NO_USER, minors[3], reason="no such domain")
    from vpop.admin.cli import AdminError

    try:
        record = get_user(session.store, found, user, name)
    except AdminError:
        raise wire.Refusal(wire.NO_USER, minors[3], reason="no such user") from None
    return found, record


def _not_a_system_admin(session: Session, record, minor: int) -> None:
    """A domain admin cannot touch a system admin's account (vpopmail let postmaster change the
    password of a SA_ADMIN account in the domain, and so become a system admin)."""
    if session.level < SYSTEM_ADMIN and record.gid & SA_ADMIN and record.name != session.user:
        raise wire.Refusal(wire.NOT_AUTHORIZED, minor, reason="the account is a system admin's")


def _new_password(raw: "bytes | None", minor: int) -> str:
    from vpop.admin.changes import check_password

    if raw is None:
        raise wire.Refusal(wire.PASSWORD_REQD, minor)
    try:
        return check_password(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise wire.Refusal(wire.INVALID_PARAM, minor, reason="password is not UTF-8") from None


def _page(words: wire.Words) -> "tuple[int, int]":
    """``[page per_page]`` (atoi, negatives as 0): the slice of a list; (0, 0) is everything."""
    from vpop.numbers import atoi

    page = max(atoi(words.text() or ""), 0)
    per_page = max(atoi(words.text() or ""), 0)
    if page > 0 and per_page > 0:
        return (page - 1) * per_page, page * per_page
    return 0, 0


def _paged(items: list, span: "tuple[int, int]") -> list:
    start, end = span
    return items[start:end] if end else items


def _audit(session: Session, command: str, detail: str = "") -> None:
    """A change that was made, at logging level y/v (vpop.log's AUTH category)."""
    from vpop import log as vlog

    extra = f" ({detail})" if detail else ""
    session.say(vlog.AUTH, f"{command} {session.target}{extra} by {session.who()}")


# ------------------------------------------------------------------ login, help, quit


def user_info_lines(record, compact: bool) -> list[str]:
    """vpopmaild.c's ``send_user_info``."""
    lines = [f"name {record.name}", f"comment {record.gecos}", f"quota {record.shell}",
             f"user_dir {record.dir}", f"encrypted_password {record.passwd}",
             f"clear_text_password {record.clear}"]
    if compact:
        lines.append(f"gidflags {record.gid}")
    else:
        lines += [f"{name} {1 if record.gid & bit else 0}" for name, bit in FLAG_LINES]
    return lines


def _login(session: Session, words: wire.Words, output: int) -> list[str]:
    import copy

    from vpop import auth
    from vpop.errors import AuthFailure

    email = words.next()
    if email is None:
        raise wire.Refusal(wire.EMAIL_REQD, 203)
    password = words.rest()
    if password is None:
        raise wire.Refusal(wire.PASSWORD_REQD, 204)
    session.target = _shown(email.decode("utf-8", "replace"))
    attempt = auth.Attempt(session.environ, session.settings.vpopmaild_service, session.ip, "vpopmaild",
                           session.log)
    try:
        grant = auth.authenticate(attempt, session.settings, email, password, record_login=False)
    except AuthFailure as exc:
        # the engine has logged why; one answer for "no such user" and "wrong password"
        minor = {20: 205, 1: 208}.get(exc.vpopmail_code, 207)
        major = wire.NOT_AUTHORIZED if minor == 208 else wire.INVALID_LOGIN
        raise LoginFailed(major, minor, reason="logged by the engine") from None
    record = copy.copy(grant.record)
    session.domain = grant.domain
    session.user = record.name
    if record.gid & SA_ADMIN:
        session.level = SYSTEM_ADMIN
    elif record.gid & QA_ADMIN or record.name == "postmaster":
        record.gid |= QA_ADMIN
        session.level = DOMAIN_ADMIN
    else:
        session.level = USER
    session.record = record
    session.output = output
    if output == SILENT:
        return [wire.OK]
    domain = grant.domain
    return [wire.OK_MORE, f"vpopmail_dir {session.settings.vpopmail_home}", f"domain_dir {domain.dir}",
            f"uid {domain.uid}", f"gid {domain.gid}", *user_info_lines(record, output == COMPACT), wire.END]


def login(session: Session, words: wire.Words) -> list[str]:
    return _login(session, words, FULL)


def clogin(session: Session, words: wire.Words) -> list[str]:
    return _login(session, words, COMPACT)


def slogin(session: Session, words: wire.Words) -> list[str]:
    return _login(session, words, SILENT)


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


# ------------------------------------------------------------------ users


def user_info(session: Session, words: wire.Words) -> list[str]:
    _domain, record = _account(session, words, (602, 603, 604, 605), users_own=False)
    return [wire.OK_MORE, *user_info_lines(record, session.output != FULL), wire.END]


def add_user(session: Session, words: wire.Words) -> list[str]:
    from vpop.admin.users import create_user

    text = _required(words, wire.EMAIL_REQD, 302)
    user, name = _address(session, text, 303)
    found = _find(session, name)
    _own_domain(session, found, 304)
    password = _new_password(words.rest(), 305)
    if found is None:
        raise wire.Refusal(0, 305, "Domain does not exist")
    create_user(session.settings, session.store, found, user, password)
    _audit(session, "add_user")
    return [wire.OK]


def del_user(session: Session, words: wire.Words) -> list[str]:
    from vpop.admin.users import delete_user

    found, record = _account(session, words, (402, 403, 404, 405), users_own=False)
    _not_a_system_admin(session, record, 406)
    delete_user(session.settings, session.store, found, record.name)
    _audit(session, "del_user")
    return [wire.OK]


def mod_user(session: Session, words: wire.Words) -> list[str]:
    """``mod_user user@domain``: checks, ``+OK `` at once, ``param value`` lines up to ``.``, then
    the answer.  The change is made only after the ``.``, whole or not at all."""
    from vpop.admin.changes import effective_user_flags

    try:
        found, record = _account(session, words, (501, 502, 504 if session.level == USER else 503, 505),
                                 users_own=True)
        _not_a_system_admin(session, record, 508)
        own = found.real == session.domain.real and record.name == session.user
        if session.level == USER and effective_user_flags(session.settings, session.store, found,
                                                          record.gid) & NO_PASSWD_CHNG:
            # A user can change nothing but their password and preferences; Roundcube reads only
            # this first answer, so a refusal must come now (vpopmail answered +OK and ignored it).
            raise wire.Refusal(wire.PASSWD_CHNG_REFUSED, 506, reason="NO_PASSWD_CHNG is set")
    except wire.Refusal:
        session.draining = True
        raise
    session.connection.send([wire.OK])
    lines, too_long = session.read_block("mod_user")
    if too_long:
        raise wire.Refusal(wire.LINE_TOO_LONG, 507, reason="a parameter line was too long")
    change, names = _user_change(lines)

    def allow(old, new, flags: int) -> None:
        _allowed_change(session, change, old, new, flags, own, names)

    from vpop.admin.changes import modify_user

    modify_user(session.settings, session.store, found, record.name, change, shown_domain=found.real,
                allow=allow)
    _audit(session, "mod_user", " ".join(names))
    return [wire.OK]


def _user_change(lines: "list[bytes]"):
    """The ``param value`` lines of a mod_user as a :class:`vpop.admin.changes.UserChange`."""
    from vpop.admin.changes import UserChange, check_crypted, check_gecos
    from vpop.admin.cli import AdminError
    from vpop.admin.users import format_quota

    change = UserChange()
    names: list[str] = []
    for line in lines:
        words = wire.Words(line)
        name = words.text(wire.PARAM_TOKENS)
        if name is None:
            continue
        raw = words.rest()
        if name not in MOD_USER_PARAMS:
            raise wire.Refusal(wire.INVALID_PARAM, 507, reason=f"unknown parameter {_shown(name)[:40]}")
        if raw is None:
            raise wire.Refusal(wire.INVALID_PARAM, 507, reason=f"{name} without a value")
        names.append(name)
        try:
            value = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise wire.Refusal(wire.INVALID_PARAM, 507, reason=f"{name} is not UTF-8") from None
        try:
            if name == "comment":
                change.gecos = check_gecos(value)
            elif name == "quota":
                change.quota = format_quota(value.strip().upper())
            elif name == "encrypted_password":
                change.crypted = check_crypted(value.strip())
            elif name == "clear_text_password":
                change.password = _new_password(raw, 507)
            elif name == "clear_all_flags":
                change.clear_all = value.strip() == "1" or change.clear_all
            else:
                bit = FLAG_PARAMS[name][0]
                flag = value.strip()
                if flag not in ("0", "1"):
                    raise wire.Refusal(wire.INVALID_PARAM, 507, reason=f"{name} takes 0 or 1")
                if flag == "1":
                    change.set_bits, change.clear_bits = change.set_bits | bit, change.clear_bits & ~bit
                else:
                    change.clear_bits, change.set_bits = change.clear_bits | bit, change.set_bits & ~bit
        except AdminError as exc:
            text = exc.message.removeprefix("Error: ")
            raise wire.Refusal(0, 507, text, reason=name) from None
    return change, names


def _may(session: Session, rule: str) -> bool:
    if rule == ANYONE:
        return True
    if rule == DOMAIN:
        return session.level >= DOMAIN_ADMIN
    if rule == OVERRIDE:
        return session.level == SYSTEM_ADMIN or (session.level == DOMAIN_ADMIN
                                                  and bool(session.record.gid & V_OVERRIDE))
    return session.level == SYSTEM_ADMIN


def _allowed_change(session: Session, change, old, new, flags: int, own: bool, names: "list[str]") -> None:
    """Refuse what the logged-in user may not change; a line that changes nothing is allowed
    (Net_Vpopmaild sends every flag at its current value)."""
    changed = old.gid ^ new.gid
    rules = {bit: rule for bit, rule in FLAG_PARAMS.values()}
    for bit in (1 << n for n in range(32)):
        if changed & bit and not _may(session, rules.get(bit, SYSTEM)):
            name = next((n for n, (b, _) in FLAG_PARAMS.items() if b == bit), f"flag {bit:#x}")
            raise wire.Refusal(wire.NOT_AUTHORIZED, 507, reason=f"may not change {name}")
    if new.shell != old.shell and not _may(session, OVERRIDE):
        raise wire.Refusal(wire.NOT_AUTHORIZED, 507, reason="may not change the quota")
    if change.crypted is not None and new.passwd != old.passwd and session.level < SYSTEM_ADMIN:
        raise wire.Refusal(wire.NOT_AUTHORIZED, 507, reason="encrypted_password is for system admins")
    if (change.password is not None or change.crypted is not None) and own and flags & NO_PASSWD_CHNG:
        raise wire.Refusal(wire.PASSWD_CHNG_REFUSED, 507, reason="NO_PASSWD_CHNG is set")


def user_count(session: Session, words: wire.Words) -> list[str]:
    found = _domain_arg(session, words, 2602, 2603, 2604)
    return [wire.OK_MORE, f"count {len(session.store.list_users(found))}", wire.END]


def list_users(session: Session, words: wire.Words) -> list[str]:
    found = _domain_arg(session, words, 2702, 2703, 2704)
    span = _page(words)
    lines = [wire.OK_MORE]
    for record in _paged(session.store.list_users(found), span):
        lines += user_info_lines(record, session.output != FULL) + [""]
    return lines + [wire.END]


def get_lastauth(session: Session, words: wire.Words) -> list[str]:
    found, record = _account(session, words, (3702, 3703, 3704, 3705), users_own=True)
    if not session.settings.auth_logging:
        return [wire.OK_MORE, wire.END]
    when, ip = session.store.get_lastauth(record, found) or (0, "0.0.0.0")
    return [wire.OK_MORE, f"time {when}", f"ip {ip or '0.0.0.0'}", wire.END]


def get_user_size(session: Session, words: wire.Words) -> list[str]:
    from vpop.admin.changes import maildir_usage

    found, record = _account(session, words, (3802, 3803, 3804, 3805), users_own=True)
    size, count = maildir_usage(session.settings, found, record)
    return [wire.OK_MORE, f"size {size}", f"count {count}", wire.END]


def get_domain_size(session: Session, words: wire.Words) -> list[str]:
    from vpop.admin.changes import maildir_usage

    found = _domain_arg(session, words, 3902, 3903, 3904)
    lines = [wire.OK_MORE]
    total_size = total_count = 0
    for record in session.store.list_users(found):
        size, count = maildir_usage(session.settings, found, record)
        lines += [f"user {record.name}@{found.real}", f"size {size}", f"count {count}"]
        total_size += size
        total_count += count
    return lines + [f"domain {found.real}", f"size {total_size}", f"count {total_count}", wire.END]


# ------------------------------------------------------------------ domains


def list_domains(session: Session, words: wire.Words) -> list[str]:
    from vpop.admin.domains import read_entries

    span = _page(words)
    entries = read_entries(session.settings)
    if entries is None:
        raise wire.Refusal(wire.NO_OPEN_ASSIGN, 2302)
    return [wire.OK_MORE, *(f"{e.real} {e.domain}" for e in _paged(entries, span)), wire.END]


def find_domain(session: Session, words: wire.Words) -> list[str]:
    from vpop.admin.domains import read_entries
    from vpop.numbers import atoi

    name = _required(words, wire.DOMAIN_REQD, 2402).lower()
    session.target = _shown(name)
    per_page = atoi(words.text() or "")
    entries = read_entries(session.settings)
    if entries is None:
        raise wire.Refusal(wire.NO_OPEN_ASSIGN, 2403)
    index = next((i for i, entry in enumerate(entries) if entry.domain == name), None)
    if index is None:
        return [wire.OK_MORE, wire.END]
    page = index // per_page + 1 if per_page > 0 else index + 1
    return [wire.OK_MORE, f"page {page}", wire.END]


def domain_count(session: Session, words: wire.Words) -> list[str]:
    from vpop.admin.domains import read_entries

    entries = read_entries(session.settings)
    if entries is None:
        raise wire.Refusal(wire.NO_OPEN_ASSIGN, 2502)
    return [wire.OK_MORE, f"count {len(entries)}", wire.END]


def add_domain(session: Session, words: wire.Words) -> list[str]:
    from vpop.admin import domains

    name = _required(words, wire.DOMAIN_REQD, 802)
    session.target = _shown(name)
    password = _new_password(words.rest(), 803)
    settings = session.settings
    name = domains.domain_name(name)
    domains.heal(settings)
    if domains.taken(settings, name):
        raise wire.Refusal(0, 804, domains.DOMAIN_EXISTS.removeprefix("Error: "))
    uid, gid, _home = domains.vpopmail_ids()
    from vpop.admin.cli import AdminError

    try:
        domains.vadddomain(settings, name, password, uid=uid, gid=gid,
                           qmail_default=domains.delivery_line(settings))
    except AdminError as exc:
        text = " ".join(exc.message.removeprefix("Error: ").split())
        raise wire.Refusal(0, 805 if text.startswith("(vadduser)") else 804, text) from None
    _audit(session, "add_domain")
    return [wire.OK]


def del_domain(session: Session, words: wire.Words) -> list[str]:
    from vpop.admin import domains

    text = _required(words, wire.DOMAIN_REQD, 1302)
    session.target = _shown(text)
    name = domains.lookup_name(text)
    if not name:
        raise wire.Refusal(0, 1303, domains.DOMAIN_MISSING.removeprefix("Error: "))
    domains.heal(session.settings)
    domains.delete_domain(session.settings, session.store, name)
    _audit(session, "del_domain")
    return [wire.OK]


def add_alias_domain(session: Session, words: wire.Words) -> list[str]:
    from vpop.admin import domains

    real = _required(words, wire.DOMAIN_REQD, 1202).lower()
    alias = _required(words, wire.ALIAS_REQD, 1203).lower()
    session.target = _shown(f"{alias} -> {real}")
    settings = session.settings
    domains.heal(settings)
    found = domains.known(settings, real)
    if found is None and domains.known(settings, alias) is not None:
        real, alias = alias, real  # either order, as vaddaliasdomain takes them
        found = domains.known(settings, real)
    if found is None:
        raise wire.Refusal(0, 1204, domains.DOMAIN_MISSING.removeprefix("Error: "))
    domains.add_alias_domain(settings, domains.domain_name(alias), found)
    _audit(session, "add_alias_domain")
    return [wire.OK]


def dom_info(session: Session, words: wire.Words) -> list[str]:
    from vpop.admin import domains

    text = _required(words, wire.DOMAIN_REQD, 1402)
    session.target = _shown(text)
    own, aliases = domains.domain_group(session.settings, domains.lookup_name(text), prefix="")
    if own is None:
        raise wire.Refusal(0, 1404, domains.DOMAIN_MISSING.removeprefix("Error: "))
    return [wire.OK_MORE, f"domain {own.domain}", f"path {own.dir}", f"uid {own.uid}", f"gid {own.gid}",
            *(f"alias {entry.domain}" for entry in aliases), wire.END]


# ------------------------------------------------------------------ limits


def get_limits(session: Session, words: wire.Words) -> list[str]:
    from vpop.admin import limits

    found = _domain_arg(session, words, 3402, 3404, 3403, wire.NO_GET_LIMITS)
    values = limits.read_domain(session.settings, session.store, found)
    lines = [wire.OK_MORE]
    lines += [f"{name} {values[column]}" for name, column in LIMIT_NUMBERS]
    lines += [f"{name} {1 if values[column] else 0}" for name, column in LIMIT_FLAGS]
    lines += [f"{name} {values[name]}" for name in LIMIT_PERMS]
    return lines + [wire.END]


def set_limits(session: Session, words: wire.Words) -> list[str]:
    from vpop.admin import limits

    found = _domain_arg(session, words, 3502, 3503, 3505, wire.NO_GET_LIMITS)
    values = limits.read_domain(session.settings, session.store, found)
    session.connection.send([wire.OK])
    lines, too_long = session.read_block("set_limits")
    if too_long:
        raise wire.Refusal(wire.LINE_TOO_LONG, 3506, reason="a parameter line was too long")
    numbers, flags = dict(LIMIT_NUMBERS), dict(LIMIT_FLAGS)
    names = []
    for line in lines:
        line_words = wire.Words(line)
        name = line_words.text(wire.PARAM_TOKENS)
        if name is None:
            continue
        value = line_words.text(wire.PARAM_TOKENS)
        if value is None:
            raise wire.Refusal(wire.INVALID_PARAM, 3506, reason=f"{_shown(name)[:40]} without a value")
        names.append(name)
        try:
            if name in numbers:
                values[numbers[name]] = limits.number(value, signed=name.startswith("max_"))
            elif name in flags:
                if value not in ("0", "1"):
                    raise ValueError
                values[flags[name]] = int(value)
            elif name in LIMIT_PERMS:
                perm = limits.number(value, signed=False)
                if perm > limits.DISABLE_ALL:
                    raise ValueError
                values[name] = perm
            else:
                raise wire.Refusal(wire.INVALID_PARAM, 3506, reason=f"unknown limit {_shown(name)[:40]}")
        except (ValueError, limits.AdminError):
            raise wire.Refusal(wire.INVALID_PARAM, 3506, reason=f"bad value for {name}") from None
    try:
        limits.write_domain(session.settings, session.store, found, values)
    except OSError as exc:
        from vpop import log as vlog

        session.say(vlog.INTERNAL, f"set_limits {found.real}: {exc} {session.who()}")
        raise wire.Refusal(wire.NO_SET_LIMITS, 3504) from None
    _audit(session, "set_limits", " ".join(names))
    return [wire.OK]


def del_limits(session: Session, words: wire.Words) -> list[str]:
    from vpop.admin import limits

    found = _domain_arg(session, words, 3602, 3602, 3603)
    limits.delete_domain(session.settings, session.store, found)
    _audit(session, "del_limits")
    return [wire.OK]


# ------------------------------------------------------------------ aliases


def _alias_arg(session: Session, words: wire.Words, minors: "tuple[int, int, int]"):
    """``alias@domain`` of the alias commands: (alias, domain); minors: required, invalid, not yours."""
    from vpop.admin.aliases import check_alias_name
    from vpop.admin.cli import AdminError

    text = _required(words, wire.ALIAS_REQD, minors[0])
    alias, name = _address(session, text, minors[1], wire.INVALID_ALIAS)
    found = _find(session, name)
    _own_domain(session, found, minors[2])
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
    alias, found = _alias_arg(session, words, (902, 903, 904))
    line = _alias_line(session, words, 906, 908)
    session.store.connect_for_updates()
    if not session.store.insert_valias(alias, found, line):
        raise wire.Refusal(wire.ALIAS_INSERT_FAIL, 907, reason="the alias has that line already")
    _audit(session, "add_alias")
    return [wire.OK]


def remove_alias(session: Session, words: wire.Words) -> list[str]:
    alias, found = _alias_arg(session, words, (1002, 1003, 1004))
    line = _alias_line(session, words, 1006, 1008)
    session.store.connect_for_updates()
    if not session.store.remove_valias_line(alias, found, line):
        raise wire.Refusal(wire.ALIAS_REMOVE_FAIL, 1007, reason="no such line")
    _audit(session, "remove_alias")
    return [wire.OK]


def delete_alias(session: Session, words: wire.Words) -> list[str]:
    alias, found = _alias_arg(session, words, (1102, 1103, 1104))
    session.store.connect_for_updates()
    if not session.store.delete_valias(alias, found):
        raise wire.Refusal(wire.ALIAS_DELETE_FAIL, 1106, reason="no such alias")
    _audit(session, "delete_alias")
    return [wire.OK]


def list_alias(session: Session, words: wire.Words) -> list[str]:
    """``list_alias domain`` (every alias) or ``list_alias alias@domain``: ``alias@domain line``."""
    text = _required(words, wire.DOMAIN_REQD, 2802)
    if "@" in text:
        alias, found = _alias_arg(session, wire_words(text), (2802, 2803, 2804))
    else:
        alias = None
        session.target = _shown(text)
        found = _find(session, text)
        _own_domain(session, found, 2804)
        if found is None:
            raise wire.Refusal(0, 2803, "Domain does not exist")
    shown = found.name
    pairs = session.store.list_valiases(found, alias)
    return [wire.OK_MORE, *(f"{name}@{shown} {line}" for name, line in pairs), wire.END]


def wire_words(text: str) -> wire.Words:
    return wire.Words(text.encode("utf-8", "surrogateescape"))


# ------------------------------------------------------------------ the IP map


def _ip_map_available(minor: int, session: Session) -> None:
    if not session.settings.ip_alias_domains:
        raise wire.Refusal(wire.NOT_AVAIL, minor, reason="ip_alias_domains = no")


def _ip(words: wire.Words, major: int, minor: int, invalid_minor: int) -> str:
    from vpop.admin.aliases import check_ip
    from vpop.admin.cli import AdminError

    text = _required(words, major, minor)
    try:
        return check_ip(text)
    except AdminError:
        raise wire.Refusal(0, invalid_minor, "invalid IP address") from None


def get_ip_map(session: Session, words: wire.Words) -> list[str]:
    _ip_map_available(3004, session)
    ip = _ip(words, wire.IP_REQUIRED, 3002, 3003)
    session.target = ip
    domain = next((d for mapped, d in session.store.ip_map() if mapped == ip), None)
    if domain is None:
        raise wire.Refusal(0, 3003, "no domain for that IP")
    return [wire.OK_MORE, f"{ip} {domain}", wire.END]


def add_ip_map(session: Session, words: wire.Words) -> list[str]:
    _ip_map_available(3106, session)
    ip = _ip(words, wire.IP_REQD, 3102, 3105)
    name = _required(words, wire.DOMAIN_REQD, 3103).lower()
    session.target = _shown(f"{ip} {name}")
    if _find(session, name) is None:
        raise wire.Refusal(wire.INVALID_DOMAIN, 3104)
    session.store.connect_for_updates()
    session.store.add_ip_map(ip, name)
    _audit(session, "add_ip_map")
    return [wire.OK]


def del_ip_map(session: Session, words: wire.Words) -> list[str]:
    _ip_map_available(3205, session)
    ip = _ip(words, wire.IP_REQUIRED, 3202, 3204)
    name = _required(words, wire.DOMAIN_REQD, 3203).lower()
    session.target = _shown(f"{ip} {name}")
    session.store.connect_for_updates()
    if not session.store.delete_ip_map(ip, name):
        raise wire.Refusal(0, 3204, "no such mapping")
    _audit(session, "del_ip_map")
    return [wire.OK]


def show_ip_map(session: Session, words: wire.Words) -> list[str]:
    _ip_map_available(3302, session)
    return [wire.OK_MORE, *(f"{ip} {domain}" for ip, domain in session.store.ip_map()), wire.END]


# ------------------------------------------------------------------ not offered


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
