"""Counters every worker keeps in memory shared with the master and the other workers.

One row of unsigned 64-bit counters per worker in an anonymous shared mapping made before the
workers are forked.  A worker writes only its own row, so no lock is needed; a reader (the
``stats`` request, the master on SIGUSR1) sums the rows.  A worker that is replaced keeps its
row: counts never go back.

``invalidations`` doubles as the cache's generation: any worker's count going up tells every
worker that its cached answers are void (see :mod:`vlookupd.cache`).
"""

import mmap

FIELDS = (
    "pid", "connections", "requests", "ok", "none", "refused", "temp", "denied", "bad", "stale", "internal",
    "cache_hits", "cache_misses", "cache_rechecks", "cache_changed", "cache_entries", "invalidations",
    "reconnects", "latency_us", "latency_max_us", "slow_10ms", "slow_100ms", "slow_1s",
)
_INDEX = {name: i for i, name in enumerate(FIELDS)}
# summed over the workers, except these
_MAXIMA = ("latency_max_us",)
_NOT_SUMMED = ("pid",)


class SharedStats:
    """The counter rows of ``workers`` workers."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.memory = mmap.mmap(-1, workers * len(FIELDS) * 8)
        self.view = memoryview(self.memory).cast("Q")

    def row(self, worker: int) -> "Row":
        return Row(self.view, worker * len(FIELDS))

    def generation(self) -> int:
        """The sum of every worker's invalidations (it only grows)."""
        step, at = len(FIELDS), _INDEX["invalidations"]
        return sum(self.view[worker * step + at] for worker in range(self.workers))

    def totals(self) -> dict[str, int]:
        step = len(FIELDS)
        result = {}
        for name, at in _INDEX.items():
            if name in _NOT_SUMMED:
                continue
            values = [self.view[worker * step + at] for worker in range(self.workers)]
            result[name] = max(values) if name in _MAXIMA else sum(values)
        return result

    def pids(self) -> list[int]:
        step, at = len(FIELDS), _INDEX["pid"]
        return [self.view[worker * step + at] for worker in range(self.workers)]


class Row:
    """One worker's counters."""

    __slots__ = ("view", "base")

    def __init__(self, view: memoryview, base: int) -> None:
        self.view = view
        self.base = base

    def add(self, name: str, amount: int = 1) -> None:
        at = self.base + _INDEX[name]
        self.view[at] = self.view[at] + amount

    def set(self, name: str, value: int) -> None:
        self.view[self.base + _INDEX[name]] = value

    def latency(self, seconds: float) -> None:
        micros = int(seconds * 1_000_000)
        self.add("latency_us", micros)
        at = self.base + _INDEX["latency_max_us"]
        if micros > self.view[at]:
            self.view[at] = micros
        for name, limit in (("slow_1s", 1_000_000), ("slow_100ms", 100_000), ("slow_10ms", 10_000)):
            if micros >= limit:
                self.add(name)
                break


def rss_kib(pids: list[int]) -> int:
    """The resident memory of these processes, from /proc (0 for one that is gone)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status", "rb") as handle:
                for line in handle:
                    if line.startswith(b"VmRSS:"):
                        total += int(line.split()[1])
                        break
        except (OSError, ValueError, IndexError):
            continue
    return total


def summary(totals: dict[str, int], rss: int) -> str:
    """One line for syslog: the counters that matter to an operator."""
    requests = totals["requests"]
    average = totals["latency_us"] / requests / 1000 if requests else 0.0
    lookups = totals["cache_hits"] + totals["cache_misses"]
    rate = 100.0 * totals["cache_hits"] / lookups if lookups else 0.0
    return (f"stats connections={totals['connections']} requests={requests} ok={totals['ok']} "
            f"none={totals['none']} refused={totals['refused']} temp={totals['temp']} "
            f"denied={totals['denied']} bad={totals['bad']} internal={totals['internal']} "
            f"cache_hits={totals['cache_hits']} cache_misses={totals['cache_misses']} "
            f"cache_hit_rate={rate:.1f}% cache_entries={totals['cache_entries']} "
            f"invalidations={totals['invalidations']} reconnects={totals['reconnects']} "
            f"latency_avg_ms={average:.2f} latency_max_ms={totals['latency_max_us'] / 1000:.2f} "
            f"over_10ms={totals['slow_10ms']} over_100ms={totals['slow_100ms']} over_1s={totals['slow_1s']} "
            f"rss_kib={rss}")
