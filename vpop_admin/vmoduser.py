"""vmoduser: change a user, or every user of a domain (vpopmail's ``vmoduser``)."""

from collections.abc import Sequence

from vpop.admin import changes, cli

USAGE = """vmoduser: usage: [options] email_addr or domain (for each user in domain)
options: -v ( display the vpopmail version number )
         -n ( don't rebuild the vpasswd.cdb file )
         -q quota ( set quota )
         -c comment (set the comment/gecos field )
         -e encrypted_passwd (set the password field )
         -C clear_text_passwd (set the password field )
the following options are bit flags in the gid int field
         -x ( clear all flags )
         -d ( don't allow user to change password )
         -p ( disable POP access )
         -s ( disable SMTP AUTH access )
         -w ( disable webmail [IMAP from localhost*] access )
            ( * full list of webmail server IPs in vchkpw.c )
         -i ( disable non-webmail IMAP access )
         -b ( bounce all mail )
         -o ( user is not subject to domain limits )
         -r ( disable roaming user/pop-before-smtp )
         -a ( grant qmailadmin administrator privileges )
         -S ( grant system administrator privileges - access all domains )
         -E ( grant expert privileges - edit .qmail files )
         -f ( disable spamassassin)
         -F ( delete spam)
         -m ( disable maildrop)
  [The following flags aren't used directly by vpopmail but are]
  [included for other programs that share the user database.]
         -u ( set no dialup flag )
         -0 ( set V_USER0 flag )
         -1 ( set V_USER1 flag )
         -2 ( set V_USER2 flag )
         -3 ( set V_USER3 flag )"""

# the pw_gid bits of vmoduser's flag options (vpopmail.h)
FLAGS = {"d": 0x01, "p": 0x02, "w": 0x04, "i": 0x08, "b": 0x10, "r": 0x20, "u": 0x40, "0": 0x80,
         "1": 0x100, "2": 0x200, "3": 0x400, "s": 0x800, "a": 0x1000, "o": 0x2000, "f": 0x4000,
         "F": 0x8000, "S": 0x10000, "E": 0x20000, "m": 0x40000}
ROOT_ONLY = ("S", "E")


def command(args: Sequence[str]) -> int:
    import os

    from vpop.admin import users

    opts, operands = cli.options("vmoduser", args, "D:avunxc:q:dpswibro0123he:C:fFSEm", USAGE,
                                 USAGE + users.DIFFERENCES)
    gecos = directory = clear = crypted = quota = None
    clear_flags = False
    flags = 0
    for letter, value in opts:
        if letter == "h":
            raise cli.AdminError(USAGE, 0)
        elif letter == "x":
            clear_flags = True
        elif letter == "e":
            crypted = value
        elif letter == "C":
            clear = value
        elif letter == "D":
            directory = value
        elif letter == "c":
            gecos = value
        elif letter == "q":
            quota = users.format_quota(value)
        elif letter in FLAGS and (letter not in ROOT_ONLY or os.getuid() == 0):
            flags |= FLAGS[letter]
    if not operands:
        raise cli.Usage(USAGE)
    # what would split or break the vpasswd line is refused before anything is read or changed
    if gecos is not None:
        users.check_gecos(gecos)
    if clear is not None:
        users.check_password_text(clear)
    if crypted is not None:
        changes.check_crypted(crypted)
    target = operands[0]
    settings = cli.load()
    new_hash = users.new_password_hash(settings, clear) if clear else None

    def change(record) -> None:
        if gecos:
            record.gecos = gecos
        if directory:
            users.check_inside(settings, found, directory)
            record.dir = directory
        if clear:
            record.passwd = new_hash
            record.clear = clear if settings.clear_passwords else ""
        elif crypted:
            record.passwd = crypted
            record.clear = ""  # vpopmail kept the old clear text, which no longer matched
        if clear_flags:
            record.gid = 0
        record.gid |= flags
        if quota is not None:
            record.shell = quota

    with cli.open_store(settings) as store:
        user = missing = None
        if "@" in target:
            user, domain = users.parse_email(settings, target)
            missing = cli.AdminError(f"no such user {user}@{domain}")
            try:
                found = users.find_domain(settings, domain)
            except cli.AdminError:
                raise missing from None
        else:
            found = users.find_domain(settings, target.lower(), 256 - 11)
        users.change_users(settings, store, found, user, change, quota_changed=quota is not None,
                           missing=missing)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run(command, argv)
