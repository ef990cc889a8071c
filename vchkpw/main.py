"""vchkpw: checkpassword authentication for vpopmail users.

Protocol only: read fd 3, decide, then exec argv[1..] or exit.  Everything that knows a
store, a file format or a password scheme lives in ``vpop``.  This module maps the
exceptions of :mod:`vpop.errors` to exit codes in exactly one place (:func:`main`).
"""

import os
import sys

from vpop import log as vlog
from vpop.errors import AuthFailure, ConfigError, TemporaryFailure, UsageError, VpopError, raised_at
from vpop.numbers import ascii_number
from vpop.privileges import ActingAs
from vpop.stores.base import NO_IMAP, NO_POP, NO_RELAY, NO_SMTP, NO_WEBMAIL

FD3_LIMIT = 512
SMTP, POP, IMAP, WEBMAIL = "smtp", "pop", "imap", "webmail"
_PORTS = {
    "25": (SMTP, "smtp"), "110": (POP, "pop3"), "143": (IMAP, "imap"), "465": (SMTP, "smtps"),
    "587": (SMTP, "submission"), "993": (IMAP, "imaps"), "995": (POP, "pop3s"),
}
_DOVECOT_SERVICES = {"imap": IMAP, "pop3": POP, "smtp": SMTP, "submission": SMTP, "lmtp": SMTP}
_DENIED_BIT = {POP: NO_POP, WEBMAIL: NO_WEBMAIL, IMAP: NO_IMAP, SMTP: NO_SMTP}
ACCOUNT_STORES = ("qmail-mysql", "vmail-sql")
_NOT_RUNNABLE = ("vchkpw is only for talking with qmail-popup and qmail-pop3d. "
                 "It is not for runnning on the command line.")


class NotRunnable(UsageError):
    """fd 3 cannot be read: vchkpw was not started by qmail-popup or a checkpassword client."""


def read_fd3(fd: int = 3) -> bytes:
    """Read fd 3 to EOF, at most 512 bytes (checkpassword's limit); more is refused."""
    chunks = []
    total = 0
    while True:
        try:
            chunk = os.read(fd, FD3_LIMIT + 1 - total)
        except OSError as exc:
            raise NotRunnable(f"cannot read fd 3: {exc.strerror}", 11) from None
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
        if total > FD3_LIMIT:
            raise AuthFailure("more than 512 bytes on fd 3", 11)
    try:
        os.close(fd)
    except OSError:
        pass
    return b"".join(chunks)


def split_fd3(data: bytes) -> tuple[bytes, bytes, bytes]:
    """login, password, timestamp: each ends at a NUL or at the end of the data, as in vpopmail.

    So ``login\\0password`` without its last NUL is a login; what is missing is empty.
    """
    parts = data.split(b"\0", 3)
    parts += [b""] * (3 - len(parts))
    return parts[0], parts[1], parts[2]


def detect_service(environ: dict, argv: list[str]) -> tuple[str, str, bool]:
    """(service, log name, SMTP guessed from the program's name), as vchkpw decides them."""
    port = environ.get("TCPLOCALPORT", "")
    number = ascii_number(port, 65535)
    port_text = "0" if number is None else str(number)
    if port_text in _PORTS:
        service, suffix = _PORTS[port_text]
    else:
        suffix = port_text
        dovecot = environ.get("SERVICE", "").lower()
        if dovecot in _DOVECOT_SERVICES:
            service = _DOVECOT_SERVICES[dovecot]
        elif os.path.basename(argv[1]) == "true":
            # vpopmail's guess: qmail-smtpd's AUTH patch runs "vchkpw /bin/true" and must stay
            # qmaild, so no setuid.  vpopmail looked for "true" anywhere in argv[1], which made
            # an "imap-true-wrapper" run as root; only a program named true counts here.
            return SMTP, "vchkpw-" + suffix, True
        elif "imap" in argv[1]:
            service = IMAP
        else:
            service = POP
    if service in (POP, IMAP):
        from vpop.names import remote_ip

        if remote_ip(environ) == "127.0.0.1":
            return WEBMAIL, "vchkpw-webmail", False
    return service, "vchkpw-" + suffix, False


