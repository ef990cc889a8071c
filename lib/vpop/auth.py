"""The authentication decision that vchkpw, vpopmaild and the lookup daemon share.

Given a login, a password and the service asking, decide whether the user may in, exactly as
vpopmail's vchkpw decides it: login forms and the default domain, the store's record, CRAM-MD5/
APOP/crypt, the NO_* flags and the domain's limits, a blank ``pw_dir`` made on the spot, the
rehash on login, lastauth and roaming relay.  What the caller does with a yes (exec a session,
answer ``+OK``) is its protocol and stays in the program.

The outcome is a :class:`Grant`, or an exception of :mod:`vpop.errors` carrying vchkpw's codes.
Imports are lazy: the engine runs on every login.
"""

from vpop import log as vlog
from vpop.errors import AuthFailure, TemporaryFailure, UsageError
from vpop.flags import NO_IMAP, NO_POP, NO_RELAY, NO_SMTP, NO_WEBMAIL
from vpop.session import SMTP

POP, IMAP, WEBMAIL = "pop", "imap", "webmail"
DENIED_BIT = {POP: NO_POP, WEBMAIL: NO_WEBMAIL, IMAP: NO_IMAP, SMTP: NO_SMTP}
ACCOUNT_STORES = ("qmail-mysql", "vmail-sql")
PORTS = {
    "25": (SMTP, "smtp"), "110": (POP, "pop3"), "143": (IMAP, "imap"), "465": (SMTP, "smtps"),
    "587": (SMTP, "submission"), "993": (IMAP, "imaps"), "995": (POP, "pop3s"),
}
DOVECOT_SERVICES = {"imap": IMAP, "pop3": POP, "smtp": SMTP, "submission": SMTP, "lmtp": SMTP}


def detect_service(environ: dict, program: str) -> tuple[str, str, bool]:
    """(service, log name, SMTP guessed from the program's name), as vchkpw decides them from
    TCPLOCALPORT, Dovecot's SERVICE, the program it is to run, and a webmail's 127.0.0.1."""
    from vpop.numbers import ascii_number

    port = environ.get("TCPLOCALPORT", "")
    number = ascii_number(port, 65535)
    port_text = "0" if number is None else str(number)
    if port_text in PORTS:
        service, suffix = PORTS[port_text]
    else:
        suffix = port_text
        dovecot = environ.get("SERVICE", "").lower()
        if dovecot in DOVECOT_SERVICES:
            service = DOVECOT_SERVICES[dovecot]
        elif program.rpartition("/")[2] == "true":
            # vpopmail's guess: qmail-smtpd's AUTH patch runs "vchkpw /bin/true" and must stay
            # qmaild, so no setuid.  vpopmail looked for "true" anywhere in argv[1], which made
            # an "imap-true-wrapper" run as root; only a program named true counts here.
            return SMTP, "vchkpw-" + suffix, True
        elif "imap" in program:
            service = IMAP
        else:
            service = POP
    if service in (POP, IMAP):
        from vpop.names import remote_ip

        if remote_ip(environ) == "127.0.0.1":
            return WEBMAIL, "vchkpw-webmail", False
    return service, "vchkpw-" + suffix, False


class Attempt:
    """One authentication attempt: who asks (service, address) and what has been decided so far.

    ``log_name`` prefixes every log line (``vchkpw-pop3``, ``vpopmaild``); ``lookup_only`` is a
    Dovecot userdb lookup, which checks everything but the password; ``log_passwords`` False
    keeps a wrong password out of the log even at ``logging = p``/``v`` (vpopmaild).
    """

    def __init__(self, environ: dict, service: str, ip: str, log_name: str,
                 log: "vlog.Logger | None" = None, lookup_only: bool = False, *,
                 log_passwords: bool = True) -> None:
        self.log_passwords = log_passwords
        self.environ = environ
        self.service = service
        self.ip = ip
        self.log_name = log_name
        self.log = log
        self.lookup_only = lookup_only
        self.raw_login = ""
        self.user = ""
        self.domain_name = ""

    def say(self, category: int, text: str) -> None:
        if self.log is not None:
            self.log.log(category, f"{self.log_name}: {text}")

    def who(self) -> str:
        return f"{self.user}@{self.domain_name}:{self.ip}"


class Grant:
    """A login that succeeded: whom a session runs as, and the record behind it.

    ``domain`` is the vpopmail domain (None for an account store's login), ``record`` the
    store's user record (the account for an account store), ``flags`` the effective gid flags,
    ``auth_type`` PLAIN, CRAM-MD5, APOP or LOOKUP, ``mailbox`` an account store's MAIL.
    """

    def __init__(self, name: str, uid: int, gid: int, home: str, domain, full_name: str,
                 record=None, flags: int = 0, auth_type: str = "", mailbox: str = "") -> None:
        self.name = name
        self.uid = uid
        self.gid = gid
        self.home = home
        self.domain = domain
        self.full_name = full_name
        self.record = record
        self.flags = flags
        self.auth_type = auth_type
        self.mailbox = mailbox


