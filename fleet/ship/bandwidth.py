"""Bandwidth limits: token buckets, one shared by every host of a run and one per host.

A :class:`Throttle` is what a byte stream calls before it hands on ``count`` bytes; it
waits as long as the strictest of its buckets asks. Buckets lend: a taker may go into
debt (a 1 MiB chunk through a 64 KiB bucket), and every later taker waits until the debt
is repaid, so the long-run rate never exceeds the bucket's rate, whatever the chunk size
or the number of threads.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

# What a bucket may hold when idle: a small burst, so that a short stream cannot run far
# ahead of the rate (at most this many bytes, or one second's worth, whichever is less).
_BURST_BYTES = 256 << 10


class TokenBucket:
    """``rate`` bytes per second, with a small burst; safe to share between threads."""

    def __init__(
        self,
        rate: float,
        *,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be more than 0")
        self.rate = float(rate)
        self.burst = float(burst if burst is not None else min(rate, _BURST_BYTES))
        self._clock = clock
        self._tokens = self.burst
        self._stamp = clock()
        self._lock = threading.Lock()

    def reserve(self, count: int) -> float:
        """Take ``count`` bytes' worth now; the seconds the caller must wait before sending."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            self._tokens -= count
            return -self._tokens / self.rate if self._tokens < 0 else 0.0


class Throttle:
    """Several buckets at once (the run's total and this host's); waits for the strictest."""

    def __init__(
        self, buckets: Sequence[TokenBucket], sleep: Callable[[float], None] = time.sleep
    ) -> None:
        self.buckets = tuple(buckets)
        self._sleep = sleep

    def take(self, count: int) -> None:
        """Block until ``count`` more bytes may go."""
        if not self.buckets or count <= 0:
            return
        wait = max(bucket.reserve(count) for bucket in self.buckets)
        if wait > 0:
            self._sleep(wait)


class Limits:
    """The limits of one run: ``total`` bytes/s over all hosts, ``per_host`` for each.

    ``for_host`` gives each host's throttle; every throttle shares the one total bucket.
    """

    def __init__(self, total: float | None = None, per_host: float | None = None) -> None:
        self.per_host = per_host
        self._total = TokenBucket(total) if total else None

    def for_host(self) -> Throttle | None:
        """A throttle for one more host, or None when nothing is limited."""
        buckets = [b for b in (self._total,) if b is not None]
        if self.per_host:
            buckets.append(TokenBucket(self.per_host))
        return Throttle(buckets) if buckets else None
