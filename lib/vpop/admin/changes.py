"""A user's record changed field by field: what vpopmaild's ``mod_user`` asks for.

A :class:`UserChange` collects the fields to set (comment, a new password or a stored hash, a
quota, flag bits to set or clear); :func:`modify_user` applies it in one read-check-write under
the store's lock (:func:`vpop.admin.users.change_users`, vmoduser's): the record is read, the
change made (a new password hashed in the ``password_scheme``), the caller's ``allow`` sees the
old and the new record and the user's effective flags and may refuse (an
:class:`~vpop.admin.cli.AdminError`), then the record is written once and, when the quota
changed, ``maildirsize`` is rewritten.  A refused or failed change writes nothing.

The checks of the values themselves (:func:`check_crypted` here, ``check_gecos`` and
``check_password`` in :mod:`vpop.admin.users`) raise vpopmail's texts, so that a protocol can
refuse a bad line before anything is read from the store.
"""

import copy

from vpop.admin.cli import AdminError
from vpop.assign import Domain
from vpop.config import Settings
from vpop.stores.base import Store, User

MAX_PW_PASSWD = 128  # pw_passwd char(128)


def check_crypted(text: str) -> str:
    """A stored hash as given (``-e``): one word without ``:`` (it would split the vpasswd line)."""
    if not text or len(text) > MAX_PW_PASSWD or any(ord(c) <= 32 or c in ":\x7f" for c in text):
        raise AdminError("Error: invalid encrypted password (one word, no ':', at most 128 characters)")
    return text


class UserChange:
    """The fields one change sets; None (or no bit) leaves a field as it is.

    ``clear_all`` empties the flags before ``set_bits`` are set and ``clear_bits`` cleared
    (vmoduser's ``-x``, vpopmaild's ``clear_all_flags``).
    """

    def __init__(self) -> None:
        self.gecos: str | None = None
        self.password: str | None = None
        self.crypted: str | None = None
        self.quota: str | None = None
        self.clear_all = False
        self.set_bits = 0
        self.clear_bits = 0

    def apply(self, settings: Settings, new: User) -> None:
        """Make the change in ``new`` (a new password hashed by the policy)."""
        from vpop.admin.users import new_password_hash

        if self.gecos is not None:
            new.gecos = self.gecos
        if self.password is not None:
            new.passwd = new_password_hash(settings, self.password)
            new.clear = self.password if settings.clear_passwords else ""
        elif self.crypted is not None:
            new.passwd = self.crypted
            new.clear = ""  # the old clear text no longer matches the hash
        if self.quota is not None:
            new.shell = self.quota
        gid = 0 if self.clear_all else new.gid
        new.gid = (gid | self.set_bits) & ~self.clear_bits


def modify_user(settings: Settings, store: Store, domain: Domain, user: str, change: UserChange, *,
                shown_domain: str, allow=None) -> User:
    """Apply ``change`` to ``user`` through :func:`vpop.admin.users.change_users` (read, edit,
    one write under the lock, ``maildirsize`` anew when the quota changed); returns the new record.

    ``allow(old, new, flags)`` raises :class:`AdminError` to refuse (nothing is written);
    ``flags`` are the user's effective flags before the change.  An unknown user is ``no such
    user u@d`` (255).
    """
    from vpop.admin.users import change_users, effective_user_flags

    def edit(record: User) -> None:
        old = copy.copy(record)
        change.apply(settings, record)
        if allow is not None:
            allow(old, record, effective_user_flags(settings, store, domain, old.gid))

    missing = AdminError(f"no such user {user}@{shown_domain}")
    return change_users(settings, store, domain, user, edit, quota_changed=change.quota is not None,
                        missing=missing)[0]


def maildir_usage(settings: Settings, domain: Domain, record: User) -> tuple[int, int]:
    """``(bytes, messages)`` in the user's Maildir, counted as the domain's uid (vpopmaild's
    ``get_user_size``; a user without a directory has none)."""
    if not record.dir:
        return 0, 0
    from vpop import quota
    from vpop.admin.users import check_inside
    from vpop.privileges import ActingAs

    check_inside(settings, domain, record.dir)
    with ActingAs(domain.uid, domain.gid):
        return quota.usage(record.dir + "/Maildir")
