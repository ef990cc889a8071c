"""Start-up benchmarks: whole-process runs as ratios to ``python -I -S -c pass``.

Run with ``make bench`` (as root, after ``make test`` or ``make demo`` installed .venv).
Every figure is the median of N runs of a whole process started with ``posix_spawn``,
divided by the median of the floor, ``<venv python> -I -S -c pass`` (the developers' guide's
floor; our launchers start ``-IS`` too), with the same interpreter, its runs alternating
with the measured program's (so a busy moment of the machine weighs on both).  Budgets are
the issues'; a figure over budget is marked.
Not a test: machines differ, and a timing assertion would be flaky by design.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
VENV_BIN = os.path.dirname(sys.executable)
PYTHON = os.path.join(VENV_BIN, "python")


def spawn_time(argv: list[str], env: dict, fd3: bytes | None = None, stdin_path: str | None = None,
               expect: int = 0) -> float:
    """Seconds for one whole process: spawn, run, exit; fd 3 filled from a pipe when given."""
    actions = []
    read_end = None
    if fd3 is not None:
        read_end, write_end = os.pipe()
        os.write(write_end, fd3)
        os.close(write_end)
        actions.append((os.POSIX_SPAWN_DUP2, read_end, 3))
    if stdin_path is not None:
        actions.append((os.POSIX_SPAWN_OPEN, 0, stdin_path, os.O_RDONLY, 0))
    devnull = os.open(os.devnull, os.O_WRONLY)
    actions += [(os.POSIX_SPAWN_DUP2, devnull, 1), (os.POSIX_SPAWN_DUP2, devnull, 2)]
    start = time.perf_counter()
    pid = os.posix_spawn(argv[0], argv, env, file_actions=actions)
    _, status = os.waitpid(pid, 0)
    elapsed = time.perf_counter() - start
    os.close(devnull)
    if read_end is not None:
        os.close(read_end)
    code = os.waitstatus_to_exitcode(status)
    if code != expect:
        raise RuntimeError(f"{argv[0]} exited {code}, not {expect}")
    return elapsed


FLOOR_ARGV = [PYTHON, "-I", "-S", "-c", "pass"]
FLOOR_ENV = {"PATH": "/usr/bin:/bin"}


def median_of(runs: int, argv: list[str], env: dict, **kw) -> float:
    spawn_time(argv, env, **kw)  # warm the page cache
    return statistics.median(spawn_time(argv, env, **kw) for _ in range(runs))


def timed(runs: int, argv: list[str], env: dict, **kw) -> tuple[float, float]:
    """Medians of ``argv`` and of the floor, run alternately so both see the same machine."""
    spawn_time(argv, env, **kw)
    subject, floor = [], []
    for _ in range(runs):
        floor.append(spawn_time(FLOOR_ARGV, FLOOR_ENV))
        subject.append(spawn_time(argv, env, **kw))
    return statistics.median(subject), statistics.median(floor)


def sandbox(store: str = "cdb", mysql: dict | None = None,
            mysql_update: dict | None = None) -> tuple[str, str, str]:
    """A vpopmail tree with one MD5-crypt user; returns (config, sandbox dir, domain dir)."""
    from vpop import admin
    from vpop.config import load_settings

    base = tempfile.mkdtemp(prefix=f"vpop-bench-{store}-", dir="/tmp")
    os.chmod(base, 0o755)
    config = f"{base}/vpop.conf"
    for path in ("vpopmail/etc", "vpopmail/domains", "qmail/users", "qmail/control"):
        os.makedirs(f"{base}/{path}")
    with open(config, "w") as handle:
        handle.write(f"vpopmail_home = {base}/vpopmail\nqmail_home = {base}/qmail\nstore = {store}\n"
                     f"syslog_socket = {base}/no-syslog\n")
    if mysql is not None:
        with open(f"{base}/vpopmail/etc/vpopmail.mysql", "w") as handle:
            for server in (mysql, mysql_update or {}):
                if server:
                    handle.write(f"localhost|{server['unix_socket']}|{server['user']}|{server['password']}|"
                                 f"{server['database']}\n")
    settings = load_settings({"VPOP_CONFIG": config})
    domain_dir = admin.add_domain(settings, "example.com", 89, 89)
    admin.add_user(settings, "example.com", "bob", "secret", hash_method="md5")
    return config, base, domain_dir


def measure_store(runs: int, store: str, budgets: tuple[float, float],
                  mysql: dict | None = None) -> None:
    """A login through vchkpw and a 4 KB delivery through vdelivermail on one store."""
    from vpop.qmailenv import virtual_delivery_environ

    config, base, domain_dir = sandbox(store, mysql)
    login_env = {"PATH": "/usr/bin:/bin", "VPOP_CONFIG": config, "TCPLOCALPORT": "110",
                 "TCPREMOTEIP": "192.0.2.10"}
    fd3 = b"bob@example.com\0secret\0<1.2@bench>\0"
    seconds, floor = timed(runs, [f"{VENV_BIN}/vchkpw", "/bin/true"], login_env, fd3=fd3)
    report(f"vchkpw login, {store} store, MD5-crypt", seconds, floor, budgets[0])

    message = f"{base}/message"
    with open(message, "wb") as handle:
        handle.write(b"From: a@example.org\nTo: bob@example.com\nSubject: bench\n\n" + b"x" * 4000 + b"\n")
    env = virtual_delivery_environ("bob@example.com", domain_dir, "a@example.org",
                                   base={"PATH": "/usr/bin:/bin", "VPOP_CONFIG": config})
    argv = [f"{VENV_BIN}/vdelivermail", "", "bounce-no-mailbox"]
    seconds, floor = timed(runs, argv, env, stdin_path=message)
    report(f"vdelivermail 4 KB, {store} store", seconds, floor, budgets[1])


def measure_rehash(runs: int) -> None:
    """A CDB login that rehashes MD5-crypt -> sha512-crypt (``rehash_on_login``): a fresh MD5 user
    per run, so every measured login rewrites vpasswd and vpasswd.cdb."""
    from vpop import admin
    from vpop.config import load_settings

    config, base, domain_dir = sandbox("cdb")
    with open(config, "a") as handle:
        handle.write("rehash_on_login = yes\n")
    settings = load_settings({"VPOP_CONFIG": config})
    for i in range(runs + 1):
        admin.add_user(settings, "example.com", f"u{i}", "secret", hash_method="md5")
    env = {"PATH": "/usr/bin:/bin", "VPOP_CONFIG": config, "TCPLOCALPORT": "110", "TCPREMOTEIP": "192.0.2.10"}
    argv = [f"{VENV_BIN}/vchkpw", "/bin/true"]
    spawn_time(argv, env, fd3=f"u{runs}@example.com\0secret\0\0".encode())
    subject, floor = [], []
    for i in range(runs):
        floor.append(spawn_time(FLOOR_ARGV, FLOOR_ENV))
        subject.append(spawn_time(argv, env, fd3=f"u{i}@example.com\0secret\0\0".encode()))
    with open(f"{domain_dir}/vpasswd") as handle:
        rehashed = sum(1 for line in handle if line.split(":")[1].startswith("$6$"))
    if rehashed != runs + 1:
        raise RuntimeError(f"{rehashed} of {runs + 1} users rehashed")
    report("vchkpw login, cdb store, MD5 -> sha512 rehash", statistics.median(subject),
           statistics.median(floor), None)




def measure_admin(runs: int, store: str, mysql: dict | None = None, sizes=(1_000, 100_000)) -> None:
    """``vadduser`` (a new user each run) and ``vuserinfo`` in a domain of N users, against
    ``python -I -S -c pass``: how they grow with the domain (vpasswd + cdb are rewritten on CDB)."""
    import pymysql
    from vpop.assign import lookup
    from vpop.config import load_settings
    from vpop.stores.cdb import write_vpasswd

    for size in sizes:
        config, base, domain_dir = sandbox(store, mysql)
        settings = load_settings({"VPOP_CONFIG": config})
        domain = lookup(settings.qmail_home, "example.com")
        fixed = "$1$benchsal$0HqPtr3XSWiaqDP8wISgX/"
        if store == "cdb":
            write_vpasswd(domain_dir, [f"bulk{n}:{fixed}:1:0:bulk{n}:{domain_dir}/bulk{n}:NOQUOTA:"
                                       for n in range(size)], domain.uid, domain.gid)
        else:
            conn = pymysql.connect(unix_socket=mysql["unix_socket"], user=mysql["user"],
                                   password=mysql["password"], database=mysql["database"], autocommit=True)
            with conn.cursor() as cur:
                cur.execute("DELETE FROM vpopmail WHERE pw_domain = 'example.com' AND pw_name LIKE 'bulk%%'")
                rows = [(f"bulk{n}", fixed, f"bulk{n}", f"{domain_dir}/bulk{n}") for n in range(size)]
                cur.executemany("INSERT INTO vpopmail (pw_name, pw_domain, pw_passwd, pw_uid, pw_gid, "
                                "pw_gecos, pw_dir, pw_shell, pw_clear_passwd) VALUES (%s, 'example.com', %s, "
                                "0, 0, %s, %s, 'NOQUOTA', '')", rows)
            conn.close()
        env = {"PATH": "/usr/bin:/bin", "VPOP_CONFIG": config}
        count = max(3, min(runs, 9))
        added, info, floor = [], [], []
        for i in range(count):
            floor.append(spawn_time(FLOOR_ARGV, FLOOR_ENV))
            added.append(spawn_time([f"{VENV_BIN}/vadduser", f"new{size}x{i}@example.com", "secret"], env))
            info.append(spawn_time([f"{VENV_BIN}/vuserinfo", f"new{size}x{i}@example.com"], env))
        base_floor = statistics.median(floor)
        report(f"vadduser, {store}, domain of {size} users", statistics.median(added), base_floor,
               50.0 if store == "cdb" and size == 100_000 else None)
        report(f"vuserinfo, {store}, domain of {size} users", statistics.median(info), base_floor, None)


def measure_refusals(runs: int, store: str, mysql: dict | None = None) -> None:
    """Medians of refused logins: a wrong password against an unknown user and an unknown domain.

    They should be alike (vchkpw spends a check against the ``password_scheme`` on unknown
    names), so that nobody can tell from the answer's timing which names exist.
    """

    config, base, domain_dir = sandbox(store, mysql)
    env = {"PATH": "/usr/bin:/bin", "VPOP_CONFIG": config, "TCPLOCALPORT": "110", "TCPREMOTEIP": "192.0.2.10"}
    argv = [f"{VENV_BIN}/vchkpw", "/bin/true"]
    schemes = (("sha512-crypt", "sha512"), ("bcrypt", "bcrypt")) if mysql is None else (("md5-crypt", "md5"),)
    for scheme, method in schemes:
        with open(config, "a") as handle:
            handle.write(f"password_scheme = {scheme}\n")
        from vpop import admin
        from vpop.config import load_settings

        admin.add_user(load_settings({"VPOP_CONFIG": config}), "example.com", method, "secret",
                       hash_method=method)
        cases = (("wrong password", f"{method}@example.com"), ("unknown user", "nobody@example.com"),
                 ("unknown domain", f"{method}@unknown.example"))
        medians = []
        for _label, login in cases:
            fd3 = login.encode() + b"\0wrong\0<1.2@bench>\0"
            medians.append(median_of(runs, argv, env, fd3=fd3, expect=1))
        shown = ", ".join(f"{label} {m * 1000:.1f} ms" for (label, _), m in zip(cases, medians, strict=True))
        print(f"refused logins, {store} store, {scheme}: {shown}")
        with open(config) as handle:
            kept = [line for line in handle if not line.startswith("password_scheme")]
        with open(config, "w") as handle:
            handle.writelines(kept)


def measure_getpw(runs: int, db: dict, through_daemon: bool = False) -> None:
    """qmail-getpw for an existing mailbox user on the qmail-mysql store (through vlookupd: against
    ``python -I -S``, the vlookupd budget's floor)."""
    import pymysql

    base = tempfile.mkdtemp(prefix="vpop-bench-getpw-", dir="/tmp")
    os.chmod(base, 0o755)
    os.makedirs(f"{base}/qmail/control")
    home = f"{base}/home/iain"
    os.makedirs(home)
    os.chown(home, 800, 100)
    sqlserver = f"{base}/qmail/control/sqlserver"
    with open(sqlserver, "w") as handle:
        handle.write(f"server localhost\nlogin {db['user']}\npassword {db['password']}\ndb {db['database']}\n"
                     f"socket {db['unix_socket']}\n")
    os.chmod(sqlserver, 0o640)
    config = f"{base}/vpop.conf"
    with open(config, "w") as handle:
        handle.write(f"qmail_home = {base}/qmail\nstore = qmail-mysql\nsyslog_socket = {base}/no-syslog\n")
    conn = pymysql.connect(unix_socket=db["unix_socket"], user="root", database=db["database"],
                           autocommit=True)
    with conn.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS mailbox")
        load_schema(cur, "qmail-mysql.sql")
        cur.execute("INSERT INTO mailbox (username, uid, gid, home, password, password_type) "
                    "VALUES ('iain', 800, 100, %s, 'x', 'Password')", (home,))
    conn.close()
    env = {"PATH": "/usr/bin:/bin", "VPOP_CONFIG": config}
    argv = [f"{VENV_BIN}/qmail-getpw", "iain-slowlaris"]
    if not through_daemon:
        seconds, floor = timed(runs, argv, env)
        report("qmail-getpw, qmail-mysql store", seconds, floor, 5.0)
        return
    with lookup_daemon(config, f"{base}/vlookupd.sock"):
        seconds, floor = timed(runs, argv, env)
    report("qmail-getpw, qmail-mysql, via vlookupd (-S)", seconds, floor, 1.4)


def measure_vmail_sql(runs: int, db: dict) -> None:
    """A popbox login (MD5-crypt) and a 4 KB mbox delivery on the vmail-sql store."""
    import pymysql
    from vpop.passwords import make_hash
    from vpop.qmailenv import qmail_local_environ

    base = tempfile.mkdtemp(prefix="vpop-bench-vmail-", dir="/tmp")
    os.chmod(base, 0o755)
    path = f"{base}/spool/example.org"
    os.makedirs(path)
    os.makedirs(f"{base}/vpopmail/etc")
    with open(f"{base}/vpopmail/etc/vmail-sql.mysql", "w") as handle:
        handle.write(f"localhost|{db['unix_socket']}|{db['user']}|{db['password']}|vmail\n")
    config = f"{base}/vpop.conf"
    with open(config, "w") as handle:
        handle.write(f"vpopmail_home = {base}/vpopmail\nstore = vmail-sql\n"
                     f"syslog_socket = {base}/no-syslog\n")
    conn = pymysql.connect(unix_socket=db["unix_socket"], user="root", autocommit=True)
    with conn.cursor() as cur:
        cur.execute("CREATE DATABASE vmail")
        cur.execute("GRANT ALL ON vmail.* TO %s@'localhost'", (db["user"],))
        cur.execute("USE vmail")
        load_schema(cur, "vmail-sql.sql")
        cur.execute("INSERT INTO domain (domain_name, unix_user, path) VALUES ('example.org', '89', %s)",
                    (path,))
        cur.execute("INSERT INTO popbox (domain_name, local_part, password_hash, mbox_name) "
                    "VALUES ('example.org', 'bob', %s, 'bob')", ("{crypt_md5}" + make_hash("secret", "md5"),))
    conn.close()
    login_env = {"PATH": "/usr/bin:/bin", "VPOP_CONFIG": config, "TCPLOCALPORT": "110",
                 "TCPREMOTEIP": "192.0.2.10"}
    seconds, floor = timed(runs, [f"{VENV_BIN}/vchkpw", "/bin/true"], login_env,
                        fd3=b"bob@example.org\0secret\0<1.2@bench>\0")
    report("vchkpw login, vmail-sql store, MD5-crypt", seconds, floor, 5.0)
    message = f"{base}/message"
    with open(message, "wb") as handle:
        handle.write(b"From: a@example.net\nSubject: bench\n\n" + b"x" * 4000 + b"\n")
    env = qmail_local_environ("vmail", path, "example.org-bob", "-", "bob", "example.org", "a@example.net",
                              base={"PATH": "/usr/bin:/bin", "VPOP_CONFIG": config})
    argv = [f"{VENV_BIN}/vdelivermail", "", "bounce-no-mailbox"]
    seconds, floor = timed(runs, argv, env, stdin_path=message)
    report("vdelivermail 4 KB mbox, vmail-sql store", seconds, floor, 5.0)


def measure_vconvert(db: dict, users: int = 100_000, runs: int = 3) -> None:
    """``vconvert -c -m`` of one domain of ``users`` users into an empty vpopmail table, against
    the ``mariadb`` client loading the same rows from a prepared SQL file (multi-row INSERTs in one
    transaction, as mysqldump writes them).  Medians of ``runs``, alternating; budget 3x."""
    import subprocess

    import pymysql
    from vpop.stores.cdb import write_vpasswd

    config, base, domain_dir = sandbox("cdb", db)
    stored = "$1$benchslt$" + "x" * 22
    rows = [(f"u{i:06d}", stored, 1, 0, f"User {i}", f"{domain_dir}/{i % 100}/u{i:06d}", f"{i}S", f"c{i}")
            for i in range(users)]
    write_vpasswd(domain_dir, [":".join(str(v) for v in row) for row in rows], 89, 89)
    sql = f"{base}/load.sql"
    with open(sql, "w") as handle:
        handle.write("START TRANSACTION;\n")
        for start in range(0, users, 1000):
            values = ",".join("('{}','{}',{},{},'{}','{}','{}','{}','example.com')".format(*row)
                              for row in rows[start:start + 1000])
            handle.write("INSERT INTO vpopmail (pw_name, pw_passwd, pw_uid, pw_gid, pw_gecos, pw_dir, "
                         f"pw_shell, pw_clear_passwd, pw_domain) VALUES {values};\n")
        handle.write("COMMIT;\n")
    conn = pymysql.connect(unix_socket=db["unix_socket"], user=db["user"], password=db["password"],
                           database=db["database"], autocommit=True)

    def empty() -> None:
        with conn.cursor() as cur:
            cur.execute("DELETE FROM vpopmail")

    client = ["mariadb", f"--socket={db['unix_socket']}", f"--user={db['user']}",
              f"--password={db['password']}", db["database"]]
    env = {"PATH": "/usr/bin:/bin", "VPOP_CONFIG": config}
    ours, theirs = [], []
    for _ in range(runs):
        empty()
        with open(sql, "rb") as handle:
            started = time.perf_counter()
            subprocess.run(client, stdin=handle, check=True)
            theirs.append(time.perf_counter() - started)
        empty()
        started = time.perf_counter()
        subprocess.run([f"{VENV_BIN}/vconvert", "-c", "-m", "example.com"], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        ours.append(time.perf_counter() - started)
    conn.close()
    report(f"vconvert -c -m, {users} users (floor: mariadb)", statistics.median(ours),
           statistics.median(theirs), 3.0)


def measure_replica(runs: int) -> None:
    """Logins with the read line on a replica and the update line on its primary: a user the
    replica has, and one it does not have yet (its SQL thread stopped), which the primary is
    asked for.  The extra query is counted on the primary (Com_select)."""
    import pymysql
    from servers import replicated_mariadb, root_connection, wait_for_replica

    with replicated_mariadb() as (primary, replica):
        db = mysql_database(primary)
        wait_for_replica(primary, replica)
        replica_db = dict(db, unix_socket=replica["unix_socket"])
        config, _base, _domain_dir = sandbox("mysql", replica_db, db)
        with open(config, "a") as handle:
            handle.write("auth_logging = no\n")  # no lastauth write: the reads alone
        wait_for_replica(primary, replica)
        with root_connection(replica) as conn, conn.cursor() as cur:
            cur.execute("STOP SLAVE SQL_THREAD")
        with root_connection(primary) as conn, conn.cursor() as cur:
            cur.execute("INSERT INTO vpopmail.vpopmail SELECT 'carol', pw_domain, pw_passwd, pw_uid, pw_gid, "
                        "pw_gecos, REPLACE(pw_dir, '/bob', '/carol'), pw_shell, pw_clear_passwd "
                        "FROM vpopmail.vpopmail WHERE pw_name = 'bob'")
        env = {"PATH": "/usr/bin:/bin", "VPOP_CONFIG": config, "TCPLOCALPORT": "110",
               "TCPREMOTEIP": "192.0.2.10"}

        def selects() -> int:
            with pymysql.connect(unix_socket=primary["unix_socket"], user="root") as conn, \
                    conn.cursor() as cur:
                cur.execute("SHOW GLOBAL STATUS LIKE 'Com_select'")
                return int(cur.fetchone()[1])

        for user in ("bob", "carol"):
            fd3 = f"{user}@example.com\0secret\0<1.2@bench>\0".encode()
            argv = [f"{VENV_BIN}/vchkpw", "/bin/true"]
            before = selects()
            spawn_time(argv, env, fd3=fd3)
            asked = selects() - before
            seconds, floor = timed(runs, argv, env, fd3=fd3)
            where = "on the replica" if user == "bob" else "missing on the replica"
            report(f"vchkpw login, mysql, user {where}", seconds, floor, None)
            print(f"    queries on the primary per login: {asked}")


def measure_vpopmaild(runs: int) -> None:
    """One vpopmaild session through tcpserver, as Roundcube's password driver holds it: greeting,
    ``slogin``, ``mod_user`` with a new ``clear_text_password`` (hashed by the policy, vpasswd +
    cdb rewritten), ``quit``; from connect to the server's close, against the floor."""
    import select
    import signal
    import socket
    import subprocess

    config, base, domain_dir = sandbox("cdb")
    tcpserver = subprocess.Popen(["tcpserver", "-HRD", "127.0.0.1", "0", f"{VENV_BIN}/vpopmaild"],
                                 env={"PATH": "/usr/bin:/bin", "VPOP_CONFIG": config},
                                 stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                 start_new_session=True)
    port = 0
    for _ in range(200):  # tcpserver -v would say which port; find it in /proc instead
        port = _listening_port(tcpserver.pid)
        if port:
            break
        time.sleep(0.01)
    if not port:
        raise RuntimeError("tcpserver did not listen")
    script = (b"slogin bob@example.com secret\r\nmod_user bob@example.com\r\n"
              b"clear_text_password secret\r\n.\r\nquit\r\n")

    def session() -> float:
        started = time.perf_counter()
        with socket.create_connection(("127.0.0.1", port)) as conn:
            conn.sendall(script)
            data = b""
            while True:
                select.select([conn], [], [], 30)
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
        elapsed = time.perf_counter() - started
        if data != b"+OK \r\n" * 5:
            raise RuntimeError(f"vpopmaild answered {data!r}")
        return elapsed

    try:
        session()
        subject, floor = [], []
        for _ in range(runs):
            floor.append(spawn_time(FLOOR_ARGV, FLOOR_ENV))
            subject.append(session())
    finally:
        os.killpg(tcpserver.pid, signal.SIGTERM)
        tcpserver.wait()
    report("vpopmaild slogin + mod_user + quit, cdb", statistics.median(subject), statistics.median(floor),
           None)


def _listening_port(pid: int) -> int:
    """The TCP port a process listens on, from /proc/net/tcp and its socket inodes."""
    try:
        inodes = {os.readlink(f"/proc/{pid}/fd/{fd}")[8:-1] for fd in os.listdir(f"/proc/{pid}/fd")
                  if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:[")}
        with open("/proc/net/tcp") as handle:
            for line in handle.readlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                    return int(fields[1].split(":")[1], 16)
    except OSError:
        pass
    return 0


class lookup_daemon:  # noqa: N801 - a context manager, named for what it holds
    """The installed vlookupd serving ``config`` (its ``lookup_socket`` set to ``socket_path``)."""

    def __init__(self, config: str, socket_path: str, workers: int = 4) -> None:
        self.config = config
        with open(config, "a") as handle:
            handle.write(f"lookup_socket = {socket_path}\nlookup_workers = {workers}\n")
        self.proc = None

    def __enter__(self) -> "lookup_daemon":
        import subprocess

        from vpop.config import load_settings
        from vpop.lookup.client import tell

        self.proc = subprocess.Popen([f"{VENV_BIN}/vlookupd"], env={"PATH": "/usr/bin:/bin",
                                     "VPOP_CONFIG": self.config}, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        settings = load_settings({"VPOP_CONFIG": self.config})
        deadline = time.monotonic() + 20
        while tell(settings, "hello", []) is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("vlookupd did not start")
            time.sleep(0.05)
        time.sleep(0.5)  # every worker connected
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait()


def measure_daemon(runs: int, db: dict) -> None:
    """vchkpw and a 4 KB vdelivermail on the MySQL store through vlookupd, against ``-I -S``."""
    from vpop.qmailenv import virtual_delivery_environ

    config, base, domain_dir = sandbox("mysql", db)
    login_env = {"PATH": "/usr/bin:/bin", "VPOP_CONFIG": config, "TCPLOCALPORT": "110",
                 "TCPREMOTEIP": "192.0.2.10"}
    fd3 = b"bob@example.com\0secret\0<1.2@bench>\0"
    message = f"{base}/message"
    with open(message, "wb") as handle:
        handle.write(b"From: a@example.org\nTo: bob@example.com\nSubject: bench\n\n" + b"x" * 4000 + b"\n")
    env = virtual_delivery_environ("bob@example.com", domain_dir, "a@example.org",
                                   base={"PATH": "/usr/bin:/bin", "VPOP_CONFIG": config})
    with lookup_daemon(config, f"{base}/vlookupd.sock"):
        seconds, floor = timed(runs, [f"{VENV_BIN}/vchkpw", "/bin/true"], login_env, fd3=fd3)
        report("vchkpw login, mysql, via vlookupd (-S)", seconds, floor, 1.4)
        argv = [f"{VENV_BIN}/vdelivermail", "", "bounce-no-mailbox"]
        seconds, floor = timed(runs, argv, env, stdin_path=message)
        report("vdelivermail 4 KB, mysql, via vlookupd (-S)", seconds, floor, 1.6)


def measure_parallel_logins(db: dict, clients: int = 16, logins: int = 800) -> None:
    """Logins per second with ``clients`` vchkpw processes at once, with and without vlookupd."""
    from concurrent.futures import ThreadPoolExecutor

    config, base, domain_dir = sandbox("mysql", db)
    env = {"PATH": "/usr/bin:/bin", "VPOP_CONFIG": config, "TCPLOCALPORT": "110", "TCPREMOTEIP": "192.0.2.10"}
    fd3 = b"bob@example.com\0secret\0<1.2@bench>\0"
    argv = [f"{VENV_BIN}/vchkpw", "/bin/true"]

    def rate() -> float:
        started = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(lambda _: spawn_time(argv, env, fd3=fd3), range(logins)))
        return logins / (time.perf_counter() - started)

    direct = rate()
    with lookup_daemon(config, f"{base}/vlookupd.sock"):
        through = rate()
    print(f"logins/s, {clients} parallel vchkpw, mysql store: direct {direct:.0f}, "
          f"via vlookupd {through:.0f}")


def load_schema(cur, name: str) -> None:
    with open(os.path.join(ROOT, "conf/schema", name)) as handle:
        text = "\n".join(line.split("--", 1)[0] for line in handle)
    for statement in text.split(";"):
        if statement.strip():
            cur.execute(statement)


def mysql_database(server: dict) -> dict:
    """A database, a user and the vpopmail schema on the private server."""
    import pymysql

    root = pymysql.connect(unix_socket=server["unix_socket"], user="root", autocommit=True)
    with root.cursor() as cur:
        cur.execute("CREATE DATABASE vpopmail")
        cur.execute("CREATE USER 'vpopmail'@'localhost' IDENTIFIED BY 'bench-pw'")
        cur.execute("GRANT ALL ON vpopmail.* TO 'vpopmail'@'localhost'")
        cur.execute("USE vpopmail")
        load_schema(cur, "vpopmail.sql")
    root.close()
    return dict(server, user="vpopmail", password="bench-pw", database="vpopmail")


def report(name: str, seconds: float, floor: float, budget: float | None) -> None:
    """One line: the median, the ratio to the floor measured alongside it, the budget."""
    ratio = seconds / floor
    mark = "" if budget is None else ("  ok" if ratio <= budget else "  OVER BUDGET")
    limit = "" if budget is None else f" (budget {budget}x)"
    print(f"{name:<44} {seconds * 1000:7.2f} ms  floor {floor * 1000:6.2f} ms  {ratio:5.2f}x{limit}{mark}")


PARTS = ("store", "rehash", "refusals", "admin", "vpopmaild", "getpw", "daemon", "vmail_sql", "vconvert",
         "replica")
MYSQL_PARTS = {"store", "refusals", "getpw", "daemon", "vmail_sql", "admin", "vconvert"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", "--runs", type=int, default=30)
    parser.add_argument("--only", action="append", choices=PARTS,
                        help="run only these lines (repeatable; e.g. --only admin: vadduser and vuserinfo)")
    args = parser.parse_args()
    wanted = set(args.only or PARTS)
    sys.path.insert(0, os.path.join(ROOT, "lib"))
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    floor = median_of(args.runs, FLOOR_ARGV, FLOOR_ENV)
    print(f"floor: {PYTHON} -I -S -c pass: {floor * 1000:.2f} ms (median of {args.runs})")

    if "store" in wanted:
        measure_store(args.runs, "cdb", (1.6, 1.8))
    if "rehash" in wanted:
        measure_rehash(args.runs)
    if "refusals" in wanted:
        measure_refusals(args.runs, "cdb")
    if "admin" in wanted:
        measure_admin(args.runs, "cdb")
    if "vpopmaild" in wanted:
        measure_vpopmaild(args.runs)
    if wanted & MYSQL_PARTS:
        from servers import private_mariadb

        with private_mariadb() as server:
            db = mysql_database(server)
            if "store" in wanted:
                measure_store(args.runs, "mysql", (5.0, 5.0), db)
            if "refusals" in wanted:
                measure_refusals(args.runs, "mysql", db)
            if "getpw" in wanted:
                measure_getpw(args.runs, db)
            if "daemon" in wanted:
                measure_getpw(args.runs, db, through_daemon=True)
                measure_daemon(args.runs, db)
                measure_parallel_logins(db)
            if "vmail_sql" in wanted:
                measure_vmail_sql(args.runs, db)
            if "admin" in wanted:
                measure_admin(args.runs, "mysql", db)
            if "vconvert" in wanted:
                measure_vconvert(db)
    if "replica" in wanted:
        measure_replica(args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
