"""The requests vlookupd answers, each with the same library code the programs run directly.

Every handler takes the worker, the peer and the request's fields and returns the status and the
answer's fields (see ``vlookupd-protocol.md``).  Outcomes are :mod:`vpop.errors` exceptions, as on
the direct path; :func:`outcome` turns one into its ``refused``/``temp`` answer.  Which peer may
send which request is :data:`NEEDS` (see :mod:`vlookupd.worker` for the classes).
"""

from vpop import log as vlog
from vpop.errors import AuthFailure, TemporaryFailure, UsageError, VpopError
from vpop.lookup.client import kind_of

FULL, GETPW = "full", "getpw"
#: the peer classes allowed to send each request
NEEDS = {
    "hello": (FULL, GETPW), "getpw": (FULL, GETPW), "candidates": (FULL, GETPW),
    "auth": (FULL,), "login": (FULL,), "domain": (FULL,), "user": (FULL,), "recipient": (FULL,),
    "valias": (FULL,), "setdir": (FULL,), "subdir": (FULL,), "popbox": (FULL,), "forwarders": (FULL,),
    "stats": (FULL,), "invalidate": (FULL,),
}
PROTOCOL_VERSION = "1"


class BadRequest(Exception):
    """The request is wrong (a missing field, an unknown service): answered ``bad``."""


def outcome(exc: VpopError) -> tuple[str, list]:
    """A refusal (login refused, usage, bounce) or a temporary failure, as an answer."""
    status = "temp" if isinstance(exc, TemporaryFailure) else "refused"
    fields = [("kind", kind_of(exc)), ("message", exc.message), ("code", exc.vpopmail_code)]
    if getattr(exc, "logged", False):
        fields.append(("logged", "1"))
    return status, fields


class PeerLogger(vlog.Logger):
    """The client's syslog lines, sent with the client's pid; held until the decision stands."""

    def __init__(self, settings, pid: int) -> None:
        super().__init__(settings.log_name, settings.logging, settings.syslog_socket)
        self.pid = pid
        self.held: list[tuple[str, str]] = []

    def send(self, message: str, priority: str = "notice") -> None:
        self.held.append((message, priority))

    def flush(self) -> None:
        lines, self.held = self.held, []
        for message, priority in lines:
            vlog.Logger.send(self, message, priority)

    def drop(self) -> None:
        self.held = []


# ---------------------------------------------------------------------------------------------
# the login decision


def _attempt(worker, peer, fields):
    from vpop.auth import IMAP, POP, SMTP, WEBMAIL, Attempt, detect_service

    environ = {name: fields.text(name) for name in ("VPOPMAIL_DOMAIN", "TCPLOCALIP")
               if fields.get(name) is not None}
    service = fields.text("service")
    if service:
        if service not in (SMTP, POP, IMAP, WEBMAIL):
            raise BadRequest(f"unknown service {service!r}")
        log_name, ip = fields.text("log_name") or f"vchkpw-{service}", fields.text("ip")
    else:  # Dovecot's Lua script: what its checkpassword driver would have set, decided as vchkpw does
        for name in ("TCPLOCALPORT", "TCPREMOTEIP", "SERVICE"):
            if fields.get(name) is not None:
                environ[name] = fields.text(name)
        from vpop.names import remote_ip

        service, log_name, _ = detect_service(environ, "")
        ip = remote_ip(environ)
    log = None if fields.get("log") == b"0" else PeerLogger(worker.settings, peer.pid)
    return Attempt(environ, service, ip, log_name, log, lookup_only=fields.get("lookup") == b"1")


def auth(worker, peer, fields) -> tuple[str, list]:
    """:func:`vpop.auth.authenticate` for the client (Dovecot's Lua script)."""
    null_refusal = UsageError if fields.get("null") == b"usage" else AuthFailure
    attempt = _attempt(worker, peer, fields)
    return _decide(worker, attempt, fields, null_refusal, fields.get("record") != b"0")[:2]


