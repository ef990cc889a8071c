"""vadduser: add a user to a domain (vpopmail's ``vadduser``)."""

import sys
from collections.abc import Sequence

from vpop.admin import cli

USAGE = """vadduser: usage: [options] email_address [passwd]
options: -v (print the version)
         -q quota_in_bytes (sets the users quota, use NOQUOTA for unlimited)
         -c comment (sets the gecos comment field)
         -e standard_encrypted_password
            (MD5 '$1$', SHA-512 '$6$', etc.)
            NOTE: Wrap the password in single quotes to prevent shell expansion:
                  vadduser -e '$6$...hashed_password...' user@domain
         -r[len] (generate a len (default 12) char random password)
         -n (no password: vpopmail 5.4)"""


def command(args: Sequence[str]) -> int:
    from vpop.admin import users

    opts, operands = cli.options("vadduser", args, "svc:nq:e:r::", USAGE, USAGE + users.DIFFERENCES)
    quota = gecos = crypted = None
    password = ""
    random = no_password = False
    for letter, value in opts:
        if letter == "c":
            gecos = value
        elif letter == "q":
            quota = value
        elif letter == "e":
            crypted = value
        elif letter == "s":
            print("Warning: The -s option has been disabled.", file=sys.stderr, flush=True)
        elif letter == "n":
            no_password = True
        elif letter == "r":
            random = True
            password = cli.random_password(cli.random_length(value))
    if not operands:
        raise cli.Usage(USAGE)
    address = operands[0]
    if not no_password:
        password = cli.password_operand(operands, random, password)
    settings = cli.load()
    user, domain = users.parse_email(settings, address)
    if not domain:
        raise cli.AdminError(users.NOT_FULL_ADDRESS)
    found = users.find_domain(settings, domain)
    with cli.open_store(settings) as store:
        store.create_tables(found)
        users.refuse_existing(settings, store, found, user)  # before asking for a password
        if not no_password and crypted is None and not password:
            password = cli.ask_password(address, USAGE)
        users.create_user(settings, store, found, user, password, quota=quota, gecos=gecos or "",
                          crypted="" if no_password and crypted is None else crypted)
    if random:
        print(f"Random password: {password}", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run(command, argv)