def session_user(grant: Grant, raw_login: str) -> str:
    """The user name a Dovecot session gets: the address as typed when it had a domain, else the
    full ``user@domain`` (an account store's login keeps the account's own name)."""
    return raw_login if grant.domain is not None and "@" in raw_login else grant.full_name


def vpopuser(grant: Grant, raw_login: str) -> str | None:
    """vchkpw's ``VPOPUSER``: the login as typed, lower-cased, for a vpopmail user only."""
    return raw_login.lower() if grant.domain is not None else None


class CheckpasswordAttempt(Attempt):
    """vchkpw's attempt, decided from its environment and the program it is to run (argv[1]):
    the service from the port, Dovecot's variables or the program's name; a Dovecot userdb
    lookup (``AUTHORIZED=1``).  vlookupd builds the same from the variables vchkpw sends."""

    def __init__(self, environ: dict, program: str, log: "vlog.Logger | None" = None) -> None:
        from vpop.names import remote_ip

        # Dovecot's checkpassword driver always sets ORIG_UID (its auth process uid) and SERVICE.
        self.dovecot = "ORIG_UID" in environ and ("SERVICE" in environ or "AUTHORIZED" in environ)
        service, log_name, self.smtp_by_name = detect_service(environ, program)
        super().__init__(environ, service, remote_ip(environ), log_name, log,
                         lookup_only=self.dovecot and environ.get("AUTHORIZED") == "1")

    def read_fd3(self, password: bytes, has_nul: bool) -> type:
        """What fd 3 changes: a password sent is checked, whatever ``AUTHORIZED`` says; the class
        that refuses an empty login or password (no NUL at all is misuse of the interface:
        checkpassword's 2, and vpopmail's 12 or 13 with its log line)."""
        if password:
            self.lookup_only = False
        return AuthFailure if has_nul else UsageError


def refuse_null(attempt: Attempt, raw_login: bytes, password: bytes, refusal=AuthFailure) -> None:
    """An empty login (12) or, unless it is a lookup, an empty password (13), logged as vchkpw."""
    if not raw_login:
        attempt.say(vlog.LOGON, f"null user name given {attempt.raw_login}:{attempt.ip}")
        raise refusal("null user name", 12)
    if not password and not attempt.lookup_only:
        attempt.say(vlog.PASSWD, f"null password given {attempt.raw_login}:{attempt.ip}")
        raise refusal("null password", 13)


def authenticate(attempt: Attempt, settings, raw_login: bytes, password: bytes, challenge: bytes = b"",
                 *, record_login: bool = True, null_refusal=AuthFailure, store=None) -> Grant:
    """Decide one login; a :class:`Grant` or an exception with vchkpw's codes.

    ``record_login``: lastauth and roaming relay after a success (vchkpw; not an admin login).
    ``null_refusal``: the exception class for an empty login or password (vchkpw raises a
    usage error when fd 3 held no NUL at all).  ``store``: the store to ask (vlookupd's, kept
    open between logins); by default the configured one, opened and closed here.
    """
    from vpop import assign, passwords
    from vpop.domains import default_domain
    from vpop.names import split_login, valid_domain, valid_user

    text_login = raw_login.decode("utf-8", "replace")
    attempt.raw_login = text_login
    refuse_null(attempt, raw_login, password, null_refusal)

    if settings.store in ACCOUNT_STORES:
        return authenticate_account(attempt, settings, text_login, password, challenge, store)
    user, domain_name = split_login(text_login)
    if not domain_name:
        domain_name = default_domain(settings, attempt.environ, store)
    attempt.user, attempt.domain_name = user, domain_name
    if not valid_user(user) or not valid_domain(domain_name):
        # vpopmail's parse_email says which part on stderr (never stdout: that is the client)
        from vpop.log import stderr_line

        stderr_line(f"user invalid {user}" if not valid_user(user) else f"domain invalid {domain_name}")
        attempt.say(vlog.PASSWD, f"invalid user/domain characters {text_login.lower()}:{attempt.ip}")
        raise AuthFailure("invalid characters", 20)

    domain = assign.lookup(settings.qmail_home, domain_name) if domain_name else None
    record = None
    owned = store is None
    if owned:
        from vpop.stores import open_store

        store = open_store(settings)
    if domain is not None:
        attempt.domain_name = domain.real
        record = store.get_user(user, domain)
        if record is None and store.confirm_on_primary():
            record = store.get_user(user, domain)  # not on the replica (yet?): the primary decides
    else:
        try:
            store.probe()  # an unknown domain costs what an unknown user costs
        except TemporaryFailure:
            pass  # not in users/assign: unknown, whether or not the database answers
    if record is None:
        if password and not attempt.lookup_only:
            passwords.spend_like_a_check(password, settings.password_scheme)
        attempt.say(vlog.LOGON, f"vpopmail user not found {attempt.who()}")
        raise AuthFailure("no such user", 3)

    if attempt.lookup_only:
        auth_type = "LOOKUP"
    else:
        auth_type = check_password(attempt, settings, store, domain, record, password, challenge)

    from vpop.limits import effective_flags, read_limits_file

    limits = store.domain_limits(domain)
    if limits is None:
        limits = read_limits_file(domain.dir, settings.etc_dir, domain.uid)
    flags = effective_flags(record.gid, limits)
    if flags & DENIED_BIT[attempt.service]:
        attempt.say(vlog.ACCESS, f"{attempt.service} access denied {attempt.who()}")
        raise AuthFailure("service denied", 1)

    if not record.dir:
        make_blank_dir(attempt, store, record, domain)
    from vpop.dirs import check_user_dir

    check_user_dir(settings, domain.dir, record.dir)

    if not attempt.lookup_only:
        attempt.say(vlog.AUTH, f"({auth_type}) login success {attempt.who()}")
        if auth_type == "PLAIN" and settings.rehash_on_login:
            rehash_password(attempt, store, record, domain, password, settings.password_scheme)
        if record_login:
            after_login(attempt, settings, store, record, domain, flags)
    if owned:
        store.close()
    return Grant(record.name, domain.uid, domain.gid, record.dir, domain, f"{record.name}@{domain.name}",
                 record, flags, auth_type)


