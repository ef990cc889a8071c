"""Telling vlookupd that the admin tools changed a user or a domain.

The daemon may hold positive answers about them for ``lookup_cache_seconds``; after a change it
must not (a new password works at once anyway: a refusal is never served from its cache, but the
old password would still be taken).  When no daemon runs, or it cannot be reached, nothing happens:
then nothing of it is cached either, or it forgets within ``lookup_cache_seconds``.
"""


def user_changed(settings, user: str, domain: str) -> None:
    """``user@domain`` was added, changed or removed."""
    _invalidate(settings, f"{user}@{domain}")


def domain_changed(settings, domain: str) -> None:
    """Something of the whole domain changed (its limits, its users in bulk, the domain itself)."""
    _invalidate(settings, f"@{domain}")


def _invalidate(settings, what: str) -> None:
    if settings.lookup_socket == "none":
        return
    from vpop.lookup.client import tell

    tell(settings, "invalidate", [("what", what)])