def login(worker, peer, fields) -> tuple[str, list]:
    """vchkpw's whole question: its environment (:data:`vpop.lookup.client.LOGIN_ENVIRONMENT`),
    the program it is to run and fd 3's fields; decided as vchkpw decides, with what vchkpw needs
    to start the session (the service, Dovecot's variables, ``VPOPUSER``)."""
    from vpop.auth import CheckpasswordAttempt, vpopuser
    from vpop.lookup.client import LOGIN_ENVIRONMENT

    environ = {name: fields.text(name) for name in LOGIN_ENVIRONMENT if fields.get(name) is not None}
    attempt = CheckpasswordAttempt(environ, fields.text("program"), PeerLogger(worker.settings, peer.pid))
    null_refusal = attempt.read_fd3(fields.get("password", b""), fields.get("nul") == b"1")
    status, answer, grant = _decide(worker, attempt, fields, null_refusal, True)
    answer += [("service", attempt.service), ("dovecot", "1" if attempt.dovecot else "0"),
               ("lookup", "1" if attempt.lookup_only else "0"),
               ("smtp_guess", "1" if attempt.smtp_by_name else "0")]
    if grant is not None and grant.domain is not None:
        answer.append(("vpopuser", vpopuser(grant, attempt.raw_login)))
    return status, answer


def _decide(worker, attempt, fields, null_refusal, record_login: bool) -> tuple[str, list, object]:
    """:func:`vpop.auth.authenticate` on the worker's store (cached answers never refuse: see
    :mod:`vlookupd.cache`): the status, the answer's fields and the Grant (None: refused)."""
    from vpop.auth import authenticate

    login = fields.get("login", b"")
    password = fields.get("password", b"")
    challenge = fields.get("challenge", b"")
    captured: list[str] = []

    store = None

    def start_again() -> None:
        if attempt.log is not None:
            attempt.log.drop()
        captured.clear()
        if store is not None:
            store.later.clear()  # lastauth of a decision that is made again

    for use_cache in (True, False):
        store = worker.caching_store(use_cache)
        vlog.capture_stderr(captured)
        try:
            grant = worker.with_reconnect(
                lambda store=store: authenticate(attempt, worker.settings, login, password, challenge,
                                                 record_login=record_login, null_refusal=null_refusal,
                                                 store=store), start_again)
            failed = None
        except VpopError as exc:
            grant, failed = None, exc
        finally:
            vlog.capture_stderr(None)
        if failed is not None and use_cache and not store.recheck():
            start_again()  # decided on answers that changed since: decide again on the new ones
            continue
        if failed is None and store.served and not store.reachable():
            start_again()  # a yes from the cache while the database is down: ask the database
            continue
        break
    if attempt.log is not None:
        attempt.log.flush()
    worker.after_answer(store.later, attempt.log)
    status, answer = ("ok", grant_fields(grant, attempt)) if failed is None else outcome(failed)
    answer += [("user", attempt.user), ("domain", attempt.domain_name)]
    answer += [("stderr", line) for line in captured]
    return status, answer, grant


def grant_fields(grant, attempt) -> list:
    from vpop.auth import session_user

    fields = [("name", grant.name), ("uid", grant.uid), ("gid", grant.gid), ("home", grant.home),
              ("full_name", grant.full_name), ("flags", grant.flags), ("auth_type", grant.auth_type),
              ("mailbox", grant.mailbox), ("session_user", session_user(grant, attempt.raw_login))]
    domain = grant.domain
    if domain is not None:
        fields += [("domain_name", domain.name), ("domain_real", domain.real), ("domain_uid", domain.uid),
                   ("domain_gid", domain.gid), ("domain_dir", domain.dir)]
        fields += quota_fields(getattr(grant.record, "shell", ""))
    return fields


