"""vpopmail's MySQL store: table ``vpopmail`` (many_domains) or one table per domain.

Per-domain table names follow vpopmail's mangling: the domain with every ``.`` and ``-``
turned into ``_``.  A table name cannot be a query parameter, so it is built only from a
domain already checked to be ``[a-z0-9.-]`` and is quoted as an identifier.
"""


from vpop.assign import Domain
from vpop.credentials import read_vpopmail_mysql
from vpop.errors import TemporaryFailure
from vpop.names import valid_domain
from vpop.sqldb import Database
from vpop.stores.base import Store, User, column_text, to_int

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from vpop.stores.base import Plan

LASTAUTH_TABLE = (
    "CREATE TABLE IF NOT EXISTS lastauth (user char(32) NOT NULL, domain char(96) NOT NULL, "
    "remote_ip char(18) not null, timestamp bigint default 0 NOT NULL, "
    "primary key (user, domain))"
)
DIR_CONTROL_COLUMNS = ("domain, cur_users, level_cur, level_max, level_start0, level_start1, level_start2, "
                       "level_end0, level_end1, level_end2, level_mod0, level_mod1, level_mod2, "
                       "level_index0, level_index1, level_index2, the_dir")
DIR_CONTROL_TABLE = (
    "CREATE TABLE IF NOT EXISTS dir_control (domain char(96) NOT NULL, cur_users int, level_cur int, "
    "level_max int, level_start0 int, level_start1 int, level_start2 int, level_end0 int, level_end1 int, "
    "level_end2 int, level_mod0 int, level_mod1 int, level_mod2 int, level_index0 int, level_index1 int, "
    "level_index2 int, the_dir char(160), PRIMARY KEY (domain))"
)
RELAY_TABLE = (
    "CREATE TABLE IF NOT EXISTS relay (ip_addr char(18) not null default '', "
    "timestamp char(12) default null, primary key (ip_addr))"
)
VALIAS_TABLE = ("CREATE TABLE IF NOT EXISTS valias (alias char(32) NOT NULL, domain char(96) NOT NULL, "
                "valias_line text NOT NULL, INDEX (alias, domain))")
# vpopmail's ip_addr is char(18), too narrow for IPv6: a table made here takes any address
IP_MAP_TABLE = ("CREATE TABLE IF NOT EXISTS ip_alias_map (ip_addr char(45) NOT NULL, domain char(96), "
                "PRIMARY KEY (ip_addr))")
LIMITS_COLUMNS = ("maxpopaccounts", "maxaliases", "maxforwards", "maxautoresponders", "maxmailinglists",
                  "diskquota", "maxmsgcount", "defaultquota", "defaultmaxmsgcount", "disable_pop",
                  "disable_imap", "disable_dialup", "disable_passwordchanging", "disable_webmail",
                  "disable_relay", "disable_smtp", "disable_spamassassin", "delete_spam", "disable_maildrop",
                  "perm_account", "perm_alias", "perm_forward", "perm_autoresponder", "perm_maillist",
                  "perm_quota", "perm_defaultquota")
LIMITS_TABLE = ("CREATE TABLE IF NOT EXISTS limits (domain CHAR(96) PRIMARY KEY, "
                + ", ".join(f"{name} INT(10) NOT NULL DEFAULT -1" for name in LIMITS_COLUMNS[:5]) + ", "
                + ", ".join(f"{name} BIGINT UNSIGNED NOT NULL DEFAULT 0" for name in LIMITS_COLUMNS[5:9])
                + ", "
                + ", ".join(f"{name} TINYINT(1) NOT NULL DEFAULT 0" for name in LIMITS_COLUMNS[9:19]) + ", "
                + ", ".join(f"{name} TINYINT(4) NOT NULL DEFAULT 0" for name in LIMITS_COLUMNS[19:]) + ")")


def user_table_sql(table: str, many_domains: bool) -> str:
    """vpopmail 5.4's user table (see conf/schema/vpopmail.sql)."""
    domain_column = "pw_domain char(96) not null, " if many_domains else ""
    key = "pw_name, pw_domain" if many_domains else "pw_name"
    return (f"CREATE TABLE IF NOT EXISTS `{table}` (pw_name char(64) not null, {domain_column}"
            "pw_passwd char(128), pw_uid int, pw_gid int, pw_gecos char(64), pw_dir char(160), "
            f"pw_shell char(20), pw_clear_passwd char(128), primary key ({key}))")


