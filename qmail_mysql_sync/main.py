"""qmail-mysql-sync: write what qmail-mysql's tables say into stock qmail's files.

``qmail-mysql-sync [--dry-run]`` reads the ``rcpthosts``, ``virtual``, ``alias`` and
``mailbox`` tables (store ``qmail-mysql``, ``control/sqlserver``) and brings
``control/rcpthosts`` (+ ``morercpthosts``), ``control/virtualdomains``, ``users/assign``
(+ ``users/cdb``) and the ``.qmail-*`` files up to date, each written atomically (temporary
file, fsync, rename).  Lines the site wrote itself are kept: ours are the ``virtual_prefix``
ones, and hosts the site accepts by hand live in ``rcpthosts_manual``.  A second run
changes nothing.  Exit 0 (problems with rows are reported on stderr and skipped), 111 when
the database or a file cannot be read or written.
"""

import os
import sys

from vpop.errors import VpopError

MANIFEST = "qmail-mysql-sync.files"


def read_lines(path: str) -> list[str] | None:
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as handle:
            return [line.rstrip("\r") for line in handle.read().split("\n") if line.strip()]
    except FileNotFoundError:
        return None


class Sync:
    """Planned file contents, compared with what is on disk."""

    def __init__(self, dry_run: bool) -> None:
        self.dry_run = dry_run
        self.changed: list[str] = []

    def put(self, path: str, text: str, mode: int = 0o644, uid: int | None = None,
            gid: int | None = None) -> bool:
        from vpop.files import read_regular

        data = read_regular(path)  # never through a symlink a user planted in a home
        current = None if data is None else data.decode("utf-8", "surrogateescape")
        if current == text:
            return False
        self.changed.append(path)
        if self.dry_run:
            import difflib

            print(f"would write {path}")
            old = [] if current is None else current.splitlines(keepends=True)
            sys.stdout.writelines(difflib.unified_diff(old, text.splitlines(keepends=True), path, path))
        else:
            from vpop.files import ANY_OWNER, UserDir

            encoded = text.encode("utf-8", "surrogateescape")
            # through the directory's descriptor: a home swapped for a link is not followed
            with UserDir(os.path.dirname(path), ANY_OWNER) as directory:
                directory.replace(os.path.basename(path), lambda handle: handle.write(encoded),
                                  uid if os.geteuid() == 0 else None, gid, mode)
        return True

    def remove(self, path: str) -> None:
        if os.path.lexists(path):
            self.changed.append(path)
            if self.dry_run:
                print(f"would remove {path}")
            else:
                os.unlink(path)


def find_user_factory(store, settings):
    from vpop.qmail_render import Identity

    cache: dict[str, Identity | None] = {}

    def find_user(name: str) -> Identity | None:
        if name not in cache:
            account = store.mailbox(name)
            if account is not None:
                cache[name] = Identity(account.name, account.uid, account.gid, account.home)
            elif settings.getpw_system_users:
                import pwd

                try:
                    entry = pwd.getpwnam(name)
                    cache[name] = Identity(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir)
                except KeyError:
                    cache[name] = None
            else:
                cache[name] = None
        return cache[name]

    return find_user


