"""The domain directory's lock, ``.vpasswd.lock`` (vpopmail's name): every admin change of a
domain's users runs under it, on every store (CDB: it guards vpasswd + vpasswd.cdb; SQL: the
directories, the hashing state and :mod:`vpop.admin.unfinished`'s note)."""

import os


class VpasswdLock:
    """``.vpasswd.lock`` in the domain directory, held for a read-modify-write."""

    def __init__(self, domain_dir: str) -> None:
        self.path = domain_dir + "/.vpasswd.lock"
        self.fd = -1

    def __enter__(self) -> "VpasswdLock":
        from vpop.files import ANY_OWNER, UserDir

        # Through UserDir.lock: no link followed, a regular file owned by the directory's owner
        # (or root), one link; as root, a lock made here (or vpopmail's empty root one) is given
        # to the directory's owner, so the domain's uid (vdelivermail) can take it too.
        with UserDir(os.path.dirname(self.path), ANY_OWNER, follow=True) as directory:
            owner = directory.uid if os.geteuid() == 0 else None
            self.fd = directory.lock(os.path.basename(self.path), owner, directory.gid)
        return self

    def __exit__(self, *exc) -> None:
        os.close(self.fd)


class HeldLock:
    """One ``VpasswdLock`` per domain directory and store, taken once however deep the nesting."""

    def __init__(self, store: object, domain_dir: str, taken=None) -> None:
        self.store = store
        self.domain_dir = domain_dir
        self.taken = taken  # called once the lock is first taken (CDB: a lagging cdb is rebuilt)

    def __enter__(self) -> "HeldLock":
        held = self.store.__dict__.setdefault("_held", {})
        entry = held.get(self.domain_dir)
        if entry is None:
            lock = VpasswdLock(self.domain_dir)
            lock.__enter__()
            held[self.domain_dir] = [lock, 1]
            if self.taken is not None:
                try:
                    self.taken()
                except BaseException:
                    self.__exit__()
                    raise
        else:
            entry[1] += 1
        return self

    def __exit__(self, *exc: object) -> None:
        held = self.store.__dict__["_held"]
        entry = held[self.domain_dir]
        entry[1] -= 1
        if entry[1] == 0:
            del held[self.domain_dir]
            entry[0].__exit__()
