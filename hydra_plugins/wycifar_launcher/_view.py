"""What a parallel sweep shows: a live block on a terminal, a plain line per event elsewhere.

On a terminal: a line per running job (its number and overrides, epoch k of n, last validation
accuracy, time), then the counts and the best job so far, redrawn in place; jobs that start or end
print a line above it. Elsewhere (a pipe, a file, CI, a SLURM log): one line per event, job
started, epoch done, job ended, each with its time of day.
"""

import shutil
import sys
import time
from dataclasses import dataclass, field


def duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


@dataclass
class JobLine:
    num: int
    overrides: str
    started: float
    max_epochs: int | None = None
    epoch: int = 0
    val_acc: float | None = None  # percent

    def progress(self) -> str:
        total = f"/{self.max_epochs}" if self.max_epochs else ""
        text = f"epoch {self.epoch}{total}"
        if self.val_acc is not None:
            text += f", val acc {self.val_acc:.2f}%"
        return text


@dataclass
class Counts:
    queued: int = 0
    done: int = 0
    failed: int = 0
    stopped: int = 0
    best: str = ""
    running: dict[int, JobLine] = field(default_factory=dict)

    def line(self) -> str:
        text = f"{len(self.running)} running, {self.queued} queued, {self.done} done, {self.failed} failed"
        text += f", {self.stopped} stopped" if self.stopped else ""
        return text + (f"; best {self.best}" if self.best else "")


class View:
    """mode: live (redrawn in place), plain (a line per event) or quiet (nothing but the ends)."""

    def __init__(self, mode: str, stream=None) -> None:
        self.stream = stream or sys.stdout
        if mode == "auto":
            mode = "live" if getattr(self.stream, "isatty", lambda: False)() else "plain"
        self.mode = mode
        self.drawn = 0  # lines of the live block now on the screen

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def _stamp(self, text: str) -> str:
        return f"[{time.strftime('%H:%M:%S')}] {text}"

    def _clear(self) -> None:
        if self.drawn:
            self._write(f"\x1b[{self.drawn}F\x1b[J")
            self.drawn = 0

    def event(self, text: str, counts: Counts, always: bool = False) -> None:
        """A line that stays: a job started or ended (in plain mode also each epoch)."""
        if self.mode == "quiet" and not always:
            return
        if self.mode == "live":
            self._clear()
            self._write(self._stamp(text) + "\n")
            self.draw(counts)
        else:
            self._write(self._stamp(text) + "\n")

    def epoch(self, job: JobLine, counts: Counts) -> None:
        if self.mode == "plain":
            self._write(self._stamp(f"job {job.num} {job.progress()} ({duration(time.time() - job.started)})") + "\n")
        elif self.mode == "live":
            self.draw(counts)

    def draw(self, counts: Counts) -> None:
        if self.mode != "live":
            return
        width = max(20, shutil.get_terminal_size((120, 24)).columns - 1)
        now = time.time()
        lines = []
        for job in sorted(counts.running.values(), key=lambda j: j.num):
            lines.append(f"  job {job.num:>3}  {job.progress():<32} {duration(now - job.started):>7}  {job.overrides}")
        lines.append(counts.line())
        self._clear()
        self._write("".join(line[:width] + "\n" for line in lines))
        self.drawn = len(lines)

    def close(self) -> None:
        self.drawn = 0
