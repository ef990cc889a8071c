"""vconvert: move users from one store into another (vpopmail's ``vconvert``)."""

import sys
from collections.abc import Sequence

from vpop.admin import cli

USAGE = """vconvert: usage
 The first option sets which format to convert FROM,
 the second option sets which format to convert TO.
 -e = etc format
 -c = cdb format
 -m = sql format
 -S = set sqwebmail passwords
 -v = version
 -d = debug info"""

HELP = USAGE + """

usage: vconvert [-d] [--dry-run] -FROM -TO [-f passwd_file] [-F shadow_file] [domain ...]
       vconvert [-d] [--dry-run] -S [domain ...]
       vconvert [-d] [--dry-run] -p user_pass_file -c|-m|-M domain ...
 -c   the CDB store: vpasswd + vpasswd.cdb in each domain's directory (users/assign, under
      vpopmail_home), written under .vpasswd.lock
 -m   the MySQL store: the database of the settings file's mysql_credentials, in its
      many_domains layout (yes: one vpopmail table; no: a table per domain); -s is the same
      (vpopmail 4's letter)
 -M   the same MySQL database in the other layout (many_domains flipped): -m -M and -M -m
      convert between "mysql (small version) and mysql (large version)"
 -e   a passwd file and its shadow file (source only): -f passwd_file (default /etc/passwd),
      -F shadow_file (default /etc/shadow; a missing one: hashes from the passwd file)
 -p   a file of user:crypted_password lines (source only), added as -e adds accounts; each
      user also gets Maildir/sqwebmail-pass, as vpopmail's -p wrote it
 -S   sqwebmail passwords: every user of the settings' store gets Maildir/sqwebmail-pass
      (a tab and the user's hash), as the domain's uid, mode 0600
 --dry-run  read everything, say what would change, write nothing
 Both stores come from the one settings file (VPOP_CONFIG); its own 'store' setting is not used.
 With no domain every domain of users/assign is converted (not with -e).

 -c/-m/-M into -c/-m/-M: each domain's users in the target become exactly the source's, every
 field as is (hash, uid, flags, gecos, directory, quota, clear password); users only in the
 target are removed; each user's lastauth and the domain's hashing count (.dir-control, the
 dir_control row) go along where both stores have them.  -e adds each account (directory and
 default quota, as vadduser) or gives an existing user the account's hash; root, locked
 accounts and hashes of 2 characters or less are skipped.  A second run changes nothing.
 MySQL: one transaction per domain.

 Output: one line per domain (a progress bar on stderr when it is a terminal).

Differences from vpopmail's tool:
  exit 0 only when every domain was converted; 1 when any domain failed, 245 for an unknown
  domain, 111 when a store cannot be reached, 2 for a usage error (vpopmail always exits 0);
  an unknown domain or an unreachable store changes nothing; a source with no users for a
  domain the target has users of is refused (vpopmail emptied the target); -p needs the
  domains (vpopmail added the file's users to every domain); -e skips root and locked accounts;
  lastauth and the hashing count are carried (vpopmail lost them)."""

LETTERS = {"c": "cdb", "m": "mysql", "s": "mysql", "M": "mysql-other", "e": "etc", "p": "passwd"}
SOURCES_ONLY = ("etc", "passwd")


