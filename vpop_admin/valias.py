"""valias: show, add and delete a domain's valiases (vpopmail's ``valias``)."""

import sys
from collections.abc import Sequence

from vpop.admin import cli

USAGE = "valias: usage: [options] email_address " + """
options: -v ( display the vpopmail version number )
         -n ( show alias names, use just domain )
         -s ( show aliases, can use just domain )
         -d ( delete alias )
         -i alias_line (insert alias line)

Example: valias -i fred@inter7.com bob@inter7.com
         (adds alias from bob@inter7.com to fred@inter7.com"""
DIFFERENCES = """
Differences from vpopmail's tool:
  a usage error exits 2 (vpopmail: 254 or 255); an unknown domain is refused (vpopmail stored
  aliases of any domain); deleting an alias that does not exist is an error (vpopmail: exit 0);
  an empty or multi-line alias line is refused; on CDB the aliases are the domain's .qmail-<alias>
  files (vpopmail's valias needs an SQL store)."""


def command(args: Sequence[str]) -> int:
    from vpop.admin import aliases, users

    opts, operands = cli.options("valias", args, "vnsdi:", USAGE, USAGE + DIFFERENCES, help_anywhere=True)
    action, line = "s", ""
    for letter, value in opts:
        if letter in "nsd":
            action = letter
        elif letter == "i":
            action, line = "i", value or ""
    if not operands:
        print("must supply alias email address", file=sys.stderr, flush=True)
        raise cli.Usage(USAGE)
    address = operands[0]
    settings = cli.load()
    if "@" not in address:
        if action not in "sn":
            raise cli.AdminError(users.NOT_FULL_ADDRESS)
        from vpop.names import valid_domain

        if not valid_domain(address.lower()) or not address:
            raise cli.AdminError(users.ILLEGAL_USERNAME)
        alias, shown = None, address.lower()
    else:
        if action == "n":
            print("Please enter domain name only.", file=sys.stderr, flush=True)
            return 255
        alias, shown = users.parse_email(settings, address)
        aliases.check_alias_name(settings, alias)
    domain = users.find_domain(settings, shown, 256 - 11)
    if action == "i":
        line = aliases.check_alias_line(line)
    store = cli.open_store(settings)
    out: list[str] = []
    try:
        if action == "n":
            out = aliases.alias_names(store, domain)
            if not out:
                return 255
        elif action == "s":
            out = aliases.valias_lines(store, domain, alias, shown)
            if not out:
                raise cli.AdminError(f"No aliases found for domain {shown}" if alias is None
                                     else f"No aliases {alias}@{shown} found")
        elif action == "i":
            store.connect_for_updates()
            if not store.insert_valias(alias, domain, line):
                print(f"Error: alias {alias}@{shown} -> {line} already exists.", file=sys.stderr, flush=True)
                return 255
            if settings.store != "cdb" and not settings.valias:
                print("Warning: valias = no: vdelivermail does not read the valias table",
                      file=sys.stderr, flush=True)
        else:
            store.connect_for_updates()
            if not store.delete_valias(alias, domain):
                raise cli.AdminError(f"No aliases {alias}@{shown} found")
    finally:
        store.close()
    cli.print_lines(out)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run(command, argv)