class Login:
    """One authentication attempt: what came in and what has been decided so far."""

    def __init__(self, environ: dict, argv: list[str]) -> None:
        from vpop.names import remote_ip

        self.environ = environ
        self.argv = argv
        # Dovecot's checkpassword driver always sets ORIG_UID (its auth process uid) and SERVICE.
        self.dovecot = "ORIG_UID" in environ and ("SERVICE" in environ or "AUTHORIZED" in environ)
        self.lookup_only = self.dovecot and environ.get("AUTHORIZED") == "1"
        self.service, self.log_name, self.smtp_by_name = detect_service(environ, argv)
        self.ip = remote_ip(environ)
        self.raw_login = ""
        self.user = ""
        self.domain_name = ""
        self.log: vlog.Logger | None = None

    def say(self, category: int, text: str) -> None:
        if self.log is not None:
            self.log.log(category, f"{self.log_name}: {text}")

    def who(self) -> str:
        return f"{self.user}@{self.domain_name}:{self.ip}"


def authenticate(login: Login, settings, data: bytes) -> None:
    """Decide the login; on success set up the environment and exec (never returns)."""
    from vpop import assign, passwords
    from vpop.domains import default_domain
    from vpop.names import split_login, valid_domain, valid_user

    raw_login, password, challenge = split_fd3(data)
    if password:
        login.lookup_only = False  # a password was sent: check it, whatever AUTHORIZED says
    text_login = raw_login.decode("utf-8", "replace")
    login.raw_login = text_login
    # No NUL at all (an empty fd 3, or a login without its NUL) is misuse of the interface:
    # checkpassword's 2, and vpopmail's 12 or 13 with its log line.
    refusal = AuthFailure if b"\0" in data else UsageError
    if not raw_login:
        login.say(vlog.LOGON, f"null user name given {text_login}:{login.ip}")
        raise refusal("null user name", 12)
    if not password and not login.lookup_only:
        login.say(vlog.PASSWD, f"null password given {text_login}:{login.ip}")
        raise refusal("null password", 13)

    if settings.store in ACCOUNT_STORES:
        authenticate_account(login, settings, text_login, password, challenge)
        return
    user, domain_name = split_login(text_login)
    if not domain_name:
        domain_name = default_domain(settings, login.environ)
    login.user, login.domain_name = user, domain_name
    if not valid_user(user) or not valid_domain(domain_name):
        # vpopmail's parse_email says which part on stderr (never stdout: that is the client)
        _stderr(f"user invalid {user}" if not valid_user(user) else f"domain invalid {domain_name}")
        login.say(vlog.PASSWD, f"invalid user/domain characters {text_login.lower()}:{login.ip}")
        raise AuthFailure("invalid characters", 20)

    domain = assign.lookup(settings.qmail_home, domain_name) if domain_name else None
    record = None
    from vpop.stores import open_store

    store = open_store(settings)
    if domain is not None:
        login.domain_name = domain.real
        record = store.get_user(user, domain)
    else:
        try:
            store.probe()  # an unknown domain costs what an unknown user costs
        except TemporaryFailure:
            pass  # not in users/assign: unknown, whether or not the database answers
    if record is None:
        if password and not login.lookup_only:
            passwords.spend_like_a_check(password, settings.password_scheme)
        login.say(vlog.LOGON, f"vpopmail user not found {login.who()}")
        raise AuthFailure("no such user", 3)

    if login.lookup_only:
        auth_type = "LOOKUP"
    else:
        auth_type = check_password(login, settings, store, domain, record, password, challenge, passwords)

    from vpop.limits import effective_flags, read_limits_file

    limits = store.domain_limits(domain)
    if limits is None:
        limits = read_limits_file(domain.dir, settings.etc_dir, domain.uid)
    flags = effective_flags(record.gid, limits)
    if flags & _DENIED_BIT[login.service]:
        login.say(vlog.ACCESS, f"{login.service} access denied {login.who()}")
        raise AuthFailure("service denied", 1)

    if not record.dir:
        make_blank_dir(login, store, record, domain)
    from vpop.dirs import check_user_dir

    check_user_dir(settings, domain.dir, record.dir)

    if not login.lookup_only:
        login.say(vlog.AUTH, f"({auth_type}) login success {login.who()}")
        if auth_type == "PLAIN" and settings.rehash_on_login:
            rehash_password(login, store, record, domain, password, settings.password_scheme)
        after_login(login, settings, store, record, domain, flags)
    store.close()
    ident = Identity(record.name, domain.uid, domain.gid, record.dir, domain)
    start_session(login, ident, f"{record.name}@{domain.name}")


