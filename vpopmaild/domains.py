"""vpopmaild's domain commands: listing and counting domains, add_domain, del_domain,
add_alias_domain, dom_info, the limits and the IP map; all for system admins, get_limits also
for a domain's own admin (vpopmail's table said so, its code asked for SA_ADMIN).

``set_limits``: ``+OK `` at once, ``name value`` lines up to ``.``, then the answer; an unknown
name or a bad value refuses the whole change (vpopmail answered ``  Warning: ...`` lines in the
middle of the exchange and set the rest).  ``get_limits`` prints ``perm_quota`` as it is stored
and the mailing-list users' and moderators' bits on lines of their own (vpopmail folded them
into ``perm_quota``, and printed ``perm_defaultquota`` twice).  The IP map needs
``ip_alias_domains = yes`` (vpopmail: ``--enable-ip-alias-domains``), else ``-ERR 33``.
"""

from vpop.names import ascii_lower

from vpopmaild import arguments, wire
from vpopmaild.session import Session

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


def list_domains(session: Session, words: wire.Words) -> list[str]:
    from vpop.admin.domains import read_entries

    span = arguments.page(words)
    entries = read_entries(session.settings)
    if entries is None:
        raise wire.Refusal(wire.NO_OPEN_ASSIGN, 2302)
    return [wire.OK_MORE, *(f"{e.real} {e.domain}" for e in arguments.paged(entries, span)), wire.END]


def find_domain(session: Session, words: wire.Words) -> list[str]:
    from vpop.admin.domains import read_entries
    from vpop.numbers import atoi

    name = ascii_lower(arguments.required(words, wire.DOMAIN_REQD, 2402))
    session.target = arguments.shown(name)
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

    name = arguments.required(words, wire.DOMAIN_REQD, 802)
    session.target = arguments.shown(name)
    password = arguments.new_password(words.rest(), 803)
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
    arguments.audit(session, "add_domain")
    return [wire.OK]


def del_domain(session: Session, words: wire.Words) -> list[str]:
    from vpop.admin import domains

    text = arguments.required(words, wire.DOMAIN_REQD, 1302)
    session.target = arguments.shown(text)
    name = domains.lookup_name(text)
    if not name:
        raise wire.Refusal(0, 1303, domains.DOMAIN_MISSING.removeprefix("Error: "))
    domains.heal(session.settings)
    domains.delete_domain(session.settings, session.store, name)
    arguments.audit(session, "del_domain")
    return [wire.OK]


def add_alias_domain(session: Session, words: wire.Words) -> list[str]:
    from vpop.admin import domains

    real = ascii_lower(arguments.required(words, wire.DOMAIN_REQD, 1202))
    alias = ascii_lower(arguments.required(words, wire.ALIAS_REQD, 1203))
    session.target = arguments.shown(f"{alias} -> {real}")
    settings = session.settings
    domains.heal(settings)
    alias, found = domains.alias_and_real(settings, real, alias)  # either order, as vaddaliasdomain
    domains.add_alias_domain(settings, alias, found)
    arguments.audit(session, "add_alias_domain")
    return [wire.OK]


def dom_info(session: Session, words: wire.Words) -> list[str]:
    from vpop.admin import domains

    text = arguments.required(words, wire.DOMAIN_REQD, 1402)
    session.target = arguments.shown(text)
    own, aliases = domains.domain_group(session.settings, domains.lookup_name(text), prefix="")
    if own is None:
        raise wire.Refusal(0, 1404, domains.DOMAIN_MISSING.removeprefix("Error: "))
    return [wire.OK_MORE, f"domain {own.domain}", f"path {own.dir}", f"uid {own.uid}", f"gid {own.gid}",
            *(f"alias {entry.domain}" for entry in aliases), wire.END]


# ------------------------------------------------------------------ limits


def get_limits(session: Session, words: wire.Words) -> list[str]:
    from vpop.admin import limits

    found = arguments.domain_arg(session, words, 3402, 3404, 3403, wire.NO_GET_LIMITS)
    values = limits.read_domain(session.settings, session.store, found)
    lines = [wire.OK_MORE]
    lines += [f"{name} {values[column]}" for name, column in LIMIT_NUMBERS]
    lines += [f"{name} {1 if values[column] else 0}" for name, column in LIMIT_FLAGS]
    lines += [f"{name} {values[name]}" for name in LIMIT_PERMS]
    return lines + [wire.END]


def set_limits(session: Session, words: wire.Words) -> list[str]:
    from vpop.admin import limits

    found = arguments.domain_arg(session, words, 3502, 3503, 3505, wire.NO_GET_LIMITS)
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
            shown = arguments.shown(name[:40])
            raise wire.Refusal(wire.INVALID_PARAM, 3506, reason=f"{shown} without a value")
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
                unknown = arguments.shown(name[:40])
                raise wire.Refusal(wire.INVALID_PARAM, 3506, reason=f"unknown limit {unknown}")
        except (ValueError, limits.AdminError):
            raise wire.Refusal(wire.INVALID_PARAM, 3506, reason=f"bad value for {name}") from None
    try:
        limits.write_domain(session.settings, session.store, found, values)
    except OSError as exc:
        from vpop import log as vlog

        session.say(vlog.INTERNAL, f"set_limits {found.real}: {exc} {session.who()}")
        raise wire.Refusal(wire.NO_SET_LIMITS, 3504) from None
    arguments.audit(session, "set_limits", " ".join(names))
    return [wire.OK]


def del_limits(session: Session, words: wire.Words) -> list[str]:
    from vpop.admin import limits

    found = arguments.domain_arg(session, words, 3602, 3602, 3603)
    limits.delete_domain(session.settings, session.store, found)
    arguments.audit(session, "del_limits")
    return [wire.OK]


def _ip_map_available(minor: int, session: Session) -> None:
    if not session.settings.ip_alias_domains:
        raise wire.Refusal(wire.NOT_AVAIL, minor, reason="ip_alias_domains = no")


def _ip(words: wire.Words, major: int, minor: int, invalid_minor: int) -> str:
    from vpop.admin.aliases import check_ip
    from vpop.admin.cli import AdminError

    text = arguments.required(words, major, minor)
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
    name = ascii_lower(arguments.required(words, wire.DOMAIN_REQD, 3103))
    session.target = arguments.shown(f"{ip} {name}")
    if arguments.find_domain(session, name) is None:
        raise wire.Refusal(wire.INVALID_DOMAIN, 3104)
    session.store.connect_for_updates()
    session.store.add_ip_map(ip, name)
    arguments.audit(session, "add_ip_map")
    return [wire.OK]


def del_ip_map(session: Session, words: wire.Words) -> list[str]:
    _ip_map_available(3205, session)
    ip = _ip(words, wire.IP_REQUIRED, 3202, 3204)
    name = ascii_lower(arguments.required(words, wire.DOMAIN_REQD, 3203))
    session.target = arguments.shown(f"{ip} {name}")
    session.store.connect_for_updates()
    if not session.store.delete_ip_map(ip, name):
        raise wire.Refusal(0, 3204, "no such mapping")
    arguments.audit(session, "del_ip_map")
    return [wire.OK]


def show_ip_map(session: Session, words: wire.Words) -> list[str]:
    _ip_map_available(3302, session)
    return [wire.OK_MORE, *(f"{ip} {domain}" for ip, domain in session.store.ip_map()), wire.END]