def quota_fields(quota: str) -> list:
    """The user's Maildir++ quota (``pw_shell``) in bytes and messages, and as Dovecot 2.3's rule."""
    from vpop.quota import normalize_quota, parse_quota

    size, count = parse_quota(normalize_quota(quota)) if quota else (None, None)
    fields, rule = [], "*:"
    if size is not None:
        fields.append(("quota_bytes", size))
        rule += f"bytes={size}"
    if count is not None:
        fields.append(("quota_messages", count))
        rule += (":" if size is not None else "") + f"messages={count}"
    if fields:
        fields.append(("quota_rule", rule))
    return fields


# ---------------------------------------------------------------------------------------------
# what a delivery and qmail-getpw ask


def _domain(worker, fields):
    """The request's domain as the store resolves it; None when it does not exist."""
    name = fields.text("domain")
    if not name:
        raise BadRequest("no domain")
    return worker.store().domain(name)


def _existing_domain(worker, fields):
    """The request's domain; one that does not exist is vdelivermail's 111 (a write needs it)."""
    found = _domain(worker, fields)
    if found is None:
        raise TemporaryFailure(f"vdelivermail: domain {fields.text('domain')} is not in users/assign")
    return found


def _need(fields, *names: str) -> list[str]:
    values = []
    for name in names:
        value = fields.get(name)
        if value is None:
            raise BadRequest(f"no {name}")
        values.append(value.decode("utf-8", "surrogateescape"))
    return values


def domain(worker, peer, fields) -> tuple[str, list]:
    found = _domain(worker, fields)
    if found is None:
        return "none", []
    return "ok", [("real", found.real), ("uid", found.uid), ("gid", found.gid), ("dir", found.dir)]


def user(worker, peer, fields) -> tuple[str, list]:
    """A user record; its hashes only when asked for (``secrets``)."""
    (name,) = _need(fields, "user")
    found = _domain(worker, fields)
    record = None if found is None else worker.store().get_user(name, found)
    if record is None:
        return "none", []
    answer = [("name", record.name), ("uid", record.uid), ("gid", record.gid), ("gecos", record.gecos),
              ("dir", record.dir), ("shell", record.shell)]
    if fields.get("secrets") == b"1":
        answer += [("passwd", record.passwd), ("clear", record.clear)]
    return "ok", answer


def recipient(worker, peer, fields) -> tuple[str, list]:
    """A delivery's first questions at once: the domain (``none`` when it does not exist) and each
    ``user`` of it that exists (``for`` the name asked, then the record as ``user`` answers it; the
    domain's fields are named ``domain_*`` so that the users' ``uid``/``gid`` lists stay theirs)."""
    found = _domain(worker, fields)
    if found is None:
        return "none", []
    answer = [("domain_real", found.real), ("domain_uid", found.uid), ("domain_gid", found.gid),
              ("domain_dir", found.dir)]
    store = worker.store()
    for name in fields.all("user"):
        record = store.get_user(name.decode("utf-8", "surrogateescape"), found)
        if record is not None:
            answer += [("for", name), ("name", record.name), ("uid", record.uid), ("gid", record.gid),
                       ("gecos", record.gecos), ("dir", record.dir), ("shell", record.shell)]
    return "ok", answer


def _listed(worker, fields, name_key: str, method: str, answer_key: str) -> tuple[str, list]:
    """A store method's list for a name in the request's domain: one ``answer_key`` field each."""
    (name,) = _need(fields, name_key)
    found = _domain(worker, fields)
    values = [] if found is None else getattr(worker.store(), method)(name, found)
    return "ok", [(answer_key, value) for value in values]


def valias(worker, peer, fields) -> tuple[str, list]:
    return _listed(worker, fields, "alias", "valias_lines", "line")


def setdir(worker, peer, fields) -> tuple[str, list]:
    """A blank ``pw_dir`` filled, compare-and-set (as the domain's uid on the file stores)."""
    from vpop.stores.base import User

    name, path = _need(fields, "user", "path")
    found = _existing_domain(worker, fields)
    store = worker.store()
    with store.as_mail_user(found):  # the stores read the record again under their lock
        stored = store.set_user_dir(User(name, found.real), found, path)
    worker.invalidate()
    return "ok", [("dir", stored)]


