"""vuserinfo: show a user, or every user of a domain (vpopmail's ``vuserinfo``)."""

from collections.abc import Sequence

from vpop.admin import cli

USAGE = """vuserinfo: usage: [options] email_address
options: -v (print version number)
         -a (display all fields, this is the default)
         -n (display name field)
         -p (display crypted password)
         -u (display uid field)
         -g (display gid field)
         -c (display comment field)
         -d (display directory)
         -q (display quota field)
         -Q (display quota usage)
         -C (display clear text password)
         -l (display last authentication time)
         -D domainname (show all users on this domain)"""
SEPARATOR = "-" * 42  # vpopmail 5.6, before each user of -D


def command(args: Sequence[str]) -> int:
    from vpop.admin import users

    opts, operands = cli.options("vuserinfo", args, "anpugcdqQvlD:C", USAGE, USAGE + users.DIFFERENCES)
    fields = "a"
    domain_name = ""
    for letter, value in opts:
        if letter == "D":
            domain_name = value or ""
        elif letter == "a":
            fields += "a"
        else:
            fields = fields.replace("a", "") + letter
    if not operands and not domain_name:
        raise cli.Usage(USAGE)
    settings = cli.load()
    store = cli.open_store(settings)
    out: list[str] = []
    try:
        if not domain_name:
            user, domain = users.parse_email(settings, operands[0])
            try:
                found = users.find_domain(settings, domain)
            except cli.AdminError:
                raise cli.AdminError(f"no such user {user}@{domain}" if domain else f"no such user {user}") \
                    from None
            record = users.get_user(store, found, user, domain)
            out += users.info_lines(settings, store, found, record, fields)
        else:
            found = users.find_domain(settings, domain_name.lower(), 256 - 11)
            for record in store.list_users(found):
                out.append(SEPARATOR)
                out += users.info_lines(settings, store, found, record, fields)
    finally:
        store.close()
    cli.print_lines(out)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run(command, argv)
