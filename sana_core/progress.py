"""Progress of the long loops (codec training, sampling, judging, GenEval scoring, block importance).

`Progress(total, desc)` is two views of one counter:
- a tqdm bar for a person at a terminal: `disable=None` turns it off when stderr is not a TTY (DVC, Prefect, tests
  capture the output), and `mininterval` keeps a redrawn bar from flooding a log anyway;
- a `logging` line every `log_every_s` seconds and at the end, for the captured case: the loop's name, n/total, the
  caller's latest stats (e.g. loss), items/s and ETA. Logger: "sana15.<desc>" at INFO (flows/stage_runner.py sends
  INFO to stderr, which DVC prints and the Prefect task log streams).

    with Progress(steps, "codec", unit="step") as bar:
        for step in ...:
            ...
            bar.update(loss=loss.item())

`track(iterable, desc)` wraps an iterable the same way (one update per item, or `weight(item)` units per item).
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Iterable, Iterator

from tqdm.auto import tqdm

BAR_MIN_INTERVAL_S = 5.0     # terminal redraws at most this often
LOG_EVERY_S = 30.0           # a log line at most this often (and one at the end)


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = int(round(seconds))
    return f"{s // 3600:d}:{s % 3600 // 60:02d}:{s % 60:02d}"


class Progress:
    def __init__(self, total: int | None, desc: str, unit: str = "it", log_every_s: float = LOG_EVERY_S,
                 logger: logging.Logger | None = None):
        self.total, self.desc, self.unit, self.n = total, desc, unit, 0
        self.log_every_s = log_every_s
        self.log = logger or logging.getLogger(f"sana15.{desc.split()[0]}")
        self.stats: dict[str, Any] = {}
        self.bar = tqdm(total=total, desc=desc, unit=unit, disable=None, mininterval=BAR_MIN_INTERVAL_S,
                        dynamic_ncols=True, leave=False)
        self.t0 = self._last = time.monotonic()
        self.lines: list[str] = []   # the log lines emitted (tests read them)

    def update(self, n: int = 1, **stats: Any) -> None:
        self.n += n
        self.stats.update(stats)
        self.bar.update(n)
        if stats:
            self.bar.set_postfix({k: _short(v) for k, v in self.stats.items()}, refresh=False)
        now = time.monotonic()
        if now - self._last >= self.log_every_s:
            self._emit(now)

    def _emit(self, now: float) -> None:
        self._last = now
        elapsed = max(now - self.t0, 1e-9)
        rate = self.n / elapsed
        eta = (self.total - self.n) / rate if self.total and rate > 0 else None
        stats = "".join(f" {k}={_short(v)}" for k, v in self.stats.items())
        line = (f"{self.desc}: {self.n}/{self.total if self.total is not None else '?'} {self.unit}{stats} "
                f"({rate:.3g} {self.unit}/s, elapsed {_eta(elapsed)}, ETA {_eta(eta)})")
        self.lines.append(line)
        self.log.info(line)

    def close(self) -> None:
        """Close the bar; a closing log line only for a loop that ran long enough to log (short ones stay quiet)."""
        if self.bar is not None:
            self.bar.close()
            now = time.monotonic()
            if self.lines or now - self.t0 >= self.log_every_s:
                self._emit(now)
            self.bar = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _short(v: Any) -> Any:
    return f"{v:.4g}" if isinstance(v, float) else v


def track(iterable: Iterable, desc: str, total: int | None = None, unit: str = "it",
          weight: Callable[[Any], int] | None = None, log_every_s: float = LOG_EVERY_S) -> Iterator:
    """Yield the items of `iterable`, counting each (or `weight(item)` units) once its loop body has run."""
    if total is None and hasattr(iterable, "__len__"):   # a weighted sequence counts its units, not its items
        total = sum(weight(x) for x in iterable) if weight else len(iterable)
    with Progress(total, desc, unit=unit, log_every_s=log_every_s) as bar:
        for item in iterable:
            yield item
            bar.update(weight(item) if weight else 1)