def subdir(worker, peer, fields) -> tuple[str, list]:
    """The next hashed directory of the domain (MySQL's ``dir_control``), as the domain's uid."""
    from vpop.privileges import ActingAs

    found = _existing_domain(worker, fields)
    store = worker.store()
    store.connect_for_updates()  # as root: the credentials and the socket may be root's only
    with ActingAs(found.uid, found.gid):
        path = store.next_user_subdir(found, None, None)
    return "ok", [("subdir", path)]


def popbox(worker, peer, fields) -> tuple[str, list]:
    (local,) = _need(fields, "local")
    found = _domain(worker, fields)
    mailbox = None if found is None else worker.store().popbox(local, found)
    return ("none", []) if mailbox is None else ("ok", [("mailbox", mailbox)])


def forwarders(worker, peer, fields) -> tuple[str, list]:
    return _listed(worker, fields, "local", "forwarders", "target")


def candidates(worker, peer, fields) -> tuple[str, list]:
    """qmail-getpw's whole question: the entry (``mailbox`` row, else /etc/passwd) of each candidate
    of the local part, in order, up to the first one found (``all`` 1: every one, and ``alias``);
    ``complete`` 0 when it stopped there, ``replica`` 1 when a replica was read.  The client
    checks the homes itself (with its own permissions) and decides."""
    from vpop.getpw import candidates as names_of
    from vpop.getpw import find_entry

    local = fields.get("local")
    if local is None:
        raise BadRequest("no local")
    settings = worker.settings
    store = worker.store() if settings.store == "qmail-mysql" else None
    every = fields.get("all") == b"1"
    answer, complete = [], "1"
    for _, name in [*names_of(local), (0, b"alias")]:
        entry = find_entry(store, settings.getpw_system_users, name)
        if entry is not None:
            answer += [("candidate", name), ("name", entry[0]), ("uid", entry[1]), ("gid", entry[2]),
                       ("home", entry[3])]
            if not every:
                complete = "0"
                break
    answer += [("complete", complete),
               ("replica", "1" if store is not None and store.reads_from_replica() else "0")]
    return "ok", answer


def getpw(worker, peer, fields) -> tuple[str, list]:
    """qmail-getpw's question: a ``mailbox`` row's name, uid, gid and home, never its password."""
    (name,) = _need(fields, "name")
    if worker.settings.store != "qmail-mysql":
        raise BadRequest("getpw needs store = qmail-mysql")
    account = worker.store().mailbox(name)
    if account is None:
        return "none", []
    return "ok", [("name", account.name), ("uid", account.uid), ("gid", account.gid), ("home", account.home)]


# ---------------------------------------------------------------------------------------------
# for the operator and the admin tools


def hello(worker, peer, fields) -> tuple[str, list]:
    return "ok", [("version", PROTOCOL_VERSION), ("store", worker.settings.store),
                  ("workers", worker.stats.workers), ("pid", worker.pid)]


def stats(worker, peer, fields) -> tuple[str, list]:
    from vlookupd.stats import rss_kib

    totals = worker.stats.totals()
    return "ok", [*totals.items(), ("workers", worker.stats.workers),
                  ("rss_kib", rss_kib([worker.master_pid, *worker.stats.pids()]))]


def invalidate(worker, peer, fields) -> tuple[str, list]:
    """Void cached answers: of ``user@domain``, ``@domain`` or ``*`` (today: all of them)."""
    worker.invalidate()
    return "ok", []


HANDLERS = {"hello": hello, "auth": auth, "login": login, "domain": domain, "user": user,
            "recipient": recipient, "valias": valias, "setdir": setdir, "subdir": subdir, "popbox": popbox,
            "forwarders": forwarders, "getpw": getpw, "candidates": candidates, "stats": stats,
            "invalidate": invalidate}
assert set(HANDLERS) == set(NEEDS)