def command(args: Sequence[str]) -> int:
    from vpop.admin import convert

    args = list(args)
    head = args[:args.index("--")] if "--" in args else args
    dry_run = "--dry-run" in head
    if dry_run:
        args = [word for i, word in enumerate(args) if word != "--dry-run" or i >= len(head)]
    opts, operands = cli.options("vconvert", args, "cmsMevdSp:f:F:", USAGE, HELP)
    kinds: list[str] = []
    debug = sqwebmail = False
    passwd_file, shadow_file, userpass_file = "/etc/passwd", "/etc/shadow", ""
    for letter, value in opts:
        if letter == "d":
            debug = True
        elif letter == "S":
            sqwebmail = True
        elif letter == "f":
            passwd_file = value or passwd_file
        elif letter == "F":
            shadow_file = value or shadow_file
        else:
            if letter == "p":
                userpass_file = value or ""
            kinds.append(LETTERS[letter])
    settings = cli.load()
    if sqwebmail:
        if kinds:
            raise cli.Usage(USAGE)
        return _sqwebmail_all(settings, operands, dry_run, debug)
    if len(kinds) != 2 or kinds[0] == kinds[1] or kinds[1] in SOURCES_ONLY:
        raise cli.Usage(USAGE)
    source_kind, target_kind = kinds
    if source_kind in SOURCES_ONLY and not operands:
        raise cli.Usage(f"vconvert: -{'e' if source_kind == 'etc' else 'p'} needs the domains to add the "
                        "accounts to\n" + USAGE)
    domains = (convert.named_domains(settings, operands) if operands else convert.all_domains(settings))
    accounts: list = []
    source = None
    if source_kind in SOURCES_ONLY:
        if source_kind == "etc":
            accounts, skipped = convert.read_accounts(passwd_file, shadow_file)
        else:
            accounts, skipped = convert.read_userpass(userpass_file)
        for name in skipped:
            print(f"skipping {name}", flush=True)
    target = convert.open_kind(settings, target_kind)
    try:
        if source_kind not in SOURCES_ONLY:
            source = convert.open_kind(settings, source_kind)
            source.probe()
        target.probe()
        target.connect_for_updates()
        code = _convert_all(settings, source, target, target_kind, domains, accounts, dry_run, debug)
        if source_kind == "passwd":
            names = {name for name, _, _ in accounts}
            for domain in domains:
                convert.sqwebmail_pass(target, domain, names=names, dry_run=dry_run)
        return code
    finally:
        target.close()
        if source is not None:
            source.close()


def _sqwebmail_all(settings, operands: list[str], dry_run: bool, debug: bool) -> int:
    """-S: Maildir/sqwebmail-pass for every user of the settings' store."""
    from vpop.admin import convert

    if settings.store not in ("cdb", "mysql"):
        raise cli.AdminError(f"Error: vconvert -S reads store = cdb or mysql; this site has store = "
                             f"{settings.store}")
    domains = convert.named_domains(settings, operands) if operands else convert.all_domains(settings)
    with convert.open_kind(settings, settings.store) as store:
        store.probe()
        for domain in domains:
            written, unchanged = convert.sqwebmail_pass(store, domain, dry_run=dry_run)
            mode = " (dry run: nothing written)" if dry_run else ""
            print(f"converting {domain.real} done: {written} sqwebmail-pass written, {unchanged} unchanged"
                  f"{mode}", flush=True)
    return 0


def _convert_all(settings, source, target, target_kind, domains, accounts, dry_run, debug) -> int:
    from vpop.admin import convert
    from vpop.errors import TemporaryFailure

    bar = None
    if sys.stderr.isatty():
        from tqdm import tqdm  # only vconvert imports it

        bar = tqdm(total=0, unit="user", file=sys.stderr)
    say = bar.write if bar is not None else (lambda text: print(text, flush=True))

    def progress(count: int) -> None:
        if bar is not None:
            bar.update(count)

    failed = 0
    try:
        for domain in domains:
            if bar is not None:
                bar.set_description(domain.real)
            try:
                if source is None:
                    if bar is not None:
                        bar.total += len(accounts)
                        bar.refresh()
                    plan = convert.etc_domain(settings, target, target_kind, domain, accounts,
                                              dry_run=dry_run, progress=progress)
                else:
                    if bar is not None:
                        bar.total += len(source.list_users(domain))
                        bar.refresh()
                    plan = convert.convert_domain(source, target, domain, dry_run=dry_run, progress=progress)
            except (TemporaryFailure, OSError) as exc:
                failed += 1
                text = exc.message if isinstance(exc, TemporaryFailure) else str(exc)
                say(f"converting {domain.real} domain conversion failed: {text}")
                continue
            if debug:
                for record in plan.added:
                    say(f"  added {record.name}")
                for record in plan.changed:
                    say(f"  changed {record.name}")
                for name in plan.removed:
                    say(f"  removed {name}")
                lastauths, count = plan.carried
                if lastauths:
                    say(f"  lastauth of {lastauths} users")
                if count is not None:
                    say(f"  hashing count {count}")
            mode = " (dry run: nothing written)" if dry_run else ""
            say(f"converting {domain.real} done: {plan.summary()}{mode}")
    finally:
        if bar is not None:
            bar.close()
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run(command, argv)