def table_name(domain: str) -> str:
    """vpopmail's table name for a domain's users when many_domains is off."""
    if not domain:
        return "users"
    if not valid_domain(domain):
        raise TemporaryFailure(f"refusing table name for domain {domain!r}")
    return domain.replace(".", "_").replace("-", "_")


class MysqlStore(Store):
    """Users in MySQL/MariaDB as vpopmail's ``--enable-auth-module=mysql`` keeps them."""

    def __init__(self, settings) -> None:
        self.settings = settings
        read, update = read_vpopmail_mysql(settings.mysql_credentials)
        self.db = Database(read, update, settings.mysql_connect_timeout, settings.mysql_default_socket,
                           settings.mysql_query_timeout)

    def _columns(self) -> str:
        columns = "pw_name, pw_passwd, pw_uid, pw_gid, pw_gecos, pw_dir, pw_shell"
        if self.settings.clear_passwords:
            columns += ", pw_clear_passwd"
        return columns

    def get_user(self, user: str, domain: Domain) -> User | None:
        if self.settings.many_domains:
            sql = f"SELECT {self._columns()} FROM vpopmail WHERE pw_name = %s AND pw_domain = %s"
            rows = self.db.query(sql, (user, domain.real), missing_table_ok=False)
        else:
            sql = f"SELECT {self._columns()} FROM `{table_name(domain.real)}` WHERE pw_name = %s"
            rows = self.db.query(sql, (user,), missing_table_ok=False)
        if not rows:
            return None
        row = [("" if value is None else value) for value in rows[0]]
        clear = row[7] if len(row) > 7 else ""
        return User(str(row[0]), domain.real, str(row[1]), to_int(row[2]), to_int(row[3]), str(row[4]),
                    str(row[5]), str(row[6]), str(clear))

    def _user_row(self, record: User, domain: Domain, with_clear: bool) -> tuple[str, str, str, tuple]:
        """(table, its CREATE, the column list, the values) of the user's row, in either layout."""
        values = [record.name, record.passwd, record.uid, record.gid, record.gecos, record.dir, record.shell]
        columns = "pw_name, pw_passwd, pw_uid, pw_gid, pw_gecos, pw_dir, pw_shell"
        if with_clear:
            columns += ", pw_clear_passwd"
            values.append(record.clear)
        if self.settings.many_domains:
            table, create = "vpopmail", user_table_sql("vpopmail", True)
            columns += ", pw_domain"
            values.append(domain.real)
        else:
            table = table_name(domain.real)
            create = user_table_sql(table, False)
        return table, create, columns, tuple(values)

    def add_user(self, record: User, domain: Domain) -> None:
        table, create, columns, values = self._user_row(record, domain, self.settings.clear_passwords)
        marks = ", ".join(["%s"] * len(values))
        self.db.execute(f"REPLACE INTO `{table}` ({columns}) VALUES ({marks})", values, create=create)

    def _user_table(self, domain: Domain) -> tuple[str, str, tuple]:
        """(table, WHERE for one user with a %s for the name, the domain's extra parameters)."""
        if self.settings.many_domains:
            return "vpopmail", "pw_name = %s AND pw_domain = %s", (domain.real,)
        return table_name(domain.real), "pw_name = %s", ()

    def _row_to_user(self, row, domain: Domain) -> User:
        row = [column_text(value) for value in row]
        clear = row[7] if len(row) > 7 else ""
        return User(row[0], domain.real, row[1], to_int(row[2]), to_int(row[3]), row[4], row[5], row[6],
                    clear)

    def create_tables(self, domain: Domain) -> None:
        """The user table (``vpopmail``, or the domain's own table when many_domains is off), and
        ``dir_control`` and ``lastauth``: made before a :meth:`transaction`, as DDL inside one
        would commit it half-way."""
        if self.settings.many_domains:
            self.db.execute(user_table_sql("vpopmail", True))
        else:
            self.db.execute(user_table_sql(table_name(domain.real), False))
        self.db.execute(DIR_CONTROL_TABLE)
        self.db.execute(LASTAUTH_TABLE)

    def insert_user(self, record: User, domain: Domain) -> bool:
        """One ``INSERT IGNORE``: no row is touched when the name is taken (another vadduser won)."""
        table, create, columns, values = self._user_row(record, domain, True)
        marks = ", ".join(["%s"] * len(values))
        return self.db.execute(f"INSERT IGNORE INTO `{table}` ({columns}) VALUES ({marks})", values,
                               create=create) == 1

    def update_user(self, record: User, domain: Domain) -> bool:
        table, where, extra = self._user_table(domain)
        if not self.db.query(f"SELECT 1 FROM `{table}` WHERE {where}", (record.name, *extra),
                             missing_table_ok=True, primary=True):
            return False
        self.db.execute(f"UPDATE `{table}` SET pw_passwd = %s, pw_uid = %s, pw_gid = %s, pw_gecos = %s, "
                        f"pw_dir = %s, pw_shell = %s, pw_clear_passwd = %s WHERE {where}",
                        (record.passwd, record.uid, record.gid, record.gecos, record.dir, record.shell,
                         record.clear, record.name, *extra))
        return True

    def delete_user(self, name: str, domain: Domain) -> bool:
        """The user's row, its ``lastauth`` row and its ``valias`` rows, in one transaction."""
        table, where, extra = self._user_table(domain)
        statements = [(f"DELETE FROM `{table}` WHERE {where}", (name, *extra)),
                      ("DELETE FROM lastauth WHERE user = %s AND domain = %s", (name, domain.real)),
                      ("DELETE FROM valias WHERE alias = %s AND domain = %s", (name, domain.real))]
        return self._transaction(statements)[0] > 0

    def _transaction(self, statements: list[tuple[str, tuple]]) -> list[int]:
        """Run the statements in one transaction (a missing table counts as no rows); all or nothing."""
        from vpop.sqldb import _code

        conn = self.db.writer()
        errors = self.db._errors()
        counts = []
        try:
            conn.begin()
            with conn.cursor() as cursor:
                for sql, args in statements:
                    try:
                        counts.append(cursor.execute(sql, args))
                    except errors as exc:
                        if _code(exc) != 1146:
                            raise
                        counts.append(0)
            conn.commit()
        except errors as exc:
            raise self.db.failed_transaction(conn, exc) from None
        return counts

    def list_users(self, domain: Domain) -> list[User]:
        columns = "pw_name, pw_passwd, pw_uid, pw_gid, pw_gecos, pw_dir, pw_shell, pw_clear_passwd"
        if self.settings.many_domains:
            rows = self.db.query(f"SELECT {columns} FROM vpopmail WHERE pw_domain = %s ORDER BY pw_name",
                                 (domain.real,))
        else:
            rows = self.db.query(f"SELECT {columns} FROM `{table_name(domain.real)}` ORDER BY pw_name")
        return [self._row_to_user(row, domain) for row in rows]

    def replace_users(self, domain: Domain, records: list[User], *, remove: bool = True,
                      dry_run: bool = False, progress=None) -> "Plan":
        """One transaction: the domain's rows read ``FOR UPDATE``, then the removed ones deleted
        (with their lastauth rows), the new ones inserted and the changed ones updated, each
        with ``executemany`` in batches.  Any error rolls the whole domain back."""
        from vpop.sqldb import _code
        from vpop.stores.base import Plan

        many = self.settings.many_domains
        table, where, extra = self._user_table(domain)
        columns = "pw_name, pw_passwd, pw_uid, pw_gid, pw_gecos, pw_dir, pw_shell, pw_clear_passwd"
        insert_columns = columns + (", pw_domain" if many else "")
        marks = ", ".join(["%s"] * (9 if many else 8))
        conn = self.db.writer()
        errors = self.db._errors()
        batch = 5000
        try:
            if not dry_run:
                with conn.cursor() as cursor:
                    cursor.execute(user_table_sql(table, many))  # DDL: before the transaction
            conn.begin()
            with conn.cursor() as cursor:
                select = f"SELECT {columns} FROM `{table}`" + (" WHERE pw_domain = %s" if many else "")
                try:
                    cursor.execute(select + " FOR UPDATE", extra)
                    rows = cursor.fetchall()
                except errors as exc:
                    if _code(exc) != 1146:
                        raise
                    rows = ()  # dry run on a domain without its table yet
                plan = Plan([self._row_to_user(row, domain) for row in rows], records, remove)
                if not dry_run:
                    gone = [(name, *extra) for name in plan.removed]
                    for start in range(0, len(gone), batch):
                        cursor.executemany(f"DELETE FROM `{table}` WHERE {where}", gone[start:start + batch])
                        cursor.executemany("DELETE FROM lastauth WHERE user = %s AND domain = %s",
                                           [(name, domain.real) for name, *_ in gone[start:start + batch]])
                    insert = f"INSERT INTO `{table}` ({insert_columns}) VALUES ({marks})"
                    update = (f"UPDATE `{table}` SET pw_passwd = %s, pw_uid = %s, pw_gid = %s, "
                              "pw_gecos = %s, pw_dir = %s, pw_shell = %s, pw_clear_passwd = %s "
                              f"WHERE {where}")
                    for chunk, sql in ((plan.added, insert), (plan.changed, update)):
                        inserting = sql.startswith("INSERT")
                        for start in range(0, len(chunk), batch):
                            part = chunk[start:start + batch]
                            if inserting:
                                values = [(r.name, r.passwd, r.uid, r.gid, r.gecos, r.dir, r.shell, r.clear,
                                           *extra) for r in part]
                            else:
                                values = [(r.passwd, r.uid, r.gid, r.gecos, r.dir, r.shell, r.clear, r.name,
                                           *extra) for r in part]
                            cursor.executemany(sql, values)
                            if progress is not None:
                                progress(len(part))
            if dry_run:
                conn.rollback()
            else:
                conn.commit()
        except errors as exc:
            raise self.db.failed_transaction(conn, exc) from None
        if progress is not None:
            progress(plan.unchanged + (len(plan.added) + len(plan.changed) if dry_run else 0))
        return plan

    def get_lastauth(self, record: User, domain: Domain) -> tuple[int, str] | None:
        rows = self.db.query("SELECT timestamp, remote_ip FROM lastauth WHERE user = %s AND domain = %s",
                             (record.name, domain.real))
        if not rows:
            return None
        return to_int(rows[0][0]), column_text(rows[0][1])

    def lastauth_map(self, domain: Domain, records: "list[User]") -> "dict[str, tuple[int, str]]":
        names = {record.name for record in records}
        rows = self.db.query("SELECT user, timestamp, remote_ip FROM lastauth WHERE domain = %s",
                             (domain.real,), primary=True)
        return {column_text(row[0]): (to_int(row[1]), column_text(row[2])) for row in rows
                if column_text(row[0]) in names}

    def set_lastauths(self, domain: Domain, entries: "list[tuple[User, int, str]]") -> int:
        """``REPLACE INTO lastauth`` in batches, one transaction."""
        from vpop.errors import DatabaseFailure

        values = [(record.name, domain.real, ip, when) for record, when, ip in entries]
        self.db.execute(LASTAUTH_TABLE)
        with self.transaction():
            try:
                with self.db.writer().cursor() as cursor:
                    for start in range(0, len(values), 5000):
                        cursor.executemany("REPLACE INTO lastauth (user, domain, remote_ip, timestamp) "
                                           "VALUES (%s, %s, %s, %s)", values[start:start + 5000])
            except self.db._errors() as exc:
                raise DatabaseFailure(f"database update failed: {self.db._describe(exc)}") from None
        return len(values)

    def set_allocated_count(self, domain: Domain, count: int) -> None:
        from vpop import dirs

        levels, indexes, the_dir = dirs.control_state(count)
        self.db.execute(f"REPLACE INTO dir_control ({DIR_CONTROL_COLUMNS}) VALUES "
                        "(%s, %s, %s, 3, 0, 0, 0, 61, 61, 61, 0, 2, 4, %s, %s, %s, %s)",
                        (domain.real, count, levels, *indexes, the_dir), create=DIR_CONTROL_TABLE)

    def release_user_subdir(self, domain: Domain, user_dir: str, name: str) -> None:
        """``backfill`` into ``.dir_control_free`` (a file, as vpopmail keeps it for every store);
        ``dec_dir_control`` on the ``dir_control`` row."""
        from vpop.stores.base import release_subdir_file

        release_subdir_file(domain, user_dir, name)
        self.forget_subdir(domain)

    def forget_subdir(self, domain: Domain) -> None:
        """``dec_dir_control`` on the ``dir_control`` row (a domain's, or ``dom_<uid>``)."""
        self.db.execute("UPDATE dir_control SET cur_users = cur_users - 1 "
                        "WHERE domain = %s AND cur_users > 0", (domain.real,), create=DIR_CONTROL_TABLE)

    def users_count(self, name: str, primary: bool = False) -> int:
        """``cur_users`` of a ``dir_control`` row (a domain's, or ``dom_<uid>``); 0 without one."""
        from vpop.numbers import atoi

        rows = self.db.query("SELECT cur_users FROM dir_control WHERE domain = %s", (name,), primary=primary)
        return atoi(rows[0][0]) if rows else 0

    def forget_dir_control(self, name: str) -> None:
        """The ``dir_control`` row of ``name`` goes (its hashing state starts again)."""
        self.db.execute("DELETE FROM dir_control WHERE domain = %s", (name,))

    # ---- a domain's rows (vpopmail's ``vauth_adddomain``/``vauth_deldomain``)

    def domain_table(self, name: str) -> str:
        """The table that holds the users of domain ``name``."""
        return "vpopmail" if self.settings.many_domains else table_name(name)

    def holds_users(self, name: str) -> bool:
        """Users of domain ``name`` are in the store (on the primary)."""
        if self.settings.many_domains:
            rows = self.db.query("SELECT 1 FROM vpopmail WHERE pw_domain = %s LIMIT 1", (name,), primary=True)
        else:
            rows = self.db.query(f"SELECT 1 FROM `{self.domain_table(name)}` LIMIT 1", primary=True)
        return bool(rows)

    def _table_exists(self, table: str) -> bool:
        return bool(self.db.query("SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() "
                                  "AND TABLE_NAME = %s", (table,), primary=True))

    def create_domain_table(self, name: str) -> bool:
        """The users' table of domain ``name`` (``CREATE TABLE IF NOT EXISTS``); True when this made it."""
        table = self.domain_table(name)
        existed = self._table_exists(table)
        self.db.execute(user_table_sql(table, self.settings.many_domains))
        return not existed

    def drop_domain_table(self, name: str) -> None:
        self.db.execute(f"DROP TABLE IF EXISTS `{self.domain_table(name)}`")

    def delete_domain_rows(self, name: str, others: "list[str]") -> "list[str]":
        """The domain's users and their ``lastauth``, ``valias``, ``limits`` and ``dir_control`` rows in
        one transaction; with ``many_domains = no`` its table dropped, unless a domain of ``others``
        makes the same table name: then it stays, and those domains are returned."""
        statements = [("DELETE FROM lastauth WHERE domain = %s", (name,)),
                      ("DELETE FROM valias WHERE domain = %s", (name,)),
                      ("DELETE FROM limits WHERE domain = %s", (name,)),
                      ("DELETE FROM dir_control WHERE domain = %s", (name,))]
        if self.settings.many_domains:
            statements.insert(0, ("DELETE FROM vpopmail WHERE pw_domain = %s", (name,)))
        self._transaction(statements)
        if self.settings.many_domains:
            return []
        table = self.domain_table(name)
        sharing = [other for other in others if self.domain_table(other) == table]
        if not sharing:
            self.drop_domain_table(name)
        return sharing

    def probe(self) -> None:
        self.db.query("SELECT 1")

    def connect_for_updates(self) -> None:
        self.db.writer()

    def next_user_subdir(self, domain: Domain, uid: int | None, gid: int | None,
                         noted: "Callable[[str, int], None] | None" = None) -> str:
        """vpopmail's ``dir_control`` row for the domain: ``cur_users`` advanced in one statement.

        Several front-ends share the table, so the count is taken with ``LAST_INSERT_ID(expr)``
        (atomic, per connection); freed paths still come from ``.dir_control_free``.  ``noted``
        is called with the subdirectory and the new count once both are known (inside the
        caller's :meth:`transaction`, nothing is committed before it returns).
        """
        from vpop import dirs

        free = dirs.take_free_path(domain.dir, uid, gid)
        self.db.execute(f"INSERT IGNORE INTO dir_control ({DIR_CONTROL_COLUMNS}) VALUES "
                        "(%s, 0, 0, 3, 0, 0, 0, 61, 61, 61, 0, 2, 4, 0, 0, 0, '')", (domain.real,),
                        create=DIR_CONTROL_TABLE)
        # A freed path taken while the count is 0 leaves it at 0, as vpopmail's inc_dir_control.
        advanced = self.db.execute("UPDATE dir_control SET cur_users = LAST_INSERT_ID(cur_users + 1) "
                                   "WHERE domain = %s AND (cur_users > 0 OR %s)", (domain.real, free is None))
        serial = 0
        subdir = free
        if advanced:
            serial = int(self.db.query("SELECT LAST_INSERT_ID()", primary=True)[0][0])
            levels, indexes, the_dir = dirs.control_state(serial)
            # only the newest count writes the rest of the row
            self.db.execute("UPDATE dir_control SET level_cur = %s, level_index0 = %s, level_index1 = %s, "
                            "level_index2 = %s, the_dir = %s WHERE domain = %s AND cur_users = %s",
                            (levels, *indexes, the_dir, domain.real, serial))
            if free is None:
                subdir = the_dir
        if subdir is None:
            raise TemporaryFailure(f"dir_control row for {domain.real} could not be advanced")
        if noted is not None:
            noted(subdir, serial)
        return subdir

    def allocated_count(self, domain: Domain) -> int:
        return self.users_count(domain.real, primary=True)

    def transaction(self):
        """One transaction on the update connection: committed at the end of the block, rolled back
        (by us, or by the server when we are killed or it dies) otherwise."""
        return _Transaction(self.db)

    def set_user_dir(self, record: User, domain: Domain, path: str) -> str:
        """``UPDATE ... WHERE pw_dir = ''``; when no row changed, the primary says who won."""
        if self.settings.many_domains:
            table, where, key = "vpopmail", "pw_name = %s AND pw_domain = %s", (record.name, domain.real)
        else:
            table, where, key = table_name(domain.real), "pw_name = %s", (record.name,)
        blank = "(pw_dir = '' OR pw_dir IS NULL)"
        if self.db.execute(f"UPDATE `{table}` SET pw_dir = %s WHERE {where} AND {blank}", (path, *key)) == 1:
            record.dir = path
            return path
        rows = self.db.query(f"SELECT pw_dir FROM `{table}` WHERE {where}", key, missing_table_ok=False,
                             primary=True)
        if not rows:
            raise TemporaryFailure(f"user {record.name}@{domain.real} vanished from {table}")
        if not rows[0][0]:
            raise TemporaryFailure(f"pw_dir of {record.name}@{domain.real} could not be stored")
        record.dir = column_text(rows[0][0])
        return record.dir

    def replace_password_hash(self, record: User, domain: Domain, old: str, new: str) -> bool:
        """``UPDATE ... SET pw_passwd = new WHERE <the user> AND pw_passwd = old`` on the update
        connection: a hash changed since it was read (or on the primary, not yet on a replica) is
        left alone.  The old hash is compared as bytes: the column's ci collation would fold case
        and ignore trailing spaces."""
        if self.settings.many_domains:
            table, where, key = "vpopmail", "pw_name = %s AND pw_domain = %s", (record.name, domain.real)
        else:
            table, where, key = table_name(domain.real), "pw_name = %s", (record.name,)
        changed = self.db.execute(f"UPDATE `{table}` SET pw_passwd = %s WHERE {where} "
                                  "AND CAST(pw_passwd AS BINARY) = CAST(%s AS BINARY)", (new, *key, old))
        if changed == 1:
            record.passwd = new
        return changed == 1

    def set_lastauth(self, record: User, domain: Domain, ip: str, now: int) -> None:
        self.db.execute("REPLACE INTO lastauth (user, domain, remote_ip, timestamp) VALUES (%s, %s, %s, %s)",
                        (record.name, domain.real, ip, now), create=LASTAUTH_TABLE)

    def open_relay(self, ip: str, now: int) -> None:
        """Record the IP in ``relay``; rebuild tcp.smtp.cdb when it is new (one affected row)."""
        from vpop import relay

        ip = relay.check_ip(ip)
        if len(ip) > 18:  # relay.ip_addr is char(18): an IPv6 address would be cut, not matched
            return
        affected = self.db.execute("REPLACE INTO relay (ip_addr, timestamp) VALUES (%s, %s)",
                                   (ip, str(now)), create=RELAY_TABLE)
        if affected == 1 and self.settings.rebuild_tcpserver_file:
            self._rebuild_rules(now)

    def clear_relay(self, now: int) -> int:
        """clearopensmtp: forget relay rows older than ``relay_clear_minutes``, then rebuild."""
        cutoff = now - self.settings.relay_clear_minutes * 60
        removed = self.db.execute("DELETE FROM relay WHERE timestamp <= %s", (str(cutoff),),
                                  create=RELAY_TABLE)
        if self.settings.rebuild_tcpserver_file:
            self._rebuild_rules(now)
        return removed

    def _rebuild_rules(self, now: int) -> None:
        """tcp.smtp.cdb from tcp.smtp plus one allow line per fresh relay row."""
        from vpop import relay, tcprules

        cutoff = now - self.settings.relay_clear_minutes * 60
        rows = self.db.query("SELECT ip_addr FROM relay WHERE timestamp > %s", (str(cutoff),))
        lines = relay.rules_from_rows([str(r[0]) for r in rows])
        tcp = self.settings.tcp_file
        tcprules.build(tcp, lines, tcp + ".cdb")

    def valias_lines(self, alias: str, domain: Domain) -> list[str]:
        rows = self.db.query("SELECT valias_line FROM valias WHERE alias = %s AND domain = %s",
                             (alias, domain.real))
        return [str(row[0]).rstrip("\r\n") for row in rows if row[0]]

    def domain_limits(self, domain: Domain) -> dict | None:
        if not self.settings.mysql_limits:
            return None
        row = self.db.query_row_dict("SELECT * FROM limits WHERE domain = %s", (domain.real,))
        if row is None:
            return None
        return {name.lower(): str(value) for name, value in row.items() if value is not None}

    # ------------------------------------------------------------------ valias, ip_alias_map, limits

    def list_valiases(self, domain: Domain, alias: str | None = None) -> list[tuple[str, str]]:
        """``valias`` rows of the domain (vmysql's ``valias_select_all``: by alias)."""
        if alias is None:
            rows = self.db.query("SELECT alias, valias_line FROM valias WHERE domain = %s ORDER BY alias",
                                 (domain.real,), primary=True)
        else:
            rows = self.db.query("SELECT alias, valias_line FROM valias WHERE alias = %s AND domain = %s",
                                 (alias, domain.real), primary=True)
        return [(column_text(row[0]), column_text(row[1])) for row in rows]

    def insert_valias(self, alias: str, domain: Domain, line: str) -> bool:
        """The check for the same line and the ``INSERT`` under the server's named lock of this
        alias (``GET_LOCK``): two valias -i of one line, on any hosts, add it once.  The table
        has no unique key to lean on (``valias_line`` is TEXT, and an operator's table is theirs)
        and a locking read would not do at READ COMMITTED, where InnoDB takes no gap locks."""
        import hashlib

        name = "vpop.valias." + hashlib.md5(f"{alias}@{domain.real}".encode("utf-8", "surrogateescape"),
                                            usedforsecurity=False).hexdigest()
        self.db.execute(VALIAS_TABLE)
        wait = max(self.settings.mysql_query_timeout - 2, 1)  # an answer before the read times out
        got = self.db.query("SELECT GET_LOCK(%s, %s)", (name, wait), primary=True)
        if not got or got[0][0] != 1:
            raise TemporaryFailure(f"valias {alias}@{domain.real} is locked by another valias")
        try:
            # compared as bytes: the column's ci collation would fold case and trailing spaces
            taken = self.db.query("SELECT 1 FROM valias WHERE alias = %s AND domain = %s "
                                  "AND CAST(valias_line AS BINARY) = CAST(%s AS BINARY) LIMIT 1",
                                  (alias, domain.real, line), primary=True)
            if taken:
                return False
            self.db.execute("INSERT INTO valias (alias, domain, valias_line) VALUES (%s, %s, %s)",
                            (alias, domain.real, line))
            return True
        finally:
            self.db.query("SELECT RELEASE_LOCK(%s)", (name,), primary=True)

    def delete_valias(self, alias: str, domain: Domain) -> int:
        return self.db.execute("DELETE FROM valias WHERE alias = %s AND domain = %s", (alias, domain.real),
                               create=VALIAS_TABLE)

    def remove_valias_line(self, alias: str, domain: Domain, line: str) -> bool:
        """vmysql's ``valias_remove``: the one row of the alias with that line."""
        sql = "DELETE FROM valias WHERE alias = %s AND domain = %s AND valias_line = %s"
        return self.db.execute(sql, (alias, domain.real, line), create=VALIAS_TABLE) > 0

    def ip_map(self) -> list[tuple[str, str]]:
        rows = self.db.query("SELECT ip_addr, domain FROM ip_alias_map ORDER BY ip_addr", primary=True)
        return [(column_text(row[0]), column_text(row[1])) for row in rows]

    def ip_map_width(self) -> int | None:
        """The width of ``ip_alias_map.ip_addr`` (None: no table yet, it will be made wide)."""
        rows = self.db.query("SELECT CHARACTER_MAXIMUM_LENGTH FROM information_schema.COLUMNS "
                             "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'ip_alias_map' "
                             "AND COLUMN_NAME = 'ip_addr'", primary=True)
        return to_int(rows[0][0]) if rows else None

    def add_ip_map(self, ip: str, domain: str) -> None:
        """vmysql's ``REPLACE INTO`` (the IP is the key: one domain per IP)."""
        self.db.execute("REPLACE INTO ip_alias_map (ip_addr, domain) VALUES (%s, %s)", (ip, domain),
                        create=IP_MAP_TABLE)

    def delete_ip_map(self, ip: str, domain: str) -> bool:
        if (ip, domain) not in self.ip_map():
            return False
        sql = "DELETE FROM ip_alias_map WHERE ip_addr = %s AND domain = %s"
        return self.db.execute(sql, (ip, domain)) > 0

    def limits_row(self, domain: Domain) -> dict | None:
        """The domain's ``limits`` row ({column: int}), whatever ``mysql_limits`` says; None if none."""
        rows = self.db.query(f"SELECT {', '.join(LIMITS_COLUMNS)} FROM limits WHERE domain = %s",
                             (domain.real,), primary=True)
        if not rows:
            return None
        return {name: to_int(value) for name, value in zip(LIMITS_COLUMNS, rows[0], strict=True)}

    def set_limits_row(self, domain: Domain, values: dict) -> None:
        """vmysql's ``vset_limits``: one ``REPLACE INTO limits``."""
        marks = ", ".join(["%s"] * (len(LIMITS_COLUMNS) + 1))
        self.db.execute(f"REPLACE INTO limits (domain, {', '.join(LIMITS_COLUMNS)}) VALUES ({marks})",
                        (domain.real, *(int(values.get(name, 0)) for name in LIMITS_COLUMNS)),
                        create=LIMITS_TABLE)

    def delete_limits_row(self, domain: Domain) -> int:
        return self.db.execute("DELETE FROM limits WHERE domain = %s", (domain.real,), create=LIMITS_TABLE)

    def close(self) -> None:
        self.db.close()


