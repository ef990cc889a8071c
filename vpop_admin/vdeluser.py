"""vdeluser: remove a user, its record and its directory (vpopmail's ``vdeluser``)."""

from collections.abc import Sequence

from vpop.admin import cli

USAGE = """vdeluser: usage: [options] email_address
options: -v (print version number)"""


def command(args: Sequence[str]) -> int:
    from vpop.admin import users

    opts, operands = cli.options("vdeluser", args, "v", USAGE, USAGE + users.DIFFERENCES)
    for letter, _ in opts:
        if letter == "v":
            print(cli.version_line(), flush=True)
    if not operands:
        raise cli.Usage(USAGE)
    settings = users.load()
    user, domain = users.parse_email(settings, operands[0])
    found = users.find_domain(settings, domain, 256 - 11)
    store = users.open_store(settings)
    try:
        users.delete_user(settings, store, found, user)
    finally:
        store.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run(command, argv)
