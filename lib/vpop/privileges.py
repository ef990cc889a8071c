"""Doing file work as the mail user while still root (vchkpw before its final drop).

vchkpw runs as root, but the directories it writes into (user directories, ``lastauth``,
a blank ``pw_dir``'s new home) belong to the domain's uid, who could swap a path for a
symlink between root's ``mkdir`` and ``chown``.  :class:`ActingAs` switches the *effective*
ids to the domain's for that work (the kernel then refuses what the mail user could not
do anyway) and back to root afterwards; the real and saved uid stay 0 until the final
``setuid``.  Outside root it does nothing.
"""

import os


class ActingAs:
    """``with ActingAs(uid, gid): ...`` -- effective uid/gid and groups of the mail user."""

    def __init__(self, uid: int, gid: int) -> None:
        self.uid = uid
        self.gid = gid
        self.active = False
        self.groups: list[int] = []
        self.egid = 0

    def __enter__(self) -> "ActingAs":
        if os.geteuid() != 0:
            return self
        self.groups = os.getgroups()
        self.egid = os.getegid()
        os.setgroups([self.gid])
        os.setegid(self.gid)
        os.seteuid(self.uid)
        self.active = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self.active:
            os.seteuid(0)
            os.setegid(self.egid)
            os.setgroups(self.groups)
            self.active = False
