"""Render qmail-mysql's ``virtual``, ``alias`` and ``rcpthosts`` tables into stock qmail's files.

The qmail-mysql patch made qmail-send and qmail-smtpd query MySQL.  With a stock qmail the
same routing comes from files that this module computes (and :mod:`qmail_mysql_sync` writes):

* ``control/rcpthosts`` (first 50 names, qmail's limit) and ``control/morercpthosts``
  (+ its cdb): the ``rcpthosts`` table merged with the list the site keeps by hand.
* ``control/virtualdomains``: ``host:P-host`` for every host of the ``virtual`` table
  (``P`` = the ``virtual_prefix`` setting), so ``x@host`` arrives as local ``P-host-x``.
* ``users/assign``: ``=P-host-x:user:uid:gid:home:dash:ext:`` for every explicit row
  (delivered straight to the mailbox user, with ``ext`` as the extension); for
  ``ext = '@'`` catch-alls ``+P-host-:user:uid:gid:home:-::`` (``x@host`` -> ``user-x``);
  for every host ``+P-host-:alias:...:-:P-host-:`` and a ``.qmail-P-host-default`` in the
  alias user's home that forwards to the catch-all user or, without one, bounces.
  Explicit rows beat catch-alls because qmail-lspawn prefers ``=`` entries.
* ``.qmail`` / ``.qmail-ALIAS`` files in each user's home for ``alias`` rows; several
  rows for one alias make a list; ``.``, ``/`` and ``|`` in ``alias_username`` start a
  line continued by ``alias_host``; ``alias = '@'`` is ``.qmail-default``.

Rows that make no sense (blank user, unknown user, an empty delivery line) are reported with
their table and key and skipped; nothing about them is half-written.
"""

BOUNCE_LINE = '|echo "Sorry, no mailbox here by that name. (#5.1.1)"; exit 100'
RCPTHOSTS_LIMIT = 50


class Identity:
    """uid, gid and home of a user (mailbox table or /etc/passwd)."""

    __slots__ = ("name", "uid", "gid", "home")

    def __init__(self, name: str, uid: int, gid: int, home: str) -> None:
        self.name, self.uid, self.gid, self.home = name, uid, gid, home


class Plan:
    """What the tables say: files by path, assign/virtualdomains lines, problems."""

    def __init__(self) -> None:
        self.assign: list[str] = []
        self.virtualdomains: list[str] = []
        self.rcpthosts: list[str] = []
        self.dot_qmail: dict[str, tuple[str, int, int]] = {}  # path -> (text, uid, gid)
        self.problems: list[str] = []


def safe_ext(name: str) -> str:
    """qmail-local's file-name form of an extension: lower case, ``.`` -> ``:``."""
    return name.lower().replace(".", ":")


def _text(value) -> str:
    return "" if value is None else str(value).strip()


def _clean(value: str) -> bool:
    """A name usable in users/assign and file names: no ``:``, ``/``, blanks or controls."""
    return bool(value) and not any(c in ":/\\" or ord(c) <= 32 for c in value)


def _plain(value: str) -> bool:
    """Text that may stand in a users/assign field or a .qmail line: no ``:``, no controls."""
    return ":" not in value and not any(ord(c) < 32 or ord(c) == 127 for c in value)


def usable_identity(user: Identity | None) -> bool:
    """A user whose name and home can be written into users/assign without forging fields."""
    return user is not None and _clean(user.name) and user.home.startswith("/") and _plain(user.home)


def home_owned(user: Identity) -> bool:
    """qmail-getpw's test (uid != 0, the home's owner is uid): only then are .qmail files written there
    -- never as root into a missing directory, one that belongs to someone else, or through a link
    (``lstat``: root writes through the directory's own descriptor, see ``Sync.put``)."""
    import os
    import stat

    try:
        info = os.lstat(user.home)
    except OSError:
        return False
    return (user.uid != 0 and user.home.startswith("/") and stat.S_ISDIR(info.st_mode)
            and info.st_uid == user.uid)


def alias_line(alias_username: str, alias_host: str) -> str | None:
    """The .qmail line of one alias row, or None when the row makes no delivery."""
    if alias_username in (".", "/", "|"):
        return alias_username + alias_host if alias_host else None
    if not alias_username:
        return None
    return f"{alias_username}@{alias_host}" if alias_host else alias_username


