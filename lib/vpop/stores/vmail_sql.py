"""The vmail-sql store (vmail-sql for Exim, read by tpop3d): ``domain``, ``popbox``,
``domain_alias`` and ``forwarder`` tables.

A login is ``local@domain`` (or ``local%domain``); the domain may be a ``domain_alias``.
The mailbox is ``domain.path + "/" + popbox.mbox_name`` (an mbox file, or a Maildir when the
name ends in ``/``); uid and gid come from ``domain.unix_user`` (a user name or a number;
gid = that user's primary group).  ``password_hash`` is ``{scheme}hash`` as tpop3d reads it
(see :func:`verify_vmail_hash`).
"""

from vpop.assign import Domain
from vpop.credentials import read_vpopmail_mysql
from vpop.errors import TemporaryFailure
from vpop.sqldb import Database
from vpop.stores.base import Account, Store

DEFAULT_FORWARDER = "_default_"
SCHEMES = ("md5", "crypt", "crypt_md5", "plaintext", "mysql", "sha1")


def unix_identity(unix_user: str) -> tuple[int, int] | None:
    """uid and gid of ``domain.unix_user``: a user name or a uid (gid = its primary group)."""
    import pwd

    text = unix_user.strip()
    try:
        entry = pwd.getpwuid(int(text)) if text.isdigit() else pwd.getpwnam(text)
    except KeyError:
        if text.isdigit():
            return int(text), int(text)  # a bare uid without a passwd entry: gid = uid
        return None
    return entry.pw_uid, entry.pw_gid


def hash_scheme(stored: str) -> tuple[str, str]:
    """``{crypt_md5}$1$...`` -> ("crypt_md5", "$1$..."); no prefix -> ("md5", stored) (tpop3d)."""
    if stored.startswith("{") and "}" in stored:
        end = stored.index("}")
        return stored[1:end].lower(), stored[end + 1:]
    return "md5", stored


def verify_vmail_hash(password: bytes, stored: str) -> bool | None:
    """True/False for a known scheme; None for an unknown scheme or a malformed hash."""
    import base64
    import hashlib

    from vpop import passwords

    scheme, value = hash_scheme(stored)
    if scheme == "md5":
        digest = hashlib.md5(password).digest()
        if len(value) == 32:
            return passwords.equal(digest.hex(), value.lower())
        if len(value) == 24:
            return passwords.equal(base64.b64encode(digest), value.encode())
        return None
    if scheme in ("crypt", "crypt_md5"):
        return passwords.crypt_verify(password, value)
    if scheme == "plaintext":
        return bool(value) and passwords.equal(password, value)
    if scheme == "mysql":
        if len(value) == 16:
            return passwords.equal(passwords.mysql323_hash(password), value.lower())
        if len(value) == 8:
            return passwords.equal(passwords.mysql323_hash(password)[:8], value.lower())
        return None
    if scheme == "sha1":
        if len(value) != 40:
            return None
        return passwords.equal(hashlib.sha1(password).hexdigest(), value.lower())
    return None


class VmailSqlStore(Store):
    """vmail-sql's tables through ``vmail-sql.mysql`` (read line, optional update line)."""

    def __init__(self, settings) -> None:
        self.settings = settings
        read, update = read_vpopmail_mysql(settings.vmail_sql_credentials)
        self.db = Database(read, update, settings.mysql_connect_timeout, settings.mysql_default_socket,
                           settings.mysql_query_timeout)

    def domain(self, name: str) -> Domain | None:
        """The domain row for ``name`` or for the domain it is an alias of."""
        rows = self.db.query("SELECT domain_name, unix_user, path FROM domain WHERE domain_name = %s",
                             (name,), missing_table_ok=False)
        if not rows:
            rows = self.db.query("SELECT d.domain_name, d.unix_user, d.path FROM domain_alias a "
                                 "JOIN domain d ON a.domain_name = d.domain_name WHERE a.alias = %s",
                                 (name,))
        if not rows:
            return None
        real, unix_user, path = rows[0]
        ids = unix_identity("" if unix_user is None else str(unix_user))
        if ids is None or not path:
            raise TemporaryFailure(f"domain {real}: unix_user {unix_user!r} or path {path!r} unusable")
        return Domain(name, str(real).lower(), ids[0], ids[1], str(path).rstrip("/"))

    def find_account(self, login: str) -> Account | None:
        for sep in ("@", "%"):
            local, found, domain_name = login.partition(sep)
            if found:
                break
        else:
            return None
        domain = self.domain(domain_name)
        if domain is None:
            return None
        rows = self.db.query("SELECT local_part, password_hash, mbox_name FROM popbox "
                             "WHERE domain_name = %s AND local_part = %s", (domain.real, local),
                             missing_table_ok=False)
        if not rows:
            return None
        local_part, stored, mbox_name = rows[0]
        account = Account(f"{local_part}@{domain.real}", domain.uid, domain.gid, domain.dir,
                          None if stored is None else str(stored), "",
                          mailbox=f"{domain.dir}/{mbox_name or ''}")
        if len(rows) > 1:
            account.problem = f"database inconsistency: {len(rows)} popbox rows"
        elif stored is None:
            account.problem = "NULL password_hash"
        else:
            account.scheme = hash_scheme(str(stored))[0]
            if account.scheme not in SCHEMES:
                account.problem = f"unknown password format {{{account.scheme}}}"
        return account

    def verify(self, account: Account, password: bytes, challenge: bytes, service: str) -> str | None:
        from vpop import passwords

        stored = account.password or ""
        if account.scheme == "plaintext" and service == "pop":
            if passwords.apop_verify(password, challenge, stored[len("{plaintext}"):]):
                return "APOP"
        return "PLAIN" if verify_vmail_hash(password, stored) else None

    def popbox(self, local: str, domain: Domain) -> str | None:
        """The mailbox path of a popbox (``path/mbox_name``), or None."""
        rows = self.db.query("SELECT mbox_name FROM popbox WHERE domain_name = %s AND local_part = %s",
                             (domain.real, local), missing_table_ok=False)
        if not rows:
            return None
        if len(rows) > 1:
            raise TemporaryFailure(f"database inconsistency: {len(rows)} popbox rows for "
                                   f"{local}@{domain.real}")
        name = str(rows[0][0] or "")
        if not name or name.startswith("/") or ".." in name.split("/"):
            raise TemporaryFailure(f"popbox {local}@{domain.real}: unusable mbox_name {name!r}")
        return f"{domain.dir}/{name}"

    def forwarders(self, local: str, domain: Domain) -> list[str]:
        """``forwarder.remote_name`` rows for the local part (several rows = several targets).

        As Exim's director: rows under the real domain or under the alias the mail came for.
        A missing table is a doubt (111), not "no forwarders".
        """
        rows = self.db.query("SELECT remote_name FROM forwarder WHERE domain_name IN (%s, %s) "
                             "AND local_part = %s", (domain.real, domain.name, local),
                             missing_table_ok=False)
        return [str(row[0]).strip() for row in rows if row[0] and str(row[0]).strip()]

    def close(self) -> None:
        self.db.close()