class _Transaction:
    """``BEGIN`` ... ``COMMIT`` on the update connection (nesting: only the outermost counts)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.outer = False
        self.conn = None

    def __enter__(self) -> "_Transaction":
        from vpop.errors import DatabaseFailure

        conn = self.conn = self.db.writer()
        self.outer = not getattr(conn, "_vpop_in_transaction", False)
        if self.outer:
            try:
                conn.begin()
            except self.db._errors() as exc:
                raise DatabaseFailure(f"database update failed: {self.db._describe(exc)}") from None
            conn._vpop_in_transaction = True
        return self

    def __exit__(self, kind: object, *exc: object) -> None:
        from vpop.errors import CommitUnanswered, DatabaseFailure

        if not self.outer:
            return
        conn = self.conn
        conn._vpop_in_transaction = False
        errors = self.db._errors()
        if conn is not self.db._update:
            # the connection was lost (and dropped) inside the block: the server rolled the
            # transaction back; a COMMIT on a new connection would only seem to succeed
            if kind is None:
                raise DatabaseFailure("database update failed: the connection was lost in a transaction")
            return
        if kind is None:
            try:
                conn.commit()
            except errors as exc:
                raise CommitUnanswered(f"database update failed: {self.db._describe(exc)}") from None
        else:
            try:
                conn.rollback()
            except errors:
                pass
