"""The environment qmail-local gives a delivery program (qmail-command(8)).

Used by the demo, the benchmarks and the tests to run vdelivermail exactly as qmail-local
would, without a qmail installation.  Not used by the programs themselves.
"""

from vpop import clock


def quote_sender(sender: str) -> str:
    """RPLINE's address: the local part RFC 822-quoted when it needs it; newlines become ``_``."""
    sender = sender.replace("\n", "_")
    local, at, domain = sender.rpartition("@")
    if not at:
        local, domain = sender, ""
    special = set('()<>@,;:\\".[] \t\r')
    if local and any(c in special for c in local) and not local.replace(".", "").isalnum():
        escaped = "".join("\\" + c if c in '\r\n"\\' else c for c in local)
        local = f'"{escaped}"'
    return local + (("@" + domain) if at else "")


def qmail_local_environ(user: str, home: str, local: str, dash: str, ext: str, domain: str,
                        sender: str, default_file: str = "default", base: dict | None = None) -> dict:
    """qmail-local's variables for one delivery (``default_file``: the .qmail file's name tail).

    ``default_file`` is the part after ``.qmail<dash>`` of the file that matched, e.g.
    ``default`` for ``.qmail-default``; DEFAULT is set when it ends in ``default``.
    """
    env = dict(base or {})
    recipient = f"{local}@{domain}"
    env.update({
        "HOST": domain, "HOME": home, "USER": user, "LOCAL": local, "RECIPIENT": recipient,
        "DTLINE": f"Delivered-To: {recipient.replace(chr(10), '_')}\n",
        "SENDER": sender,
        "RPLINE": f"Return-Path: <{quote_sender(sender)}>\n",
        "UFLINE": f"From {sender.replace(' ', '-').replace(chr(9), '-') or 'MAILER-DAEMON'} "
                  f"{clock.ctime_gmt(clock.now())}\n",
        "EXT": ext, "NEWSENDER": sender,
    })
    parts = ext.split("-")
    for n in (2, 3, 4):
        env[f"EXT{n}"] = "-".join(parts[n - 1:]) if len(parts) >= n else ""
    labels = domain.split(".")
    for n in (2, 3, 4):
        env[f"HOST{n}"] = ".".join(labels[:len(labels) - (n - 1)]) if len(labels) >= n else domain
    if default_file.endswith("default"):
        prefix = len(default_file) - len("default")
        env["DEFAULT"] = ext[prefix:]
    return env


def virtual_delivery_environ(address: str, domain_dir: str, sender: str, uid_user: str = "",
                             base: dict | None = None) -> dict:
    """qmail-local's environment for ``address`` in a vpopmail domain (``.qmail-default``).

    qmail-send turns ``bob@example.com`` into ``example.com-bob@example.com`` through
    control/virtualdomains; users/assign ``+example.com-:example.com:...:-::`` makes
    qmail-local run with user ``example.com``, home = the domain dir, ext ``bob``.
    """
    local_part, _, domain = address.rpartition("@")
    return qmail_local_environ(uid_user or domain, domain_dir, f"{domain}-{local_part}", "-", local_part,
                               domain, sender, "default", base)
