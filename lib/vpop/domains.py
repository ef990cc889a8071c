"""The default domain of a login: VPOPMAIL_DOMAIN, the IP-alias map, ``etc/defaultdomain``.

``~vpopmail/etc/ip_alias_map`` holds ``IP<whitespace>domain`` lines; the first line whose IP
equals ``TCPLOCALIP`` wins.  A mapped domain listed in qmail's ``control/locals`` is not
used (vpopmail's rule).  vpopmail mangled ``::ffff:1.2.3.4`` into ``__ffff_1.2.3.4`` before
looking it up; we look up the IPv4 address.
"""

from vpop.errors import TemporaryFailure
from vpop.names import sanitize_env_value


def _read_lines(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read(1 << 20).split("\n")
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise TemporaryFailure(f"cannot read {path}: {exc.strerror}") from None


def ip_alias_domain(settings, local_ip: str) -> str | None:
    """The domain mapped to ``local_ip``, or None to fall through to ``defaultdomain``."""
    ip = local_ip.rsplit(":", 1)[-1] if local_ip.startswith("::ffff:") else local_ip
    ip = sanitize_env_value(ip)
    for line in _read_lines(settings.etc_dir + "/ip_alias_map"):
        parts = line.split()
        if len(parts) >= 2 and parts[0] == ip:
            domain = parts[1].lower()
            local_names = _read_lines(settings.qmail_home + "/control/locals")
            return None if domain in {entry.strip().lower() for entry in local_names} else domain
    return None


def default_domain(settings, environ: dict) -> str:
    """The domain of a login without one: VPOPMAIL_DOMAIN, then (if enabled) the IP-alias map,
    then the first line of ``etc/defaultdomain`` (vpopmail's ``vset_default_domain``)."""
    value = environ.get("VPOPMAIL_DOMAIN")
    if value:
        return sanitize_env_value(value).lower()
    if settings.ip_alias_domains and environ.get("TCPLOCALIP"):
        mapped = ip_alias_domain(settings, environ["TCPLOCALIP"])
        if mapped is not None:
            return mapped
    try:
        with open(settings.etc_dir + "/defaultdomain", encoding="utf-8") as handle:
            return handle.readline().strip().lower()
    except FileNotFoundError:
        return ""
    except OSError as exc:
        raise TemporaryFailure(f"cannot read {settings.etc_dir}/defaultdomain: {exc.strerror}") from None