def authenticate_account(attempt: Attempt, settings, text_login: str, password: bytes,
                         challenge: bytes, store=None) -> Grant:
    """Logins of the account-based stores (qmail-mysql ``mailbox``, vmail-sql ``popbox``)."""
    owned = store is None
    if owned:
        from vpop.stores import open_store

        store = open_store(settings, attempt.log)
    from vpop.names import ascii_lower

    name = ascii_lower(text_login)
    if settings.store == "vmail-sql" and "@" not in name and "%" not in name:
        # tpop3d took the listening address's domain; here: VPOPMAIL_DOMAIN, the IP-alias map
        # (ip_alias_domains) or etc/defaultdomain, as for vpopmail's own logins.
        from vpop.domains import default_domain

        domain = default_domain(settings, attempt.environ, store)
        if domain:
            name = f"{name}@{domain}"
    attempt.user, _, attempt.domain_name = name.partition("@" if "@" in name else "%")
    if not name or any(ord(c) < 33 or c in "/\\" for c in name):
        attempt.say(vlog.PASSWD, f"invalid user/domain characters {name}:{attempt.ip}")
        raise AuthFailure("invalid characters", 20)
    account = store.find_account(name)
    if account is None and store.confirm_on_primary():
        account = store.find_account(name)  # not on the replica (yet?): the primary decides
    if account is None:
        if password and not attempt.lookup_only:
            from vpop.passwords import spend_like_a_check

            spend_like_a_check(password, settings.password_scheme)
        attempt.say(vlog.LOGON, f"vpopmail user not found {attempt.who()}")
        raise AuthFailure("no such user", 3)
    if account.problem:
        attempt.say(vlog.INTERNAL, f"{account.problem} {attempt.who()}")
        raise AuthFailure(account.problem, 3)
    if attempt.lookup_only:
        auth_type = "LOOKUP"
    else:
        auth_type = store.verify(account, password, challenge, attempt.service)
        if auth_type is None:
            refuse_password(attempt, password)
    if account.suspended:
        attempt.say(vlog.ACCESS, f"suspended account refused {attempt.who()}")
        raise AuthFailure("suspended", 1)
    if not attempt.lookup_only:
        attempt.say(vlog.AUTH, f"({auth_type}) login success {attempt.who()}")
    if owned:
        store.close()
    return Grant(account.name, account.uid, account.gid, account.home, None, account.name,
                 account, 0, auth_type, account.mailbox or "")


def check_password(attempt: Attempt, settings, store, domain, record, password: bytes,
                   challenge: bytes) -> str:
    """CRAM-MD5 (SMTP) or APOP (POP) against the clear password, then the hash."""
    from vpop import passwords

    clear = record.clear if settings.clear_passwords else ""
    if clear and attempt.service == SMTP and passwords.cram_md5_verify(password, challenge, clear):
        return "CRAM-MD5"
    if clear and attempt.service == POP and passwords.apop_verify(password, challenge, clear):
        return "APOP"
    if not record.passwd:
        attempt.say(vlog.PASSWD, f"user has no password {attempt.who()}")
        raise AuthFailure("no password stored", 15)
    try:
        if passwords.verify(password, record.passwd):
            return "PLAIN"
    except TemporaryFailure as exc:
        raise TemporaryFailure(f"{store.source(domain)}: damaged entry for {record.name}: {exc.message}") \
            from None
    refuse_password(attempt, password)


