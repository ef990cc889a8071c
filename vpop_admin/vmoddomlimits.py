"""vmoddomlimits: show, set and delete a domain's limits (vpopmail's ``vmoddomlimits``)."""

from collections.abc import Sequence

from vpop.admin import cli

USAGE = "vmoddomlimits: usage: [options] domain " + """
options: -v ( display the vpopmail version number )
         -d ( use the vlimits.default file, instead of domain )
         -S ( show current settings )
         -D ( delete limits for this domain, i.e. switch to default limits)
         -Q quota-in-megabytes ( set domain disk quota, '100' = 100 MB )
         -q quota-in-bytes ( set default user quota, '10M' = 10 MB )
         -M count ( set domain max msg count )
         -m count ( set default user max msg count )
         -P count ( set max amount of pop accounts )
         -A count ( set max amount of aliases )
         -F count ( set max amount of forwards )
         -R count ( set max amount of autoresponders )
         -L count ( set max amount of mailing lists )
the following options are bit flags in the gid int field
         -g "flags"  (set flags, see below)
         gid flags:
            u ( set no dialup flag )
            d ( set no password changing flag )
            p ( set no pop access flag )
            s ( set no smtp access flag )
            w ( set no web mail access flag )
            i ( set no imap access flag )
            r ( set no external relay flag )
            c ( set no spamassasssin flag )
            x ( set delete spam flag )
            m ( set no maildrop flag )
the following options are bit flags for non postmaster admins
         -p "flags"  (set pop account flags)
         -a "flags"  (set alias flags)
         -f "flags"  (set forward flags)
         -r "flags"  (set autoresponder flags)
         -l "flags"  (set mailinglist flags)
         -u "flags"  (set mailinglist users flags)
         -o "flags"  (set mailinglist moderators flags)
         -x "flags"  (set quota flags)
         -z "flags"  (set default quota flags)
         perm flags:
            a ( set deny all flag )
            c ( set deny create flag )
            m ( set deny modify flag )
            d ( set deny delete flag )"""
DIFFERENCES = """
Differences from vpopmail's tool:
  a usage error exits 2 (vpopmail: 255); an unknown domain is 'Error: Domain does not exist' (245;
  vpopmail said nothing and exited 0); a count or size that is not a number, or a -g flag letter it
  does not know, is refused (vpopmail read it as 0 or skipped it); without .qmailadmin-limits and
  vlimits.default the built-in defaults are used (vpopmail: 'Failed to vget_limits'); the mailing-list
  users' and moderators' permission bits are written into perm_maillist, where vpopmail reads them
  (vpopmail wrote them into perm_quota of the file)."""
COUNT_OPTIONS = {"P": "maxpopaccounts", "A": "maxaliases", "F": "maxforwards", "R": "maxautoresponders",
                 "L": "maxmailinglists"}
SIZE_OPTIONS = {"Q": "diskquota", "M": "maxmsgcount", "m": "defaultmaxmsgcount"}
PERM_OPTIONS = {"p": "perm_account", "a": "perm_alias", "f": "perm_forward", "r": "perm_autoresponder",
                "l": "perm_maillist", "u": "perm_maillist_users", "o": "perm_maillist_moderators",
                "x": "perm_quota", "z": "perm_defaultquota"}


def command(args: Sequence[str]) -> int:
    from vpop.admin import limits, users

    opts, operands = cli.options("vmoddomlimits", args, "vSDdQ:q:M:m:P:A:F:R:L:g:p:a:f:r:l:u:o:x:z:h", USAGE,
                                 USAGE + DIFFERENCES, help_anywhere=True)
    show = delete = default_file = False
    changes: dict = {}
    for letter, value in opts:
        value = value or ""
        if letter == "h":
            raise cli.AdminError(USAGE, 0)
        elif letter == "S":
            show = True
        elif letter == "D":
            delete = True
        elif letter == "d":
            default_file = True
        elif letter in COUNT_OPTIONS:
            changes[COUNT_OPTIONS[letter]] = limits.number(value, signed=True)
        elif letter in SIZE_OPTIONS:
            changes[SIZE_OPTIONS[letter]] = limits.number(value, signed=False)
        elif letter == "q":
            changes["defaultquota"] = limits.user_quota_bytes(value)
        elif letter == "g":
            unknown = [char for char in value if char not in limits.GID_LETTERS]
            if unknown:
                raise cli.AdminError(f"Error: unknown gid flag '{unknown[0]}' (use u d p s w i r c x m)")
            for column in limits.FLAGS:
                changes[column] = 0
            for char in value:
                changes[limits.GID_LETTERS[char]] = 1
        elif letter in PERM_OPTIONS:
            unknown = [char for char in value if char not in limits.PERM_LETTERS]
            if unknown:
                raise cli.AdminError(f"Error: unknown perm flag '{unknown[0]}' (use a c m d)")
            changes[PERM_OPTIONS[letter]] = limits.apply_perm(value)
    settings = cli.load()
    if default_file:
        if delete:
            raise cli.AdminError("Default limits must not be deleted. If you really want to do this,\n"
                                 "remove the vlimits.default file.\n"
                                 "But be warned: this might stop vpopmail from working!!")
        from vpop.stores.base import _EtcLock

        with _EtcLock(settings.etc_dir, ".vlimits.default.lock"):
            values = limits.read_default(settings)
            if show:
                print("\n".join(limits.show_lines(
                    values, f"Default limits: {settings.etc_dir}/{limits.DEFAULT_FILE}")), flush=True)
                return 0
            limits.write_default(settings, {**values, **changes})
        return 0
    if not operands:
        raise cli.Usage(USAGE)
    name = operands[0].lower()
    domain = users.find_domain(settings, name, 256 - 11)
    with cli.open_store(settings) as store:
        store.connect_for_updates()
        with store.locked(domain):
            if delete:
                limits.delete_domain(settings, store, domain)
                print("Limits deleted", flush=True)
                return 0
            values = limits.read_domain(settings, store, domain)
            if show:
                print("\n".join(limits.show_lines(values, f"Domain: {name}")), flush=True)
                return 0
            limits.write_domain(settings, store, domain, {**values, **changes})
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run(command, argv)
