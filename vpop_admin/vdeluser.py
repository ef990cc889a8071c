"""vdeluser: remove a user, its record and its directory (vpopmail's ``vdeluser``)."""

from collections.abc import Sequence

from vpop.admin import cli

USAGE = """vdeluser: usage: [options] email_address
options: -v (print version number)"""


def command(args: Sequence[str]) -> int:
    from vpop.admin import users

    _, operands = cli.options("vdeluser", args, "v", USAGE, USAGE + users.DIFFERENCES)
    if not operands:
        raise cli.Usage(USAGE)
    settings = cli.load()
    user, domain = users.parse_email(settings, operands[0])
    found = users.find_domain(settings, domain, 256 - 11)
    with cli.open_store(settings) as store:
        users.delete_user(settings, store, found, user)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run(command, argv)
