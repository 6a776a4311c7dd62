"""What every command line shares: a user's mistake is one line on stderr and exit status 2."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TypeVar

from wycifar.errors import ConfigError

T = TypeVar("T")
EXIT_USER_ERROR = 2


def run_cli(body: Callable[[], T]) -> T:
    """Run `body`; on ConfigError print `error: <message>` and exit 2 (WYCIFAR_DEBUG=1 re-raises)."""
    try:
        return body()
    except ConfigError as error:
        if os.environ.get("WYCIFAR_DEBUG"):
            raise
        print(f"error: {error}", file=sys.stderr, flush=True)
        sys.exit(EXIT_USER_ERROR)