def authenticate_account(login: Login, settings, text_login: str, password: bytes, challenge: bytes) -> None:
    """Logins of the account-based stores (qmail-mysql ``mailbox``, vmail-sql ``popbox``)."""
    from vpop.stores import open_store

    store = open_store(settings, login.log)
    from vpop.names import ascii_lower

    name = ascii_lower(text_login)
    if settings.store == "vmail-sql" and "@" not in name and "%" not in name:
        # tpop3d took the listening address's domain; here: VPOPMAIL_DOMAIN, the IP-alias map
        # (ip_alias_domains) or etc/defaultdomain, as for vpopmail's own logins.
        from vpop.domains import default_domain

        domain = default_domain(settings, login.environ)
        if domain:
            name = f"{name}@{domain}"
    login.user, _, login.domain_name = name.partition("@" if "@" in name else "%")
    if not name or any(ord(c) < 33 or c in "/\\" for c in name):
        login.say(vlog.PASSWD, f"invalid user/domain characters {name}:{login.ip}")
        raise AuthFailure("invalid characters", 20)
    account = store.find_account(name)
    if account is None:
        if password and not login.lookup_only:
            from vpop.passwords import spend_like_a_check

            spend_like_a_check(password, settings.password_scheme)
        login.say(vlog.LOGON, f"vpopmail user not found {login.who()}")
        raise AuthFailure("no such user", 3)
    if account.problem:
        login.say(vlog.INTERNAL, f"{account.problem} {login.who()}")
        raise AuthFailure(account.problem, 3)
    if login.lookup_only:
        auth_type = "LOOKUP"
    else:
        auth_type = store.verify(account, password, challenge, login.service)
        if auth_type is None:
            refuse_password(login, password)
    if account.suspended:
        login.say(vlog.ACCESS, f"suspended account refused {login.who()}")
        raise AuthFailure("suspended", 1)
    if not login.lookup_only:
        login.say(vlog.AUTH, f"({auth_type}) login success {login.who()}")
    store.close()
    if account.mailbox:
        login.environ["MAIL"] = account.mailbox
    start_session(login, Identity(account.name, account.uid, account.gid, account.home, None), account.name)


class Identity:
    """Whom the session runs as: name, uid, gid, home; ``domain`` for re-creating a vpopmail dir."""

    def __init__(self, name: str, uid: int, gid: int, home: str, domain) -> None:
        self.name = name
        self.uid = uid
        self.gid = gid
        self.home = home
        self.domain = domain


def check_password(login: Login, settings, store, domain, record, password: bytes, challenge: bytes,
                   passwords) -> str:
    """CRAM-MD5 (SMTP) or APOP (POP) against the clear password, then the hash."""
    clear = record.clear if settings.clear_passwords else ""
    if clear and login.service == SMTP and passwords.cram_md5_verify(password, challenge, clear):
        return "CRAM-MD5"
    if clear and login.service == POP and passwords.apop_verify(password, challenge, clear):
        return "APOP"
    if not record.passwd:
        login.say(vlog.PASSWD, f"user has no password {login.who()}")
        raise AuthFailure("no password stored", 15)
    try:
        if passwords.verify(password, record.passwd):
            return "PLAIN"
    except TemporaryFailure as exc:
        raise TemporaryFailure(f"{store.source(domain)}: damaged entry for {record.name}: {exc.message}") \
            from None
    refuse_password(login, password)