def render(virtual_rows, alias_rows, rcpthost_rows, manual_hosts: list[str], find_user, prefix: str,
           me: str) -> Plan:
    """Compute the plan.  ``find_user(name) -> Identity | None``; ``me`` qualifies forwards."""
    plan = Plan()
    hosts = {h.lower() for h in manual_hosts if h and not h.startswith("#")}
    for (host,) in rcpthost_rows:
        host = _text(host).lower()
        if host and _clean(host):
            hosts.add(host)
        else:
            plan.problems.append(f"rcpthosts: bad host {host!r} skipped")
    plan.rcpthosts = sorted(hosts)

    alias_user = find_user("alias")
    if alias_user is not None and not usable_identity(alias_user):
        plan.problems.append("mailbox/passwd 'alias': name or home unusable in users/assign, ignored")
        alias_user = None
    by_host: dict[str, dict] = {}
    for row in sorted(virtual_rows, key=lambda r: tuple(_text(v) for v in r)):
        username, ext, vuser, host = (_text(v) for v in row)
        host = host.lower()
        key = f"virtual {vuser}@{host}"
        if not username:
            plan.problems.append(f"{key}: MySQL misconfiguration: blank username, skipped")
            continue
        if (not host or not _clean(host) or (vuser and not _clean(vuser)) or not _clean(username)
                or (ext and ext != "@" and not _clean(ext))):
            plan.problems.append(f"{key}: bad characters, skipped")
            continue
        target = find_user(username.lower())
        if target is None:
            plan.problems.append(f"{key}: user {username} is neither in mailbox nor in passwd, skipped")
            continue
        if not usable_identity(target):
            plan.problems.append(f"{key}: user {username}: name or home unusable in users/assign, skipped")
            continue
        entry = by_host.setdefault(host, {"explicit": {}, "catchall": None})
        if vuser:
            local = vuser.lower()
            if local in entry["explicit"]:
                plan.problems.append(f"{key}: duplicate row, first one kept")
                continue
            full_ext = vuser if ext == "@" else ext
            entry["explicit"][local] = (target, full_ext)
        elif entry["catchall"] is not None:
            plan.problems.append(f"{key}: second catch-all row, first one kept")
        else:
            entry["catchall"] = (target, ext)

    for host in sorted(by_host):
        entry = by_host[host]
        base = f"{prefix}-{host}"
        plan.virtualdomains.append(f"{host}:{base}")
        for local, (target, ext) in sorted(entry["explicit"].items()):
            dash = "-" if ext else ""
            plan.assign.append(f"={base}-{local}:{target.name}:{target.uid}:{target.gid}:{target.home}:"
                               f"{dash}:{ext}:")
        catchall = entry["catchall"]
        if catchall is not None and catchall[1] == "@":
            target = catchall[0]
            plan.assign.append(f"+{base}-:{target.name}:{target.uid}:{target.gid}:{target.home}:-::")
            continue
        if alias_user is None:
            plan.problems.append(f"virtual {host}: no 'alias' user for the catch-all/bounce file, skipped")
            continue
        if not home_owned(alias_user):
            plan.problems.append(f"virtual {host}: home {alias_user.home} of the 'alias' user is missing or "
                                 f"not owned by uid {alias_user.uid}, skipped")
            continue
        plan.assign.append(f"+{base}-:{alias_user.name}:{alias_user.uid}:{alias_user.gid}:"
                           f"{alias_user.home}:-:{base}-:")
        if catchall is None:
            line = BOUNCE_LINE
        else:
            target, ext = catchall
            local = f"{target.name}-{ext}" if ext else target.name
            line = f"&{local}@{me}" if me else f"&{local}"
        path = f"{alias_user.home}/.qmail-{safe_ext(base)}-default"
        plan.dot_qmail[path] = (line + "\n", alias_user.uid, alias_user.gid)

    files: dict[str, list[str]] = {}
    owners: dict[str, Identity] = {}
    for row in sorted(alias_rows, key=lambda r: tuple(_text(v) for v in r)):
        username, alias, alias_username, alias_host = (_text(v) for v in row)
        key = f"alias {username}/{alias}"
        if not username:
            plan.problems.append(f"{key}: MySQL misconfiguration: blank username, skipped")
            continue
        line = alias_line(alias_username, alias_host)
        if line is None or not _plain(line.replace(":", "")):
            plan.problems.append(f"{key}: MySQL misconfiguration: no delivery (or control characters) in "
                                 "alias_username/alias_host, skipped")
            continue
        if alias and not _clean(alias):
            plan.problems.append(f"{key}: bad characters in alias, skipped")
            continue
        owner = find_user(username.lower())
        if owner is None or not owner.home.startswith("/"):
            plan.problems.append(f"{key}: user {username} is neither in mailbox nor in passwd, skipped")
            continue
        if not home_owned(owner):
            plan.problems.append(f"{key}: home {owner.home} of {owner.name} is missing or not owned by uid "
                                 f"{owner.uid}, skipped")
            continue
        name = ".qmail" if not alias else (".qmail-default" if alias == "@" else f".qmail-{safe_ext(alias)}")
        path = f"{owner.home}/{name}"
        files.setdefault(path, []).append(line)
        owners[path] = owner
    for path, lines in files.items():
        if path in plan.dot_qmail:
            plan.problems.append(f"alias file {path} collides with a virtual catch-all file, skipped")
            continue
        plan.dot_qmail[path] = ("".join(line + "\n" for line in lines), owners[path].uid, owners[path].gid)
    return plan
