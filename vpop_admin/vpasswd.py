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
        if letter == "v":
            print(cli.version_line(), flush=True)
        elif letter == "r":
            random = True
            password = cli.random_password(cli.random_length(value))
    if not operands:
        raise cli.Usage(USAGE)
    address = operands[0]
    if len(operands) > 1:
        if random:
            raise cli.AdminError("Error: don't use -r option when giving password on command line")
        password = operands[1]
    settings = users.load()
    user, domain = users.parse_email(settings, address)
    found = users.find_domain(settings, domain)
    store = users.open_store(settings)
    try:
        if store.get_user(user, found) is None:
            raise cli.AdminError("Error: User does not exist")
        if not password:
            password = cli.prompt_password(address)
            if not password:
                raise cli.AdminError("Error: No password entered")
        users.set_password(settings, store, found, user, password, shown_domain=domain)
    finally:
        store.close()
    if random:
        print(f"Random password: {password}", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run(command, argv)
