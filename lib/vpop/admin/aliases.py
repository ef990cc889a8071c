"""The library behind valias and vipmap: vpopmail's valiases and its IP-to-domain map.

valiases: on MySQL the ``valias`` table (``alias``, ``domain``, ``valias_line``), which
vdelivermail reads with ``valias = yes``; on CDB qmail's ``.qmail-<alias>`` files in the domain
directory (see :meth:`vpop.stores.base.Store.list_valiases`), which qmail-local reads before the
domain's ``.qmail-default``.  The IP map: the ``ip_alias_map`` table on MySQL, the file
``~vpopmail/etc/ip_alias_map`` (``IP domain`` lines) otherwise; vchkpw reads it with
``ip_alias_domains = yes``.

Refusals are :class:`vpop.admin.cli.AdminError` with vpopmail's text and exit code.
"""

from vpop.admin.cli import AdminError
from vpop.assign import Domain
from vpop.config import Settings
from vpop.stores.base import Store

MAX_ALIAS_LINE = 4096


def check_alias_line(line: str) -> str:
    """The delivery line as vmysql's ``valias_insert`` stores it (leading blanks dropped); one line,
    not empty (vpopmail stored a newline or an empty line as given)."""
    line = line.lstrip(" ")
    if not line.strip() or "\n" in line or "\r" in line or "\0" in line or len(line) > MAX_ALIAS_LINE:
        raise AdminError("Error: invalid alias line (one delivery line: an address, &address, "
                         "/path/Maildir/ or |program)")
    return line


def check_alias_name(settings: Settings, alias: str) -> None:
    """On CDB ``default`` would be the domain's catch-all file ``.qmail-default``: refused."""
    if settings.store == "cdb" and alias == "default":
        raise AdminError("Error: the alias name 'default' is the domain's .qmail-default")


def valias_lines(store: Store, domain: Domain, alias: str | None, shown: str) -> list[str]:
    """``alias@domain -> target`` lines (``shown``: the domain as given)."""
    return [f"{name}@{shown} -> {line}" for name, line in store.list_valiases(domain, alias)]


def alias_names(store: Store, domain: Domain) -> list[str]:
    """``-n``: each alias name once, in order."""
    names: list[str] = []
    for name, _ in store.list_valiases(domain):
        if name not in names:
            names.append(name)
    return names


MAX_IP = 45  # the longest IPv6 text: eight groups, the last two written as IPv4


def check_ip(ip: str) -> str:
    """An IPv4 or IPv6 address as vchkpw compares it with TCPLOCALIP (as text: kept as typed),
    else a vpopmail-style refusal.  An IPv4-mapped IPv6 address is its IPv4 address, which is
    what vchkpw looks such a TCPLOCALIP up as."""
    import ipaddress

    try:
        parsed = ipaddress.ip_address(ip)
    except ValueError:
        raise AdminError(f"Error: invalid IP address {ip}") from None
    if len(ip) > MAX_IP:
        raise AdminError(f"Error: invalid IP address {ip}")
    mapped = getattr(parsed, "ipv4_mapped", None)
    return str(mapped) if mapped is not None else ip


def check_ip_fits(store: Store, ip: str) -> None:
    """Refuse an address the store's ``ip_alias_map.ip_addr`` is too narrow for (vpopmail's
    char(18), made before IPv6): MySQL would cut it or fail, and vchkpw would never match it."""
    width = store.ip_map_width()
    if width is not None and len(ip) > width:
        raise AdminError(f"Error: {ip} does not fit ip_alias_map.ip_addr, which is char({width}); "
                         f"widen it first: ALTER TABLE ip_alias_map MODIFY ip_addr char({MAX_IP}) NOT NULL")
