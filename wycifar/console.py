"""What the terminal shows: log lines without a prefix, printed above Lightning's progress bar
(never glued to it), and no notices a user cannot act on."""

from __future__ import annotations

import logging
import warnings

from tqdm import tqdm


class ConsoleFormatter(logging.Formatter):
    """The message alone; warnings and errors say so."""

    def format(self, record: logging.LogRecord) -> str:
        message = super().format(record)
        if record.levelno >= logging.WARNING:
            return f"{record.levelname.lower()}: {message}"
        return message


class ProgressAwareHandler(logging.StreamHandler):
    """Writes through tqdm, which lifts any progress bar off its line, prints, and redraws it."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=self.stream)
            self.flush()
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


class _DropLightningTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip:" not in record.getMessage()


def quiet_notices() -> None:
    """Lightning's tip to install litlogger, and the deprecation of pytree's LeafSpec that
    Lightning's own fit loop triggers: neither is the user's to act on. Where logging is set up
    (Hydra's job logging), Lightning's messages and Python's warnings go through it too, so
    they reach train.log and print above the progress bar instead of on its line."""
    if logging.getLogger().handlers:
        for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
            # Lightning gives these loggers a stream handler of their own when it is imported
            # before logging is configured; the root's handlers are the ones to use
            logger = logging.getLogger(name)
            logger.handlers.clear()
            logger.propagate = True
        logging.captureWarnings(True)
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropLightningTips) for f in logger.filters):
        logger.addFilter(_DropLightningTips())
    warnings.filterwarnings("ignore", message=r".*LeafSpec.* is deprecated")
    # every run claims a fresh folder, so a checkpoint folder with files in it is the run's own,
    # resumed in place (ckpt_path): nothing of another run's is overwritten
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
    # an epoch shorter than the logging interval: the epoch's metrics are logged all the same
    warnings.filterwarnings("ignore", message=r"The number of training batches .* is smaller than the logging interval")
