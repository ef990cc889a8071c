"""vpasswd: set a user's password (vpopmail's ``vpasswd``)."""

from collections.abc import Sequence

from vpop.admin import cli

USAGE = """vpasswd: usage: [options] email_address [password]
options: -v (print version number)
         -r[len] (generate a len (default 12) char random password)"""


def command(args: Sequence[str]) -> int:
    from vpop.admin import users

    opts, operands = cli.options("vpasswd", args, "vr::", USAGE, USAGE + users.DIFFERENCES)
    password = ""
    random = False
    for letter, value in opts:
        if letter == "r":
            random = True
            password = cli.random_password(cli.random_length(value))
    if not operands:
        raise cli.Usage(USAGE)
    address = operands[0]
    password = cli.password_operand(operands, random, password)
    settings = cli.load()
    user, domain = users.parse_email(settings, address)
    found = users.find_domain(settings, domain)
    with cli.open_store(settings) as store:
        if store.get_user(user, found) is None:
            raise cli.AdminError("Error: User does not exist")
        if not password:
            password = cli.ask_password(address)
        users.set_password(settings, store, found, user, password, shown_domain=domain)
    if random:
        print(f"Random password: {password}", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run(command, argv)
