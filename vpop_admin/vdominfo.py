"""vdominfo: show the virtual domains of users/assign (vpopmail's ``vdominfo``)."""

from collections.abc import Sequence

from vpop.admin import cli

USAGE = """vdominfo: usage: [options] [domain]
options: -v (print version number)
         -a (display all fields, this is the default)
         -n (display domain name)
         -u (display uid field)
         -g (display gid field)
         -d (display domain directory)
         -t (display total users)
         -r (display real domain)"""

DIFFERENCES = """\
  a usage error (an unknown option, more than one domain) exits 2: vpopmail exited 255;
  a site with no domain yet prints nothing (vpopmail: 'What now - Success');
  it only reads: vpopmail's vdominfo rewrote each domain's .dir-control (or dir_control row)."""


def command(args: Sequence[str]) -> int:
    from vpop.admin import domains

    opts, operands = cli.options("vdominfo", args, "vanugdtr", USAGE,
                                 cli.with_differences(USAGE, "vdominfo", DIFFERENCES))
    everything, letters = True, ""
    for letter, _ in opts:
        if letter == "a":
            everything = True
        else:
            everything = False
            letters += letter
    if len(operands) > 1:
        raise cli.Usage(USAGE)
    name = ""
    if operands:
        name = domains.lookup_name(operands[0])
        if not name:
            raise cli.AdminError("Invalid domain name", domains.EXIT_MISSING)
    fields = "a" if everything else letters
    settings = cli.load()
    store = None
    if settings.store == "mysql" and ("a" in fields or "t" in fields):
        from vpop.stores import open_store

        store = open_store(settings, primary=True)
    try:
        lines = domains.info_blocks(settings, store, name, fields)
    finally:
        if store is not None:
            store.close()
    cli.print_lines(lines)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run(command, argv)
