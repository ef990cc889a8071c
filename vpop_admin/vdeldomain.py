"""vdeldomain: remove a virtual domain, its alias domains, users and files (vpopmail's ``vdeldomain``)."""

from collections.abc import Sequence

from vpop.admin import cli

USAGE = """vdeldomain: usage: [options] domain_name
options: -v (print version number)
options: -f (force delete of virtual domains)"""

DIFFERENCES = """\
  a usage error (no domain, an unknown option, more than one word) exits 2: vpopmail exited 0;
  users/assign goes last, so a vdeldomain that was killed is finished by running it again;
  a domain directory is removed only when it is an absolute path ending in /<domain> (vpopmail
  removed whatever users/assign named, '/' included), never through a link inside it;
  the domain's names leave rcpthosts and morercpthosts both (vpopmail looked in morercpthosts only
  when rcpthosts had none), and a missing control file is not created empty;
  a name in capitals is the domain in small letters (vpopmail then skipped the alias warning);
  on MySQL the domain's users, lastauth, valias, limits and dir_control rows go in one transaction,
  and with many_domains = no a table that another domain's name maps to too is kept."""


def command(args: Sequence[str]) -> int:
    from vpop.admin import domains
    from vpop.stores import open_store

    opts, operands = cli.options("vdeldomain", args, "vf", USAGE,
                                 cli.with_differences(USAGE, "vdeldomain", DIFFERENCES))
    force = False
    for letter, _ in opts:
        if letter == "f":
            force = True
    if len(operands) != 1:
        raise cli.Usage(USAGE)
    name = domains.lookup_name(operands[0])
    if not name:
        raise cli.AdminError(domains.DOMAIN_MISSING, domains.EXIT_MISSING)
    settings = cli.load()
    domains.heal(settings)
    own, aliases = domains.domain_group(settings, name)
    if own is None and not any(entry.domain == name for entry in aliases):
        raise cli.AdminError(domains.DOMAIN_MISSING, domains.EXIT_MISSING)
    if own is not None and own.domain == name and aliases:
        print("Warning: Alias domains deleted:" if force else "Warning: Alias domains exist:")
        for entry in aliases:
            print(f"   {entry.domain}")
        if not force:
            print("   use -f to force delete of domain and all aliases", flush=True)
            return 0
    with open_store(settings, primary=True) as store:
        domains.delete_domain(settings, store, name)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run(command, argv)
