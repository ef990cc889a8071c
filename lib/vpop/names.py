"""Login names and domain names: splitting, lower-casing, the characters vpopmail allows.

vpopmail (``parse_email``, ``is_username_valid``, ``is_domain_valid``) lower-cases the
login, splits it at the first ``@``, else the first ``%``, else the first ``/``, and then
allows in the user part only ASCII letters, digits and ``! # $ & ' * + - . / = ? ^ _ ` { | } ~``
and in the domain only letters, digits, ``-`` and ``.``.

We are stricter where a name reaches a path: a user part may not contain ``/``, may not be
``.`` or ``..`` or start with ``.``, and may be at most 64 characters; a domain may not start
with ``.`` or contain ``..``.  Those names cannot be vpopmail users anyway (vadduser
refuses them), so nothing legitimate is lost.
"""

_USER_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$&'*+-.=?^_`{|}~"
)
_DOMAIN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.")
MAX_USER = 64
MAX_DOMAIN = 255


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def ascii_lower(text: str) -> str:
    """Lower-case A-Z only, as the C code does: ``str.lower`` would turn the Kelvin sign
    (U+212A) into ``k`` and let a non-ASCII name pass for an ASCII one."""
    return text.translate(_ASCII_LOWER)


def split_login(login: str) -> tuple[str, str]:
    """Lower-case and split a login at the first ``@``, else ``%``, else ``/``."""
    login = ascii_lower(login)
    for sep in "@%/":
        user, found, domain = login.partition(sep)
        if found:
            return user, domain
    return login, ""


def valid_user(user: str) -> bool:
    """A user part that is safe to use as a path component and a vpopmail name."""
    return (0 < len(user) <= MAX_USER and not user.startswith(".")
            and _USER_CHARS.issuperset(user))


def valid_domain(domain: str) -> bool:
    """A domain made of letters, digits, ``-`` and ``.``, usable as a path component (or empty)."""
    if domain == "":
        return True
    return (len(domain) <= MAX_DOMAIN and not domain.startswith(".") and ".." not in domain
            and _DOMAIN_CHARS.issuperset(domain))


def sanitize_env_value(value: str) -> str:
    """vpopmail's treatment of VPOPMAIL_DOMAIN and friends: bytes outside a-zA-Z0-9_-.@ become ``_``."""
    return "".join(c if (c.isascii() and c.isalnum()) or c in "_-.@" else "_" for c in value)


def remote_ip(environ: dict) -> str:
    """``TCPREMOTEIP`` (else ``REMOTE_HOST``) as vpopmail's ``get_remote_ip`` cleans it."""
    ip = environ.get("TCPREMOTEIP") or environ.get("REMOTE_HOST") or ""
    if ip.startswith(":"):
        ip = ip.rsplit(":", 1)[-1]
    return sanitize_env_value(ip)
