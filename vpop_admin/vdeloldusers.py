"""vdeloldusers: list, or with -D delete, the users whose last login is older than -a days."""

from collections.abc import Sequence

from vpop.admin import cli

USAGE = """vdeloldusers: usage: [options]
options: -a age_in_days (will delete accounts older than this date)
                        (default is 6 months or 180 days)
         -v (print version number and exit)
         -d [domain] (process only [domain])
         -e (process every domain)
         -D (actually delete users. no users are deleted without this option)
         -V (verbose -- print old users that will be deleted)"""
DIFFERENCES = """
Differences from vpopmail's tool:
  a usage error exits 2 (vpopmail: 255); -a must be a number of days (vpopmail's atoi read 'abc'
  as 0); an unknown domain is 'Error: Domain does not exist' (245); -e walks each real domain once
  (not its alias domains too); users are deleted after the walk over the domain, not during it;
  the age is measured by the programs' clock (VPOP_CLOCK when set)."""
DEFAULT_AGE = 180


def command(args: Sequence[str]) -> int:
    from vpop import clock
    from vpop.admin import users

    opts, _ = cli.options("vdeloldusers", args, "vVDd:a:e", USAGE, USAGE + DIFFERENCES, help_anywhere=True,
                          version=False)
    if not args:
        raise cli.Usage(USAGE)
    age, domain_name, every, verbose, delete = DEFAULT_AGE, "", False, False, False
    for letter, value in opts:
        if letter == "v":
            print(cli.version_line(), flush=True)
            return 255
        if letter == "e":
            every = True
        elif letter == "D":
            delete = True
        elif letter == "V":
            verbose = True
        elif letter == "d":
            domain_name, every = (value or "").lower(), False
        elif letter == "a":
            text = value or ""
            if not text.isascii() or not text.isdigit():
                raise cli.AdminError(f"Error: invalid age {text} (days)")
            age = int(text)
    if not every and not domain_name:
        raise cli.AdminError("error: you must supply either the -e or -d [domain] options")
    settings = cli.load()
    if every:
        domains = real_domains(settings)
    else:
        domains = [users.find_domain(settings, domain_name, 256 - 11)]
    cutoff = int(clock.now()) - 86400 * age
    store = cli.open_store(settings)
    found = False
    try:
        for domain in domains:
            old = []
            for record in store.list_users(domain):
                if record.name == "postmaster":
                    if verbose:
                        print(f"skipping postmaster@{domain.real}", flush=True)
                    continue
                last = store.get_lastauth(record, domain)
                when = last[0] if last is not None else 0
                if when != 0 and when < cutoff:
                    found = True
                    if verbose:
                        print(f"{record.name}@{domain.real}", flush=True)
                    old.append(record.name)
            if delete:
                for name in old:
                    try:
                        users.delete_user(settings, store, domain, name)
                    except cli.AdminError as exc:
                        print(f"{name}@{domain.real}: {exc.message}", flush=True)
    finally:
        store.close()
    if not found:
        print("no old users found", flush=True)
    if not delete and found:
        print(" ** no users were deleted  **", flush=True)
        print(" ** use -D to delete users **", flush=True)
    return 0


def real_domains(settings) -> list:
    """Every real domain of users/assign once (``+D-:D:...`` lines), by name."""
    from vpop import assign
    from vpop.files import read_file

    data = read_file(settings.qmail_home + "/users/assign", 1 << 24, truncate=False) or b""
    names = []
    for line in data.decode("utf-8", "replace").split("\n"):
        if line.startswith("+") and ":" in line:
            fields = line[1:].split(":")
            if fields[0].endswith("-") and fields[0][:-1] == fields[1] and fields[1] not in names:
                names.append(fields[1])
    domains = [assign.lookup(settings.qmail_home, name) for name in sorted(names)]
    return [domain for domain in domains if domain is not None]


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run(command, argv)