def refuse_password(attempt: Attempt, password: bytes) -> None:
    """Log the wrong password (with the password at logging p/v, as vpopmail, unless the attempt
    says otherwise) and refuse."""
    if attempt.log is not None and attempt.log.with_passwords and attempt.log_passwords:
        shown = password.decode("utf-8", "replace")
        attempt.say(vlog.PASSWD, f"password fail (pass: '{shown}') {attempt.who()}")
    else:
        attempt.say(vlog.PASSWD, f"password fail {attempt.who()}")
    raise AuthFailure("wrong password", 3)


def make_blank_dir(attempt: Attempt, store, record, domain) -> None:
    """A row with a blank pw_dir (inserted by billing) gets its directory, after the password."""
    from vpop.dirs import discard_user_dir
    from vpop.privileges import ActingAs

    try:
        store.connect_for_updates()
        with ActingAs(domain.uid, domain.gid):
            path = store.make_user_dir(domain, record.name, None, None)
        try:
            with store.as_mail_user(domain):
                stored = store.set_user_dir(record, domain, path)
        except TemporaryFailure:
            with ActingAs(domain.uid, domain.gid):
                discard_user_dir(path)  # so that the next login can try again
            raise
        if stored != path:  # a concurrent login or delivery was first: use its directory
            with ActingAs(domain.uid, domain.gid):
                discard_user_dir(path)
    except TemporaryFailure as exc:
        attempt.say(vlog.INTERNAL, f"dir auto create failed {attempt.who()}")
        raise TemporaryFailure(f"dir auto create failed: {exc.message}", 14) from None


def rehash_password(attempt: Attempt, store, record, domain, password: bytes, scheme: str) -> None:
    """``rehash_on_login``: a stored hash weaker than the policy becomes a ``scheme`` hash of the
    password that was just checked, compare-and-set; a failure is logged, never refuses the login.

    Nothing here runs (and nothing is imported) unless the stored hash is weaker.  Left alone:
    a password that is not UTF-8 (crypt(3) through ``_crypt`` takes text), and a DES hash with a
    password longer than 8 bytes (DES checked only the first 8: which password the user means
    cannot be known).
    """
    from vpop import passwords

    old = record.passwd
    if not passwords.weaker_than_policy(old, scheme):
        return
    kind = passwords.hash_scheme(old)[0]
    try:
        text = password.decode("utf-8")
    except UnicodeDecodeError:
        return
    if kind == "des" and len(password) > 8:
        attempt.say(vlog.AUTH, f"password not rehashed: DES and more than 8 bytes {attempt.who()}")
        return
    try:
        new = passwords.new_hash(text, scheme)
        store.connect_for_updates()  # before the switch to the domain's uid (a root-only socket)
        with store.as_mail_user(domain):  # CDB: vpasswd is the domain's
            written = store.replace_password_hash(record, domain, old, new)
    except (TemporaryFailure, OSError, ValueError) as exc:
        attempt.say(vlog.INTERNAL, f"password not rehashed {attempt.who()}: {exc}")
        return
    if written:  # the store's method has set record.passwd
        attempt.say(vlog.AUTH, f"password rehashed {kind} -> {scheme} {attempt.who()}")
    else:
        attempt.say(vlog.AUTH, f"password not rehashed: changed meanwhile {attempt.who()}")


def record_lastauth(attempt: Attempt, store, record, domain, now: int) -> None:
    """The lastauth write; a failure is logged, never refuses the login."""
    try:
        with store.as_mail_user(domain):  # CDB: lastauth lives in the user's directory
            store.set_lastauth(record, domain, attempt.ip, now)
    except (TemporaryFailure, OSError) as exc:
        attempt.say(vlog.INTERNAL, f"lastauth not recorded {attempt.who()}: {exc}")


def after_login(attempt: Attempt, settings, store, record, domain, flags: int) -> None:
    """lastauth and roaming-user relay; their failures are logged, never refuse the login."""
    from vpop import clock

    now = int(clock.now())
    if settings.auth_logging:
        store.after_answer(lambda: record_lastauth(attempt, store, record, domain, now))
    if settings.roaming_users and not flags & NO_RELAY and attempt.service != SMTP and attempt.ip:
        try:
            store.open_relay(attempt.ip, now)
        except (TemporaryFailure, OSError, ValueError) as exc:
            attempt.say(vlog.INTERNAL, f"relay not opened {attempt.who()}: {exc}")
