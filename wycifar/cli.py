"""What every command line shares: a user's error is one line on stderr and a non-zero exit."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TypeVar

from wycifar.errors import WycifarError

T = TypeVar("T")


def fail(message: str, exit_code: int) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(exit_code)


def run_cli(body: Callable[[], T]) -> T:
    """Run `body`; a WycifarError becomes `error: <message>` and its exit code (WYCIFAR_DEBUG=1 re-raises)."""
    try:
        return body()
    except WycifarError as error:
        if os.environ.get("WYCIFAR_DEBUG"):
            raise
        fail(str(error), error.exit_code)