def refuse_password(login: Login, password: bytes) -> None:
    """Log the wrong password (with the password at logging p/v, as vpopmail) and refuse."""
    if login.log is not None and login.log.with_passwords:
        shown = password.decode("utf-8", "replace")
        login.say(vlog.PASSWD, f"password fail (pass: '{shown}') {login.who()}")
    else:
        login.say(vlog.PASSWD, f"password fail {login.who()}")
    raise AuthFailure("wrong password", 3)


def make_blank_dir(login: Login, store, record, domain) -> None:
    """A row with a blank pw_dir (inserted by billing) gets its directory, after the password."""
    from vpop.dirs import discard_user_dir

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
        login.say(vlog.INTERNAL, f"dir auto create failed {login.who()}")
        raise TemporaryFailure(f"dir auto create failed: {exc.message}", 14) from None


def rehash_password(login: Login, store, record, domain, password: bytes, scheme: str) -> None:
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
        login.say(vlog.AUTH, f"password not rehashed: DES and more than 8 bytes {login.who()}")
        return
    try:
        new = passwords.new_hash(text, scheme)
        store.connect_for_updates()  # before the switch to the domain's uid (a root-only socket)
        with store.as_mail_user(domain):  # CDB: vpasswd is the domain's
            written = store.replace_password_hash(record, domain, old, new)
    except (TemporaryFailure, OSError, ValueError) as exc:
        login.say(vlog.INTERNAL, f"password not rehashed {login.who()}: {exc}")
        return
    if written:
        login.say(vlog.AUTH, f"password rehashed {kind} -> {scheme} {login.who()}")
    else:
        login.say(vlog.AUTH, f"password not rehashed: changed meanwhile {login.who()}")


def after_login(login: Login, settings, store, record, domain, flags: int) -> None:
    """lastauth and roaming-user relay; their failures are logged, never refuse the login."""
    from vpop import clock

    now = int(clock.now())
    if settings.auth_logging:
        try:
            with store.as_mail_user(domain):  # CDB: lastauth lives in the user's directory
                store.set_lastauth(record, domain, login.ip, now)
        except (TemporaryFailure, OSError) as exc:
            login.say(vlog.INTERNAL, f"lastauth not recorded {login.who()}: {exc}")
    if settings.roaming_users and not flags & NO_RELAY and login.service != SMTP and login.ip:
        try:
            store.open_relay(login.ip, now)
        except (TemporaryFailure, OSError, ValueError) as exc:
            login.say(vlog.INTERNAL, f"relay not opened {login.who()}: {exc}")


def start_session(login: Login, ident: Identity, full_name: str) -> None:
    """Drop privileges, chdir, set the environment and exec argv[1..]."""
    env = login.environ
    is_root = os.geteuid() == 0
    if ident.uid == 0 or ident.gid == 0:
        # qmail-getpw and qmail-lspawn refuse uid 0 too: a row must not hand out a root session.
        login.say(vlog.INTERNAL, f"refusing uid/gid 0 for {login.who()}")
        raise TemporaryFailure("refusing a session as uid or gid 0", 5)
    if is_root and login.smtp_by_name and not login.dovecot:
        login.say(vlog.LOGON, f"smtp session assumed from the program name {login.argv[1]}: "
                              f"no setuid {login.who()}")
    if is_root and login.service != SMTP and not login.dovecot:
        try:
            os.setgroups([ident.gid])
            os.setgid(ident.gid)
        except OSError as exc:
            login.say(vlog.INTERNAL, f"setgid {ident.gid} failed errno {exc.errno} {login.who()}")
            raise TemporaryFailure("setgid failed", 4) from None
        try:
            os.setuid(ident.uid)
        except OSError as exc:
            login.say(vlog.INTERNAL, f"setuid {ident.uid} failed errno {exc.errno} {login.who()}")
            raise TemporaryFailure("setuid failed", 5) from None
    if login.service != SMTP or login.dovecot:
        enter_home(login, ident)

    # vpopmail's order: USER, HOME, SHELL, VPOPUSER (setenv: an inherited one keeps its place).
    if login.dovecot:
        # Dovecot renames the session to USER: keep the full address it asked about.
        # (an account store's session is the account's own name, whatever case was typed).
        env["USER"] = login.raw_login if ident.domain is not None and "@" in login.raw_login else full_name
    else:
        env["USER"] = ident.name
    env["HOME"] = ident.home
    env["SHELL"] = "NOLOGIN"
    if ident.domain is not None:
        env["VPOPUSER"] = login.raw_login.lower()
    if login.dovecot:
        env["userdb_uid"] = str(ident.uid)
        env["userdb_gid"] = str(ident.gid)
        extra = env.get("EXTRA", "").split()
        env["EXTRA"] = " ".join(extra + [n for n in ("userdb_uid", "userdb_gid") if n not in extra])
        if login.lookup_only:
            env["AUTHORIZED"] = "2"
    try:
        os.execvpe(login.argv[1], login.argv[1:], env)
    except OSError as exc:
        login.say(vlog.INTERNAL, f"exec {login.argv[1]} failed errno {exc.errno} {login.who()}")
        raise TemporaryFailure(f"cannot run {login.argv[1]}: {exc.strerror}") from None


