"""Short-lived positive answers, and a store that serves them only where a "yes" hangs on them.

:class:`Cache` keeps at most ``entries`` answers per worker for ``seconds`` seconds (bounded
memory, LRU), each stamped with the shared generation (:meth:`SharedStats.generation`): an
``invalidate`` in any worker -- the admin tools send one when they change a user -- voids every
cached answer of every worker at once.

:class:`CachingStore` is what the ``auth`` request's engine asks: user records, domain limits and
the account stores' rows come from the cache when they are there, and are cached when the store
returns them.  Nothing negative is cached (an unknown user is asked again every time).  A login
the cached answers would *refuse* is never refused on them: :meth:`CachingStore.recheck` reads
every served answer again from the store; when they are the same the refusal stands (so the
password is checked once, as on the direct path), else the decision is made again on the new ones.
Writes through this store (a blank ``pw_dir`` filled, a rehash) void the cache.

A "yes" decided on cached answers stands only when the database answers (:meth:`reachable`): else
it is decided again without them, which is the 111 the direct path gives.  The round trip that
says so is started at the first answer served from the cache and read after the decision, so it
costs what the slower of the two costs, not their sum.  lastauth is written after the client has
its answer (:meth:`after_answer`, :attr:`later`): on a cold server thread that write is the
dearest part of a login, and nothing in the answer depends on it.
"""

import time
from collections import OrderedDict

from vpop.errors import DatabaseFailure

_MISSING = object()


class Cache:
    """Answers by key, with a time to live and a bound on their number."""

    def __init__(self, seconds: int, entries: int, stats) -> None:
        self.seconds = seconds
        self.entries = entries
        self.stats = stats  # SharedStats: the generation
        self.items: OrderedDict = OrderedDict()
        self.generation = -1

    @property
    def enabled(self) -> bool:
        return self.seconds > 0 and self.entries > 0

    def _current(self) -> None:
        generation = self.stats.generation()
        if generation != self.generation:
            self.items.clear()
            self.generation = generation

    def get(self, key):
        self._current()
        found = self.items.get(key, _MISSING)
        if found is _MISSING:
            return _MISSING
        expires, value = found
        if expires < time.monotonic():
            del self.items[key]
            return _MISSING
        self.items.move_to_end(key)
        return value

    def put(self, key, value) -> None:
        if not self.enabled:
            return
        self._current()
        self.items[key] = (time.monotonic() + self.seconds, value)
        self.items.move_to_end(key)
        while len(self.items) > self.entries:
            self.items.popitem(last=False)

    def clear(self) -> None:
        self.items.clear()


def _copy(value):
    """A copy the engine may change (it sets ``dir`` and ``passwd`` on records it updates)."""
    if value is None:
        return None
    if isinstance(value, dict):
        return dict(value)
    cls = value.__class__
    twin = cls.__new__(cls)
    for name in cls.__slots__:
        setattr(twin, name, getattr(value, name))
    return twin


def _same(a, b) -> bool:
    if a is None or b is None or isinstance(a, dict):
        return a == b
    return a.__class__ is b.__class__ and all(getattr(a, n) == getattr(b, n) for n in a.__class__.__slots__)


class CachingStore:
    """The worker's store with cached ``get_user``, ``domain_limits`` and ``find_account``."""

    def __init__(self, store, cache: Cache, row, invalidate, use_cache: bool = True) -> None:
        self.store = store
        self.cache = cache
        self.row = row  # this worker's counters
        self.invalidate = invalidate  # voids every worker's cache
        self.use_cache = use_cache and cache.enabled
        self.served: list[tuple[str, tuple, object]] = []
        self.later: list = []  # what :meth:`after_answer` was given, for the worker to run

    def __getattr__(self, name: str):
        return getattr(self.store, name)

    def _cached(self, method: str, args: tuple, key: tuple):
        if self.use_cache:
            value = self.cache.get(key)
            if value is not _MISSING:
                self.row.add("cache_hits")
                if not self.served:
                    self.store.start_ping()  # read by reachable(), once the decision is made
                self.served.append((method, args, value))
                return _copy(value)
            self.row.add("cache_misses")
        value = getattr(self.store, method)(*args)
        if value is not None or method == "domain_limits":  # None limits: "read the files", an answer
            self.cache.put(key, _copy(value))
        return value

    def get_user(self, user: str, domain):
        return self._cached("get_user", (user, domain), ("user", user, domain.real))

    def domain_limits(self, domain):
        return self._cached("domain_limits", (domain,), ("limits", domain.real))

    def find_account(self, login: str):
        return self._cached("find_account", (login,), ("account", login))

    def recheck(self) -> bool:
        """Read every answer served from the cache again; True when all are unchanged.

        A changed one replaces the cached one (and the caller decides again).
        """
        if not self.served:
            return True
        self.row.add("cache_rechecks")
        unchanged = True
        for method, args, value in self.served:
            fresh = getattr(self.store, method)(*args)
            if not _same(value, fresh):
                unchanged = False
        if not unchanged:
            self.row.add("cache_changed")
            self.invalidate()
        return unchanged

    def reachable(self) -> bool:
        """Whether the update server answers (the ping started at the first cached answer)."""
        try:
            self.store.confirm_reachable()
        except DatabaseFailure:
            return False
        return True

    def after_answer(self, work) -> None:
        self.later.append(work)

    def set_user_dir(self, record, domain, path: str) -> str:
        try:
            return self.store.set_user_dir(record, domain, path)
        finally:
            self.invalidate()

    def replace_password_hash(self, record, domain, old: str, new: str) -> bool:
        try:
            return self.store.replace_password_hash(record, domain, old, new)
        finally:
            self.invalidate()
