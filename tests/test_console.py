"""What a terminal shows: `python -m wycifar.train` run in a pseudo-terminal, its output rendered by
a VT100 emulator (pyte), read line by line as a user would see it."""

import fcntl
import os
import pty
import re
import select
import struct
import sys
import termios
from pathlib import Path

import pyte
from conftest import NO_FIGURES, ROOT, make_image_folder

COLUMNS, ROWS = 120, 40
ROW = re.compile(r"^\|\s+\d+ \| \d\.\d{6} \| \d\dm \d\ds \| [\d.]+\s+\|\s+[\d.]+% \| [\d.]+\s*\|\s*[\d.]+% \|$")


def run_in_terminal(args: list[str], timeout: float = 300) -> tuple[list[str], int]:
    """The screen's lines (scrollback included) after the command ends, and its exit status."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: a terminal of a real size, as a user's
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
        os.chdir(ROOT)
        os.execv(sys.executable, [sys.executable, *args])
    output = b""
    while select.select([fd], [], [], timeout)[0]:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        output += chunk
    _, status = os.waitpid(pid, 0)
    screen = pyte.HistoryScreen(COLUMNS, ROWS, history=10_000, ratio=1)
    pyte.Stream(screen).feed(output.decode(errors="replace"))
    history = ["".join(row[i].data for i in range(COLUMNS)).rstrip() for row in screen.history.top]
    lines = history + [line.rstrip() for line in screen.display]
    while lines and not lines[-1]:
        lines.pop()
    return lines, os.waitstatus_to_exitcode(status)


def test_the_terminal_shows_the_header_and_one_clean_row_per_epoch(tmp_path: Path):
    data = make_image_folder(tmp_path / "data", train_per_class=64)
    lines, code = run_in_terminal(
        [
            "-m",
            "wycifar.train",
            f"data.root={data}",
            f"paths.log_dir={tmp_path}/out",
            f"hydra.run.dir={tmp_path}/run",
            f"paths.cache_dir={tmp_path}/cache",
            "trainer.max_epochs=3",
            "data.batch_size=32",
            "model.base_width=8",
            "trainer.log_every_n_steps=5",
            "threads=1",
            # a redraw after every batch: the most chances for a row to land on the bar's line
            "callbacks.progress_bar.refresh_rate=1",
            *NO_FIGURES,
        ]
    )
    assert code == 0, "\n".join(lines[-30:])
    text = "\n".join(lines)
    title = "| Epoch | LR       | Time    | TrainLoss | TrainAcc | ValLoss  | ValAcc |"
    start = lines.index(title)
    rows = [line for line in lines if line.startswith("|") and line != title]
    assert len(rows) == 3 and all(ROW.match(row) for row in rows), rows
    assert [int(row.split("|")[1]) for row in rows] == [1, 2, 3]
    # the rows follow the table's title and rule, each on its own line (no bar before them)
    assert lines[start + 1].startswith("-----") and lines[start + 2] == rows[0]
    for name in ("Using Device: cpu", "Epochs: 3", "Batch Size: 32", "Label Smoothing: 0.1", "Base Width: 8"):
        assert name in lines, name
    # the network in short (the layer table is in summary.txt), and the bar counting epochs as the table does
    assert any(line.startswith("Parameters: 8,005 (trainable 8,005); receptive field ") for line in lines)
    assert any(line.startswith("The layer table and every convolution's receptive field: /") for line in lines)
    assert "summary.txt" in text.replace("\n", "")  # the path, however the terminal wrapped it
    assert not any(line.startswith("Total params") or "Conv2d-1" in line for line in lines)
    assert "Epoch 3/3" in text and "Epoch 0" not in text
    assert any(line.startswith("Optimizer: SGD") for line in lines)
    assert lines[-1].startswith("test accuracy: ")
    # no log prefixes, no notices a user cannot act on, no tracebacks
    assert not any(re.match(r"^\[\d{4}-\d\d-\d\d", line) or line.startswith(("INFO", "[")) for line in lines)
    for noise in ("Tip:", "litlogger", "LeafSpec", "torch.jit.trace", "Traceback", "FutureWarning"):
        assert noise not in text, noise
    # train.log keeps the timestamps, and the rows
    log = (tmp_path / "run" / "train.log").read_text().splitlines()
    logged_rows = [line for line in log if "wycifar.epochs" in line and ROW.search(line.split(" - ", 1)[1])]
    assert len(logged_rows) == 3 and all(re.match(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", r) for r in logged_rows)
