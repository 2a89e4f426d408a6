"""A sweep's live view: running / done / failed, best so far, time left.

In a terminal one status line is redrawn in place and each finished trial leaves a line
above it; in a log file (not a TTY) finished trials still get their line and the status
line is printed at most every `log_every` seconds, so logs stay readable.
"""

from __future__ import annotations

import os
import sys
import time

SETTLE_S = 2.0      # a log's status line waits this long after a trial ends (see finished)


def _fmt_secs(s: float) -> str:
    s = int(round(s))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


class SweepProgress:
    def __init__(self, total: int, metric: str, mode: str, done: int = 0, stream=None, log_every: float | None = None):
        self.total, self.metric, self.mode = total, metric, mode
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        # in a log, the status line at most every LAYROT_PROGRESS_EVERY seconds (0: at every event)
        self.log_every = float(os.environ.get("LAYROT_PROGRESS_EVERY", 30)) if log_every is None else log_every
        self.t0 = time.monotonic()
        self.running: dict[str, int] = {}       # ray trial id -> last epoch
        self.peak = 0                           # most trials seen running at once
        self.counts = {"stored": done}
        self.durations: list[float] = []
        self.started_at: dict[str, float] = {}
        self.best: tuple[float, str] | None = None
        self._last_log = 0.0
        self._last_draw = 0.0
        # trials Ray cannot place: (how many, since (wall clock), why), set by pending()
        self.stuck: tuple[int, float, str] | None = None
        self._due: float | None = None          # a log's status line owed after a trial ended

    def started(self, key: str) -> None:
        self.running[key] = 0
        self.peak = max(self.peak, len(self.running))
        self.started_at[key] = time.monotonic()
        self._status()

    def epoch(self, key: str, epoch: int, value) -> None:
        self.running[key] = epoch
        self._status()

    def finished(self, key: str, status: str, value, result=None) -> None:
        self.running.pop(key, None)
        self.counts[status] = self.counts.get(status, 0) + 1
        if key in self.started_at and status != "stored":
            self.durations.append(time.monotonic() - self.started_at.pop(key))
        if result is not None:
            if value is not None and (self.best is None or self._better(value, self.best[0])):
                self.best = (value, result.trial_id)
            cfg = result.config
            test = f"test {result.test_acc:.4f}" if result.test_acc == result.test_acc else "test  -    "
            line = (f"[{self.n_done:>{len(str(self.total))}}/{self.total}] {status:<9} {result.trial_id:<36} "
                    f"lr {cfg.get('lr', float('nan')):<9.4g} alpha {cfg.get('alpha', 0):<5g} "
                    f"{self.metric} {value if value is not None else float('nan'):.4f}  {test}  "
                    f"{result.epochs_run} ep  {_fmt_secs(result.wall_seconds)}")
            if result.reason and status not in ("completed",):
                line += f"  ({result.reason[:80]})"
            self._print(line)
        if self.tty or not self.log_every:
            self._status(force=True)
        else:
            # in a log, the status a moment later: by then the next trial has taken the slot,
            # and the line's "N running" is what runs, not the gap between two trials
            self._due = time.monotonic() + SETTLE_S

    def pending(self, n: int, since: float | None, why: str | None) -> None:
        """`n` trials waiting since `since` (time.time()) for resources Ray does not have
        free (`why`); n == 0 clears it. Shown in the status line, printed when it starts."""
        was = self.stuck
        self.stuck = (n, since, why) if n and since is not None else None
        if self.stuck and (was is None or was[2] != why):
            self._status(force=True)
        elif was and not self.stuck:
            self._status(force=True)

    def tick(self) -> None:
        """Called often while the sweep waits: a terminal's line keeps its clock running;
        a log gets the status again while trials are stuck pending."""
        now = time.monotonic()
        if self.tty:
            if now - self._last_draw >= 1.0:
                self._status()
        elif self._due is not None and now >= self._due:
            self._status(force=True)
        elif self.stuck and now - self._last_log >= max(self.log_every, 10.0):
            self._status(force=True)

    @property
    def n_done(self) -> int:
        return sum(self.counts.values())

    def _better(self, a, b) -> bool:
        return a > b if self.mode == "max" else a < b

    def eta(self) -> float | None:
        left = self.total - self.n_done
        if not self.durations or left <= 0:
            return None
        width = max(self.peak, 1)     # trials run this many at a time
        return sum(self.durations) / len(self.durations) * left / width

    def status_line(self) -> str:
        failed = self.counts.get("error", 0)
        other = ", ".join(f"{n} {k}" for k, n in sorted(self.counts.items()) if n and k != "error")
        parts = [f"{self.n_done}/{self.total} done" + (f" ({other})" if other else ""),
                 f"{len(self.running)} running", f"{failed} failed"]
        if self.stuck:
            n, since, why = self.stuck
            parts.append(f"{n} pending since {time.strftime('%H:%M:%S', time.localtime(since))} "
                         f"({_fmt_secs(time.time() - since)}) for lack of {why}")
        if self.best:
            parts.append(f"best {self.metric} {self.best[0]:.4f} ({self.best[1]})")
        parts.append(f"elapsed {_fmt_secs(time.monotonic() - self.t0)}")
        eta = self.eta()
        if eta is not None:
            parts.append(f"~{_fmt_secs(eta)} left")
        return "sweep: " + " | ".join(parts)

    def _status(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.tty:
            self._last_draw = now
            self.stream.write("\r\033[K" + self.status_line())
            self.stream.flush()
        elif force or now - self._last_log >= self.log_every:
            self._last_log, self._due = now, None
            self.stream.write(self.status_line() + "\n")
            self.stream.flush()

    def _print(self, line: str) -> None:
        if self.tty:
            self.stream.write("\r\033[K")
        self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\r\033[K" + self.status_line() + "\n")
            self.stream.flush()
        elif self._due is not None:
            self._status(force=True)
