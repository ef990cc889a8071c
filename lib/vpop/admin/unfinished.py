"""The note vadduser and vdeluser keep in the domain directory while they work, so that a command
killed at any point (``kill -9``, a crash, a power cut) is finished by the next one.

A new user touches four things that no single rename can change together: the hashing state
(``.dir-control`` or the ``dir_control`` row), the directory, the record (vpasswd + vpasswd.cdb,
or the row) and, on CDB, ``lastauth``.  vpopmail left a half-made user behind (a directory no
record names, a count one high), and the next ``vadduser`` of that name then failed on the
directory for good.  So, under the domain's lock (:meth:`vpop.stores.base.Store.locked`):

* ``vadduser`` writes ``.vuser-unfinished`` (``add``, the name, the directory, the count the
  hashing state is about to hold) *before* the hashing state changes, then makes the directory
  and its files, then writes the record (the one step that makes the user: a rename, or the
  ``COMMIT``), then removes the note;
* ``vdeluser`` writes the note (``del``, the name, the directory, the count before) before it
  removes the record, then removes the directory and gives its place back, then the note.

Every user command that takes the lock first :func:`finish` es a note it finds: an ``add`` whose
record was never written loses its directory (and its place in the hashing state, when the count
shows it was taken); a ``del`` whose record is gone loses its directory too.  The note is written
by temporary file and rename, like every other file, so it is whole or absent.
"""

import os

from vpop.assign import Domain
from vpop.config import Settings
from vpop.errors import TemporaryFailure
from vpop.stores.base import Store

NOTE = ".vuser-unfinished"


def _is_root() -> bool:
    return os.geteuid() == 0


def note(domain: Domain, action: str, name: str, user_dir: str, count: int) -> None:
    """Write the note (``action``: ``add`` or ``del``)."""
    from vpop.files import UserDir

    text = f"{action}\n{name}\n{user_dir}\n{count}\n".encode("utf-8", "surrogateescape")
    with UserDir(domain.dir, (domain.uid,), follow=True) as directory:
        directory.replace(NOTE, lambda handle: handle.write(text), domain.uid if _is_root() else None,
                          domain.gid, 0o600)


def clear(domain: Domain) -> None:
    """Remove the note: the command is done."""
    from vpop.files import UserDir, _problem

    with UserDir(domain.dir, (domain.uid,), follow=True) as directory:
        try:
            os.unlink(NOTE, dir_fd=directory.fd)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise _problem(directory.name(NOTE), "remove", exc) from None


def read(domain: Domain) -> tuple[str, str, str, int] | None:
    """``(action, name, directory, count)`` of the note, None when there is none."""
    from vpop.files import UserDir
    from vpop.numbers import ascii_number

    with UserDir(domain.dir, (domain.uid,), follow=True) as directory:
        data = directory.read(NOTE, 1 << 12)
    if data is None:
        return None
    fields = data.decode("utf-8", "surrogateescape").split("\n")
    count = ascii_number(fields[3].encode(), 999_999_999) if len(fields) > 4 else None
    if len(fields) != 5 or fields[0] not in ("add", "del") or not fields[1] or count is None:
        raise TemporaryFailure(f"{domain.dir}/{NOTE} is damaged: look at it, then remove it")
    return fields[0], fields[1], fields[2], count


def finish(settings: Settings, store: Store, domain: Domain) -> None:
    """Finish what a killed vadduser or vdeluser left (the caller holds the domain's lock)."""
    found = read(domain)
    if found is None:
        return
    action, name, user_dir, count = found
    record = store.get_user(name, domain)
    if action == "add":
        undo = record is None or record.dir != user_dir  # the record was never written
    else:
        undo = record is None  # the record is gone: so must its directory be
    if undo and user_dir:
        from vpop.admin.users import remove_user_dir
        from vpop.stores.base import release_subdir_file

        remove_user_dir(settings, domain, user_dir)
        counted = store.allocated_count(domain) == count  # taken (add), or not yet given back (del)
        if action == "add" and counted:
            store.release_user_subdir(domain, user_dir, name)
        elif action == "del":  # vdeluser lists the place free, then counts one user less
            release_subdir_file(domain, user_dir, name, once=True)
            if counted:
                store.forget_subdir(domain)
    clear(domain)


def undo(settings: Settings, store: Store, domain: Domain, unwritten: bool) -> None:
    """After a failed vadduser: :func:`finish` its note now.  When the store cannot be asked (a
    database that died) but the record is known ``unwritten`` (the failure came before the
    commit, whose rollback gave the count back), the directory and the note go without it;
    otherwise the note stays for the next command."""
    try:
        finish(settings, store, domain)
        return
    except Exception:
        if not unwritten:
            return
    try:
        found = read(domain)
        if found is not None and found[0] == "add" and found[2]:
            from vpop.admin.users import remove_user_dir

            remove_user_dir(settings, domain, found[2])
        clear(domain)
    except Exception:
        pass  # the note stays: the next command finishes it