def enter_home(login: Login, ident: Identity) -> None:
    """chdir to the home; a vanished vpopmail user directory is re-created first."""
    try:
        os.chdir(ident.home)
        return
    except OSError as exc:
        if ident.domain is None:
            login.say(vlog.INTERNAL, f"chdir failed errno {exc.errno} {ident.home} {login.who()}")
            raise TemporaryFailure("cannot enter the home directory", 6) from None
    from vpop.dirs import remake_user_dir

    domain = ident.domain
    try:
        with ActingAs(domain.uid, domain.gid):
            remake_user_dir(domain.dir, ident.home, None, None)
        os.chdir(ident.home)
    except (TemporaryFailure, OSError) as exc:
        errno = getattr(exc, "errno", 0)
        login.say(vlog.INTERNAL, f"autocreate dir errno {errno} {ident.home} {login.who()}")
        raise TemporaryFailure("cannot enter the user directory", 6) from None


def main(argv: list[str] | None = None) -> int:
    """Entry point; the only place where outcomes become exit codes."""
    argv = sys.argv if argv is None else argv
    from vpop.environment import original_environ

    environ = original_environ()
    settings = None
    login = None
    try:
        from vpop.config import load_settings

        settings = load_settings(environ)
        if len(argv) < 2:
            raise UsageError("usage: vchkpw prog [args...]", 11)
        login = Login(environ, argv)
        login.log = vlog.Logger(settings.log_name, settings.logging, settings.syslog_socket)
        try:
            data = read_fd3()
        except AuthFailure as exc:
            login.say(vlog.LOGON, f"fd 3 refused: {exc.message} :{login.ip}")
            raise
        authenticate(login, settings, data)
        return 0  # not reached: authenticate execs
    except VpopError as exc:
        if isinstance(exc, NotRunnable):
            _stderr(f"{login.log_name if login is not None else 'vchkpw'}: {_NOT_RUNNABLE}")
        elif isinstance(exc, UsageError):
            _stderr(f"vchkpw: {exc.message}")
        elif isinstance(exc, TemporaryFailure):
            _stderr(f"vchkpw: {exc.message}")
            if login is not None and login.log is not None and not isinstance(exc, ConfigError):
                login.log.send(f"{login.log_name}: {exc.message} {login.who()}")
        if login is not None and login.dovecot and login.lookup_only and isinstance(exc, AuthFailure):
            return 3  # Dovecot userdb lookup: no such user (whatever the reason)
        if settings is not None and settings.exit_codes == "vpopmail":
            return exc.vpopmail_code
        return exc.exit_code
    except Exception as exc:
        # Anything unforeseen (a file that is not text, a driver error...) must not become Python's
        # exit 1, "wrong password".  Name the place, not the message: it could quote a secret.
        where = raised_at(exc, "vchkpw")
        _stderr(f"vchkpw: internal error {exc.__class__.__name__} at {where}")
        if login is not None and login.log is not None:
            login.log.send(f"{login.log_name}: internal error {exc.__class__.__name__} at {where} "
                           f"{login.who()}")
        return 111


def _stderr(text: str) -> None:
    try:
        os.write(2, (text + "\n").encode("utf-8", "replace"))
    except OSError:
        pass  # stderr may be closed