def run(dry_run: bool) -> int:
    from vpop.config import load_settings
    from vpop.errors import ConfigError
    from vpop.qmail_render import RCPTHOSTS_LIMIT, render
    from vpop.stores import open_store

    settings = load_settings()
    if settings.store != "qmail-mysql":
        raise ConfigError(settings.path, None, "qmail-mysql-sync needs store = qmail-mysql")
    qmail = settings.qmail_home
    control = qmail + "/control"
    from vpop import log as vlog

    store = open_store(settings, vlog.Logger("qmail-mysql-sync", settings.logging, settings.syslog_socket))
    prefix = settings.virtual_prefix
    table_hosts = [row for row in store.rows("rcpthosts", "host")]
    manual = read_lines(settings.rcpthosts_manual)
    sync = Sync(dry_run)
    if manual is None:
        # First run: what control/rcpthosts accepts today and the table does not list is the site's own.
        known = {str(h[0]).strip().lower() for h in table_hosts if h[0]}
        current = (read_lines(control + "/rcpthosts") or []) + (read_lines(control + "/morercpthosts") or [])
        manual = [h for h in current if h.lower() not in known]
        sync.put(settings.rcpthosts_manual, "".join(h + "\n" for h in manual))
    me = (read_lines(control + "/me") or [""])[0].strip()
    plan = render(store.rows("virtual", "username, ext, virtual_username, virtual_host"),
                  store.rows("alias", "username, alias, alias_username, alias_host"),
                  table_hosts, manual, find_user_factory(store, settings), prefix, me)
    store.close()

    # Order matters while qmail runs: first the .qmail files the new routing points at, then
    # the routing (users/assign + users/cdb, virtualdomains), then rcpthosts; removals last.
    manifest_path = control + "/" + MANIFEST
    previous = set(read_lines(manifest_path) or [])
    planned = dict(plan.dot_qmail)
    for path in sorted(set(planned) - previous):
        data = None if dry_run else _existing(path)
        if data is not None and data != planned[path][0]:
            plan.problems.append(f"{path}: exists and was not written by qmail-mysql-sync, left alone")
            del planned[path]
    # Recorded before anything is written, so a run that fails half-way still knows its files.
    sync.put(manifest_path, "".join(p + "\n" for p in sorted(previous | set(planned))))
    for path, (text, uid, gid) in sorted(planned.items()):
        sync.put(path, text, 0o644, uid, gid)

    users = qmail + "/users"
    site_assign = [line for line in read_lines(users + "/assign") or []
                   if line != "." and not line.startswith((f"={prefix}-", f"+{prefix}-"))]
    assign_text = "".join(line + "\n" for line in site_assign + plan.assign) + ".\n"
    if not dry_run:
        os.makedirs(users, exist_ok=True)
    sync.put(users + "/assign", assign_text)
    if not dry_run and stale(users + "/cdb", users + "/assign"):
        rebuild_users_cdb(qmail)
        sync.changed.append(users + "/cdb")

    owned = f":{prefix}-"
    site_vd = [line for line in read_lines(control + "/virtualdomains") or [] if owned not in line]
    site_hosts = {line.split(":", 1)[0].lower() for line in site_vd}
    ours = []
    for line in plan.virtualdomains:
        if line.split(":", 1)[0] in site_hosts:
            plan.problems.append(f"virtual {line.split(':', 1)[0]}: already in control/virtualdomains "
                                 "(not ours), left alone")
        else:
            ours.append(line)
    sync.put(control + "/virtualdomains", "".join(line + "\n" for line in site_vd + ours))

    hosts = plan.rcpthosts
    sync.put(control + "/rcpthosts", "".join(h + "\n" for h in hosts[:RCPTHOSTS_LIMIT]))
    more = hosts[RCPTHOSTS_LIMIT:]
    if more or os.path.exists(control + "/morercpthosts"):
        sync.put(control + "/morercpthosts", "".join(h + "\n" for h in more))
        if not dry_run and stale(control + "/morercpthosts.cdb", control + "/morercpthosts"):
            build_morercpthosts(qmail, more)
            sync.changed.append(control + "/morercpthosts.cdb")

    for path in sorted(previous - set(planned)):
        if os.path.basename(path).startswith(".qmail") and path not in plan.dot_qmail:
            sync.remove(path)
    sync.put(manifest_path, "".join(p + "\n" for p in sorted(planned)))

    for problem in plan.problems:
        print(f"qmail-mysql-sync: {problem}", file=sys.stderr)
    if not sync.changed:
        print("qmail-mysql-sync: nothing to change")
    elif not dry_run:
        print(f"qmail-mysql-sync: {len(sync.changed)} file(s) written")
    return 0


def _existing(path: str) -> str | None:
    from vpop.files import read_regular

    try:
        data = read_regular(path)
    except OSError:
        return ""  # something that is not a regular file: not ours to replace
    return None if data is None else data.decode("utf-8", "surrogateescape")


def stale(cdb: str, source: str) -> bool:
    """A cdb that is missing or older than its source (a failed rebuild is retried next run)."""
    try:
        return os.stat(cdb).st_mtime_ns < os.stat(source).st_mtime_ns
    except FileNotFoundError:
        return os.path.exists(source)


def run_tool(argv: list[str], cwd: str) -> None:
    """qmail-newu / qmail-newmrh; a failure is temporary (111), the next run tries again."""
    import subprocess

    from vpop.errors import TemporaryFailure

    done = subprocess.run(argv, cwd=cwd, check=False)
    if done.returncode != 0:
        raise TemporaryFailure(f"{argv[0]} exited {done.returncode}")


def rebuild_users_cdb(qmail: str) -> None:
    """qmail-newu when the site has it, else the same cdb written by vpop."""
    newu = qmail + "/bin/qmail-newu"
    if os.access(newu, os.X_OK):
        run_tool([newu], qmail)
    else:
        from vpop.assign import write_users_cdb

        write_users_cdb(qmail)


def build_morercpthosts(qmail: str, hosts: list[str]) -> None:
    """qmail-newmrh when present, else morercpthosts.cdb (key = host, empty data) written here."""
    newmrh = qmail + "/bin/qmail-newmrh"
    if os.access(newmrh, os.X_OK):
        run_tool([newmrh], qmail)
        return
    from vpop.files import write_cdb

    write_cdb(qmail + "/control/morercpthosts.cdb", [(host.lower().encode(), b"") for host in hosts])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv[1:]
    if argv not in ([], ["--dry-run"], ["-n"]):
        print("usage: qmail-mysql-sync [--dry-run]", file=sys.stderr)
        return 2
    try:
        return run(bool(argv))
    except VpopError as exc:
        print(f"qmail-mysql-sync: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        print(f"qmail-mysql-sync: {exc}", file=sys.stderr)
        return 111
