"""vipmap: the map from a local IP to a domain for logins without one (vpopmail's ``vipmap``)."""

from collections.abc import Sequence

from vpop.admin import cli

USAGE = """vipmap: usage: [options] ip domain
options: -d delete mapping
         -a add mapping
         -p print mapping
         -v show version"""
DIFFERENCES = """
Differences from vpopmail's tool:
  a usage error exits 2 (vpopmail: 255); a bad IP address or an unknown domain is refused, and so is
  deleting a mapping that does not exist (vpopmail: exit 0); on CDB adding an IP that is mapped
  already replaces its line (vpopmail appended a second line that the first one shadowed);
  IPv6 addresses are taken, and on MySQL a vpopmail ip_alias_map whose ip_addr is char(18) is
  named with the ALTER TABLE that widens it (this tool makes the table with char(45))."""


def command(args: Sequence[str]) -> int:
    from vpop.admin import aliases, users

    opts, operands = cli.options("vipmap", args, "vpda", USAGE, USAGE + DIFFERENCES, help_anywhere=True)
    if not args:
        raise cli.Usage(USAGE)
    action = "p"
    for letter, _ in opts:
        action = letter
    settings = cli.load()
    if action != "p":
        if len(operands) < 2:
            raise cli.Usage(USAGE)
        ip = aliases.check_ip(operands[0])
        from vpop.names import valid_domain

        domain = operands[1].lower()
        if not valid_domain(domain) or not domain:
            raise cli.AdminError(f"Error: invalid domain name {operands[1]}")
        if action == "a":
            users.find_domain(settings, domain, 256 - 11)
    with cli.open_store(settings) as store:
        if action == "p":
            lines = [f"{ip} {domain}" for ip, domain in store.ip_map()]
            cli.print_lines(lines)
        elif action == "a":
            store.connect_for_updates()
            aliases.check_ip_fits(store, ip)
            store.add_ip_map(ip, domain)
        else:
            store.connect_for_updates()
            if not store.delete_ip_map(ip, domain):
                raise cli.AdminError(f"Error: no mapping {ip} {domain}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run(command, argv)
