"""vadddomain: add a virtual domain and its postmaster (vpopmail's ``vadddomain``)."""

from collections.abc import Sequence

from vpop.admin import cli

USAGE = """vadddomain: usage: vadddomain [options] virtual_domain [postmaster password]
options: -v prints the version
         -q quota_in_bytes (sets the quota for postmaster account)
         -b (bounces all mail that doesn't match a user, default)
         -e email_address (forwards all non matching user to this address [*])
         -u user (sets the uid/gid based on a user in /etc/passwd)
         -d dir (sets the dir to use for this domain)
         -i uid (sets the uid to use for this domain)
         -g gid (sets the gid to use for this domain)
         -O optimize adding, for bulk adds set this for all
            except the last one
         -r[len] (generate a len (default 12) char random postmaster password)

 [*] omit @-sign to deliver directly into user's Maildir: '-e postmaster'

Special bounce messages supported by vdeliver mail:
   vadddomain -b delete example.com [password]  -  delete all mail to non-existant accounts
   vadddomain -b bounce-no-mailbox example.com [password] - bounce them\x20
   vadddimain -b someone@somewhere.com example.com [password] - sent to another address
   vadddomain -b /path/to/Maildir example.com [password] - sent to a Maildir"""

DIFFERENCES = """\
  a usage error (no domain, an unknown option, more than two words) exits 2: vpopmail exited 0, and
  carried on after an unknown option; -i and -g take numbers only;
  the special forms above are given with -e (-e delete, -e bounce-no-mailbox, -e /path/to/Maildir):
  -b takes no argument, so vpopmail took 'delete' for the domain, and its -e made <domdir>/delete;
  -e text that a shell would split (spaces, quotes, ';', '|', '$' ...) is refused: vpopmail wrote it
  unquoted into .qmail-default, which qmail-local runs with sh -c;
  the name, password, quota and -e are checked before anything is written, and a domain whose
  postmaster cannot be made is taken away again (vpopmail then exited 0); a vadddomain that was
  killed is finished by running it again (users/assign is written last, and the domain directory
  holds .vadddomain-unfinished until the postmaster exists);
  a domain directory that already exists is used only if it holds no more than an unfinished
  vadddomain leaves (vpopmail took it over, old mail and all); rcpthosts, virtualdomains and
  users/assign get no second copy of a line, and a virtualdomains line that routes the domain
  elsewhere is refused; a missing control/locals is not created (vpopmail made it empty);
  a domain may not belong to uid or gid 0 (qmail never delivers as root);
  random passwords come from the secrets module (letters and digits), the postmaster's hash follows
  the password_scheme setting, and qmail-send is told as qmail_send_signal says."""


def command(args: Sequence[str]) -> int:
    import pwd

    from vpop.admin import domains

    opts, operands = cli.options("vadddomain", args, "q:be:u:vi:g:d:Or::", USAGE,
                                 cli.with_differences(USAGE, "vadddomain", DIFFERENCES))
    quota = target = user = None
    base_dir = ""
    uid = gid = None
    optimize = random = False
    password = ""
    for letter, value in opts:
        if letter == "q":
            quota = value
        elif letter == "e":
            target = value
        elif letter == "u":
            user = value
        elif letter == "d":
            base_dir = value
        elif letter == "i":
            uid = domains.number_option("i", value, USAGE)
        elif letter == "g":
            gid = domains.number_option("g", value, USAGE)
        elif letter == "O":
            optimize = True
        elif letter == "r":
            length = cli.random_length(value)
            if length <= 0:
                raise cli.Usage(f"vadddomain: -r needs a length from 1 to 128, not {value!r}\n{USAGE}")
            random = True
            password = cli.random_password(length)
    if user is not None:
        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            raise cli.AdminError(f"Error: user {user} not found in /etc/passwd") from None
        base_dir = base_dir or entry.pw_dir
        uid, gid = entry.pw_uid, entry.pw_gid
    if not operands or len(operands) > 2:
        raise cli.Usage(USAGE)
    name = domains.domain_name(operands[0])
    settings = cli.load()
    domains.heal(settings)
    if uid is None or gid is None:
        default_uid, default_gid, _home = domains.vpopmail_ids()
        uid = default_uid if uid is None else uid
        gid = default_gid if gid is None else gid
    qmail_default = domains.delivery_line(settings, target)
    quota = domains.postmaster_quota(quota)
    domains.hash_method(settings)
    if domains.taken(settings, name):  # before the password is asked for, as vpopmail
        raise cli.AdminError(domains.DOMAIN_EXISTS, domains.EXIT_EXISTS)
    password = cli.password_operand(operands, random, password)
    if len(operands) < 2 and not random:
        password = cli.ask_password("postmaster")
    if not password:
        raise cli.AdminError("Error: No password entered")
    _domain, made = domains.vadddomain(settings, name, password, uid=uid, gid=gid, base_dir=base_dir,
                                       quota=quota, qmail_default=qmail_default, optimize=optimize)
    if random and made:
        print(f"Random password: {password}", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run(command, argv)
