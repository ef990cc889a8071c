"""vaddaliasdomain: make one domain an alias of another (vpopmail's ``vaddaliasdomain``)."""

from collections.abc import Sequence

from vpop.admin import cli

USAGE = """vaddaliasdomain: usage: [options] real_domain alias_domain
options: -v (print version number)
note: for backward compatability, you can swap real_domain and alias_domain."""

DIFFERENCES = """\
  a usage error (fewer or more than two domains, an unknown option) exits 2: vpopmail exited 255;
  the alias must be a name vadddomain would take (a dot, a last label of 2 to 63 characters, no
  '..'): vpopmail checked the characters only, and vdeldomain and vdominfo never saw an alias
  without a dot; names are compared in small letters;
  rcpthosts, virtualdomains and users/assign get no second copy of a line, a virtualdomains line
  that routes the alias elsewhere is refused, and a missing control/locals is not created."""


def command(args: Sequence[str]) -> int:
    from vpop.admin import domains
    from vpop.names import ascii_lower

    _, operands = cli.options("vaddaliasdomain", args, "v", USAGE,
                                 cli.with_differences(USAGE, "vaddaliasdomain", DIFFERENCES))
    if len(operands) != 2 or not all(operands):
        raise cli.Usage(USAGE)
    first, second = (ascii_lower(name) for name in operands)
    if first == second:
        raise cli.AdminError("Error: real domain and alias domain are the same!\n" + USAGE)
    settings = cli.load()
    domains.heal(settings)
    alias, real = domains.alias_and_real(settings, first, second)
    domains.add_alias_domain(settings, alias, real)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run(command, argv)
