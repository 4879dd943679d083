"""Structured logging and progress for jobs.

Log lines are ``key=value`` events (easy to grep, easy to ship). They carry ids, counts,
timings and paths only: profile and job text never reaches a log line, so nothing here takes
free text from tables.

    log = get_logger(__name__)
    event(log, "synthesize.done", rows=120, errors=3, seconds=41.2)
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

_CONFIGURED = False


def get_logger(name: str) -> logging.Logger:
    """A logger under the ``lantern_batch`` hierarchy, configured once (level: LANTERN_LOG_LEVEL)."""
    global _CONFIGURED
    if not _CONFIGURED:
        root = logging.getLogger("lantern_batch")
        if not root.handlers:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(
                logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s", "%H:%M:%S")
            )
            root.addHandler(handler)
        root.setLevel(os.environ.get("LANTERN_LOG_LEVEL", "INFO"))
        root.propagate = False
        _CONFIGURED = True
    return logging.getLogger(name if name.startswith("lantern_batch") else f"lantern_batch.{name}")


KNOWN_RAY_NOISE: dict[str, tuple[str, ...]] = {
    # Ray Train's placement-group cleaner asks the State API whether the controller lives; a
    # local Ray started without the dashboard serves no State API, so the cleaner warns every
    # few seconds of every training run. The placement group is still released at the end.
    "ray.train.v2._internal.execution.controller.placement_group_cleaner": (
        "Failed to query Ray Train Controller actor state",),
}
"""Logger name -> message starts that :func:`quiet_known_ray_noise` drops."""


class _DropMessages(logging.Filter):
    def __init__(self, starts: tuple[str, ...]):
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.starts)


def quiet_known_ray_noise() -> None:
    """Drop :data:`KNOWN_RAY_NOISE` (the ``worker_process_setup_hook`` of the local Ray that
    :func:`lantern_batch.runtime.init_ray` starts; idempotent)."""
    for name, starts in KNOWN_RAY_NOISE.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) for f in logger.filters):
            logger.addFilter(_DropMessages(starts))


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    text = str(value)
    return f'"{text}"' if " " in text else text


def event(log: logging.Logger, name: str, **fields: object) -> None:
    """Log one structured event: ``name k1=v1 k2=v2``. Pass counts, ids and timings only."""
    log.info("%s %s", name, " ".join(f"{k}={_fmt(v)}" for k, v in fields.items()))


@contextmanager
def timed(timings: dict[str, float], key: str) -> Iterator[None]:
    """Add the wall-clock seconds of the block to ``timings[key]``."""
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[key] = timings.get(key, 0.0) + time.perf_counter() - start


class Progress:
    """A light progress reporter for driver-side loops (Ray Data shows its own progress bars).

    Prints at most every ``every_s`` seconds: done/total, rate and ETA.
    """

    def __init__(self, log: logging.Logger, what: str, total: int | None = None, every_s: float = 5.0):
        self.log, self.what, self.total, self.every_s = log, what, total, every_s
        self.done = 0
        self.start = self._last = time.perf_counter()

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.perf_counter()
        if now - self._last >= self.every_s or (self.total is not None and self.done >= self.total):
            self._last = now
            self.report()

    def report(self) -> None:
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        rate = self.done / elapsed
        if self.total:
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            event(self.log, f"{self.what}.progress", done=self.done, total=self.total,
                  pct=round(100 * self.done / self.total, 1), rate_per_s=rate, eta_s=round(eta, 1))
        else:
            event(self.log, f"{self.what}.progress", done=self.done, rate_per_s=rate)
