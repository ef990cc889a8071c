"""vpopmaild's account commands: the logins, user_info, add_user, del_user, mod_user, the lists,
lastauth and sizes.

``mod_user``: the checks, ``+OK `` at once, ``param value`` lines up to ``.``, then the answer;
the change is made after the ``.``, whole or not at all (:func:`vpop.admin.changes.modify_user`).
Where vpopmail allowed more than it meant: a ``mod_user`` of one's own account under
NO_PASSWD_CHNG is refused at ``mod_user`` itself, at every level (the one line Roundcube reads;
vpopmail answered ``+OK`` and ignored the password); ``encrypted_password``, SA_ADMIN,
SA_EXPERT and V_OVERRIDE are for system admins; a domain admin cannot read, change or delete a
system admin's account; a line that changes nothing is
allowed whoever sends it (Net_Vpopmaild sends every flag at its current value); an unknown
parameter or a bad value refuses the whole change (vpopmail skipped it).
"""

from vpopmaild import arguments, wire
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
    session.target = arguments.shown(email.decode("utf-8", "replace"))
    attempt = auth.Attempt(session.environ, session.settings.vpopmaild_service, session.ip, "vpopmaild",
                           session.log, log_passwords=False)  # never, whatever the logging level
    try:
        grant = auth.authenticate(attempt, session.settings, email, password, record_login=False)
    except AuthFailure as exc:
        # the engine has logged why; one answer for "no such user", "wrong password" and "right
        # password, service denied" (a different answer would confirm the password)
        minor = 205 if exc.vpopmail_code == 20 else 207
        raise LoginFailed(wire.INVALID_LOGIN, minor, reason="logged by the engine") from None
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


def user_info(session: Session, words: wire.Words) -> list[str]:
    _domain, record = arguments.account(session, words, (602, 603, 604, 605), users_own=False)
    arguments.not_a_system_admin(session, record, 606)
    return [wire.OK_MORE, *user_info_lines(record, session.output != FULL), wire.END]


def add_user(session: Session, words: wire.Words) -> list[str]:
    from vpop.admin.users import create_user

    text = arguments.required(words, wire.EMAIL_REQD, 302)
    user, name = arguments.address(session, text, 303)
    found = arguments.find_domain(session, name)
    arguments.own_domain(session, found, 304)
    password = arguments.new_password(words.rest(), 305)
    if found is None:
        raise wire.Refusal(0, 305, "Domain does not exist")
    create_user(session.settings, session.store, found, user, password)
    arguments.audit(session, "add_user")
    return [wire.OK]


def del_user(session: Session, words: wire.Words) -> list[str]:
    from vpop.admin.users import delete_user

    found, record = arguments.account(session, words, (402, 403, 404, 405), users_own=False)
    arguments.not_a_system_admin(session, record, 406)
    delete_user(session.settings, session.store, found, record.name)
    arguments.audit(session, "del_user")
    return [wire.OK]


def mod_user(session: Session, words: wire.Words) -> list[str]:
    """``mod_user user@domain``: checks, ``+OK `` at once, ``param value`` lines up to ``.``, then
    the answer.  The change is made only after the ``.``, whole or not at all."""
    from vpop.admin.users import effective_user_flags

    try:
        denied = 504 if session.level == USER else 503
        found, record = arguments.account(session, words, (501, 502, denied, 505), users_own=True)
        arguments.not_a_system_admin(session, record, 508)
        own = found.real == session.domain.real and record.name == session.user
        if own and effective_user_flags(session.settings, session.store, found, record.gid) & NO_PASSWD_CHNG:
            # Roundcube changes the password of whoever logged in (a postmaster or a system admin
            # too) and reads only this first answer, so a refusal must come now (vpopmail answered
            # +OK, ignored the password and Roundcube reported success).
            raise wire.Refusal(wire.PASSWD_CHNG_REFUSED, 506, reason="NO_PASSWD_CHNG is set")
    except BaseException:
        # whatever failed before the ack (a refusal, a database that is down): the parameter
        # lines a client sent without waiting must not be taken for commands
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
    arguments.audit(session, "mod_user", " ".join(names))
    return [wire.OK]


def _user_change(lines: "list[bytes]"):
    """The ``param value`` lines of a mod_user as a :class:`vpop.admin.changes.UserChange`."""
    from vpop.admin.changes import UserChange, check_crypted
    from vpop.admin.cli import AdminError
    from vpop.admin.users import check_gecos, format_quota

    change = UserChange()
    names: list[str] = []
    for line in lines:
        words = wire.Words(line)
        name = words.text(wire.PARAM_TOKENS)
        if name is None:
            continue
        raw = words.rest()
        if name not in MOD_USER_PARAMS:
            unknown = arguments.shown(name[:40])
            raise wire.Refusal(wire.INVALID_PARAM, 507, reason=f"unknown parameter {unknown}")
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
                change.password = arguments.new_password(raw, 507)
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
    found = arguments.domain_arg(session, words, 2602, 2603, 2604)
    return [wire.OK_MORE, f"count {len(session.store.list_users(found))}", wire.END]


def list_users(session: Session, words: wire.Words) -> list[str]:
    found = arguments.domain_arg(session, words, 2702, 2703, 2704)
    span = arguments.page(words)
    lines = [wire.OK_MORE]
    for record in arguments.paged(session.store.list_users(found), span):
        if session.level < SYSTEM_ADMIN and record.gid & SA_ADMIN:
            record.passwd = record.clear = ""  # a system admin's password is not a domain admin's to read
        lines += user_info_lines(record, session.output != FULL) + [""]
    return lines + [wire.END]


def get_lastauth(session: Session, words: wire.Words) -> list[str]:
    found, record = arguments.account(session, words, (3702, 3703, 3704, 3705), users_own=True)
    if not session.settings.auth_logging:
        return [wire.OK]  # as vpopmaild.c without auth logging: no lines, no "."
    when, ip = session.store.get_lastauth(record, found) or (0, "0.0.0.0")
    return [wire.OK_MORE, f"time {when}", f"ip {ip or '0.0.0.0'}", wire.END]


def get_user_size(session: Session, words: wire.Words) -> list[str]:
    from vpop.admin.changes import maildir_usage

    found, record = arguments.account(session, words, (3802, 3803, 3804, 3805), users_own=True)
    size, count = maildir_usage(session.settings, found, record)
    return [wire.OK_MORE, f"size {size}", f"count {count}", wire.END]


def get_domain_size(session: Session, words: wire.Words) -> list[str]:
    from vpop.admin.changes import maildir_usage

    found = arguments.domain_arg(session, words, 3902, 3903, 3904)
    lines = [wire.OK_MORE]
    total_size = total_count = 0
    for record in session.store.list_users(found):
        size, count = maildir_usage(session.settings, found, record)
        lines += [f"user {record.name}@{found.real}", f"size {size}", f"count {count}"]
        total_size += size
        total_count += count
    return lines + [f"domain {found.real}", f"size {total_size}", f"count {total_count}", wire.END]
