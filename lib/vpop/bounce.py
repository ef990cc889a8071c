"""Texts vdelivermail prints into the qmail delivery report (and so into bounces).

An operator can replace the built-in texts per domain (``<domain dir>/.no-user.msg``,
``.over-quota.msg``, ``.quotawarn.msg``) or for all domains (``~vpopmail/domains/...``).
"""

from vpop.errors import TemporaryFailure

NO_USER = "Sorry, no mailbox here by that name. (#5.1.1)"
OVER_QUOTA = "user is over quota"
DATABASE_DOWN = "vdelivermail: deferred, database down"
LOOPING = "mail is looping"
MAX_MESSAGE_FILE = 64 * 1024


def read_message_file(domain_dir: str, domains_path: str, name: str) -> bytes | None:
    """The first existing of ``<domain dir>/<name>`` and ``<domains>/<name>``; None if neither."""
    for path in (domain_dir + "/" + name, domains_path + "/" + name):
        try:
            with open(path, "rb") as handle:
                return handle.read(MAX_MESSAGE_FILE)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise TemporaryFailure(f"cannot read {path}: {exc.strerror}") from None
    return None


def message_text(domain_dir: str, domains_path: str, name: str, default: str) -> str:
    """A message file's text (as printed verbatim by vdelivermail), else the built-in text."""
    data = read_message_file(domain_dir, domains_path, name)
    if data is None:
        return default
    return data.decode("utf-8", "replace").rstrip("\n")
