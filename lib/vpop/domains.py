"""The default domain of a login: VPOPMAIL_DOMAIN, the IP-alias map, ``etc/defaultdomain``.

``~vpopmail/etc/ip_alias_map`` holds ``IP<whitespace>domain`` lines; the first line whose IP
equals ``TCPLOCALIP`` wins.  A mapped domain listed in qmail's ``control/locals`` is not
used (vpopmail's rule).  vpopmail mangled ``::ffff:1.2.3.4`` into ``__ffff_1.2.3.4`` before
looking it up; we look up the IPv4 address.  vpopmail mangled every IPv6 address the same way
(``:`` became ``_``), so none ever matched; we keep the colons.
"""

from vpop.errors import TemporaryFailure
from vpop.names import sanitize_env_value


def _read_lines(path: str) -> list[str]:
    """The first MiB of a file of ``~vpopmail/etc`` (or qmail's control), as lines; none if it is missing.

    Read as :class:`vpop.files.UserDir` reads: root reads it in a directory the vpopmail uid can
    write, so a link or FIFO there is a TemporaryFailure naming it.
    """
    from vpop.files import read_file

    data = read_file(path, 1 << 20, truncate=True)
    return [] if data is None else data.decode("utf-8", "replace").split("\n")


def ip_alias_domain(settings, local_ip: str, store=None) -> str | None:
    """The domain mapped to ``local_ip``, or None to fall through to ``defaultdomain``.

    ``store``: an open MySQL store to read the map with (vlookupd's); else one is opened here.
    """
    ip = local_ip.rsplit(":", 1)[-1] if local_ip.startswith("::ffff:") else local_ip
    ip = ":".join(sanitize_env_value(part) for part in ip.split(":"))  # IPv6 keeps its colons
    if settings.store == "mysql" and store is not None:
        pairs = store.ip_map()
    elif settings.store == "mysql":  # vmysql's vget_ip_map: the ip_alias_map table
        from vpop.stores.mysql import MysqlStore

        store = MysqlStore(settings)
        try:
            pairs = store.ip_map()
        finally:
            store.close()
    else:
        lines = _read_lines(settings.etc_dir + "/ip_alias_map")
        pairs = [(parts[0], parts[1]) for parts in map(str.split, lines) if len(parts) >= 2]
    for address, mapped in pairs:
        if address == ip:
            domain = mapped.lower()
            local_names = _read_lines(settings.qmail_home + "/control/locals")
            return None if domain in {entry.strip().lower() for entry in local_names} else domain
    return None


def default_domain(settings, environ: dict, store=None) -> str:
    """The domain of a login without one: VPOPMAIL_DOMAIN, then (if enabled) the IP-alias map,
    then the first line of ``etc/defaultdomain`` (vpopmail's ``vset_default_domain``)."""
    value = environ.get("VPOPMAIL_DOMAIN")
    if value:
        return sanitize_env_value(value).lower()
    if settings.ip_alias_domains and environ.get("TCPLOCALIP"):
        mapped = ip_alias_domain(settings, environ["TCPLOCALIP"], store)
        if mapped is not None:
            return mapped
    from vpop.files import read_file

    data = read_file(settings.etc_dir + "/defaultdomain", 1 << 20, truncate=True)
    # Strict: a default domain that is not text is a broken installation (111), not "no such user".
    if data is None:
        return ""
    try:
        return data.split(b"\n", 1)[0].decode("utf-8").strip().lower()
    except UnicodeDecodeError:
        raise TemporaryFailure(f"{settings.etc_dir}/defaultdomain: damaged: not UTF-8") from None
