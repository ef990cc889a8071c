"""The vmail-sql store (vmail-sql for Exim, read by tpop3d): ``domain``, ``popbox``,
``domain_alias`` and ``forwarder`` tables.

A login is ``local@domain`` (or ``local%domain``); the domain may be a ``domain_alias``.
The mailbox is ``domain.path + "/" + popbox.mbox_name`` (an mbox file, or a Maildir when the
name ends in ``/``); uid and gid come from ``domain.unix_user`` (a user name or a number;
gid = that user's primary group).  ``password_hash`` is ``{scheme}hash`` as tpop3d reads it
(see :func:`verify_vmail_hash`).

Names are compared exactly but for ASCII case (:func:`vpop.stores.base.same_name`), not
through the tables' collation (``utf8mb4_general_ci`` takes ``jöe`` and ``JÖE`` for ``joe``,
and ``exämple.org`` for ``example.org``).  The queries keep the plain ``=`` so the keys on
``domain_name`` and ``local_part`` are used; the rows are then checked in Python
(``BINARY col = %s`` would make MariaDB read the whole table).
"""

from vpop.assign import Domain
from vpop.credentials import read_vpopmail_mysql
from vpop.errors import TemporaryFailure
from vpop.names import ascii_lower
from vpop.sqldb import Database
from vpop.stores.base import Account, Store, column_text, is_sql_text, same_name

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
        if not is_sql_text(name):
            return None
        rows = self.db.query("SELECT domain_name, unix_user, path FROM domain WHERE domain_name = %s",
                             (name,), missing_table_ok=False)
        rows = [row for row in rows if same_name(row[0], name)]
        if not rows:
            rows = self.db.query("SELECT d.domain_name, d.unix_user, d.path, a.alias, a.domain_name "
                                 "FROM domain_alias a JOIN domain d ON a.domain_name = d.domain_name "
                                 "WHERE a.alias = %s", (name,))
            rows = [row[:3] for row in rows if same_name(row[3], name)
                    and same_name(row[4], column_text(row[0]))]
        if not rows:
            return None
        real, unix_user, path = rows[0]
        real, path = column_text(real), column_text(path)
        ids = unix_identity(column_text(unix_user))
        if ids is None or not path:
            raise TemporaryFailure(f"domain {real}: unix_user {unix_user!r} or path {path!r} unusable")
        return Domain(name, ascii_lower(real), ids[0], ids[1], path.rstrip("/"))

    def find_account(self, login: str) -> Account | None:
        for sep in ("@", "%"):
            local, found, domain_name = login.partition(sep)
            if found:
                break
        else:
            return None
        domain = self.domain(domain_name)
        if domain is None or not is_sql_text(local):
            return None
        rows = self.popbox_rows(local, domain, "local_part, password_hash, mbox_name")
        if not rows:
            return None
        local_part, stored, mbox_name = rows[0]
        account = Account(f"{column_text(local_part)}@{domain.real}", domain.uid, domain.gid, domain.dir,
                          None if stored is None else column_text(stored), "",
                          mailbox=f"{domain.dir}/{column_text(mbox_name)}")
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

    def popbox_rows(self, local: str, domain: Domain, columns: str) -> list[tuple]:
        """``columns`` of the popbox rows of ``local`` in ``domain``, names checked as the module says."""
        rows = self.db.query(f"SELECT local_part, domain_name, {columns} FROM popbox "
                             "WHERE domain_name = %s AND local_part = %s", (domain.real, local),
                             missing_table_ok=False)
        return [row[2:] for row in rows if same_name(row[0], local) and same_name(row[1], domain.real)]

    def popbox(self, local: str, domain: Domain) -> str | None:
        """The mailbox path of a popbox (``path/mbox_name``), or None."""
        if not is_sql_text(local):
            return None
        rows = self.popbox_rows(local, domain, "mbox_name")
        if not rows:
            return None
        if len(rows) > 1:
            raise TemporaryFailure(f"database inconsistency: {len(rows)} popbox rows for "
                                   f"{local}@{domain.real}")
        name = column_text(rows[0][0])
        if not name or name.startswith("/") or ".." in name.split("/"):
            raise TemporaryFailure(f"popbox {local}@{domain.real}: unusable mbox_name {name!r}")
        return f"{domain.dir}/{name}"

    def forwarders(self, local: str, domain: Domain) -> list[str]:
        """``forwarder.remote_name`` rows for the local part (several rows = several targets).

        As Exim's director: rows under the real domain or under the alias the mail came for.
        A missing table is a doubt (111), not "no forwarders".
        """
        if not is_sql_text(local):
            return []
        rows = self.db.query("SELECT local_part, domain_name, remote_name FROM forwarder "
                             "WHERE domain_name IN (%s, %s) AND local_part = %s",
                             (domain.real, domain.name, local), missing_table_ok=False)
        targets = [column_text(target).strip() for found, host, target in rows if same_name(found, local)
                   and (same_name(host, domain.real) or same_name(host, domain.name))]
        return [target for target in targets if target]

    def close(self) -> None:
        self.db.close()
