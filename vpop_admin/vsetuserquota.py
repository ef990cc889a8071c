"""vsetuserquota: set the quota of a user, or of every user of a domain (vpopmail's ``vsetuserquota``)."""

from collections.abc import Sequence

from vpop.admin import cli

USAGE = """vsetuserquota: [options] email_address|domain_name quota
options:
-v (print version number)

If you specify a domain name rather than an email address,
the quota will be applied to all users in that domain"""


def command(args: Sequence[str]) -> int:
    from vpop.admin import users

    _, operands = cli.options("vsetuserquota", args, "v", USAGE, USAGE + users.DIFFERENCES)
    if len(operands) < 2 or not operands[0] or not operands[1]:
        raise cli.Usage(USAGE)
    target = operands[0]
    quota = users.format_quota(operands[1].upper())  # vsetuserquota upper-cases the quota
    settings = cli.load()
    with cli.open_store(settings) as store:
        user = None
        if "@" not in target:
            found = users.find_domain(settings, target.lower(), 256 - 11)
        else:
            user, domain = users.parse_email(settings, target)
            found = users.find_domain(settings, domain, 256 - 11)
        users.change_users(settings, store, found, user, lambda record: setattr(record, "shell", quota),
                           quota_changed=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run(command, argv)
