"""Errors that are the user's to act on: printed as one line, never as a traceback."""


class WycifarError(Exception):
    """Base: `exit_code` is the process's exit status when it reaches the command line."""

    exit_code = 1
    # how the command line starts its one line
    prefix = "error: "


class ConfigError(WycifarError, ValueError):
    """A configuration value or input that is not allowed; the message names key, value and choices."""

    exit_code = 2


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (or its type's name): what a one-line error quotes."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def check_choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not allowed; choose one of: {', '.join(allowed)}")


def check_whole_number(key: str, value: object, minimum: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"{key}={value!r} is not allowed; it must be a whole number >= {minimum}")


def check_number(
    key: str, value: object, minimum: float, inclusive: bool = True, maximum: float | None = None, exclusive_max=False
) -> None:
    is_number = not isinstance(value, bool) and isinstance(value, (int, float))
    above = is_number and (value >= minimum if inclusive else value > minimum)
    below = maximum is None or (is_number and (value < maximum if exclusive_max else value <= maximum))
    if not (above and below):
        bound = f"{'>=' if inclusive else '>'} {minimum:g}"
        if maximum is not None:
            bound += f" and {'<' if exclusive_max else '<='} {maximum:g}"
        raise ConfigError(f"{key}={value!r} is not allowed; it must be a number {bound}")


class DivergenceError(WycifarError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""

    exit_code = 3


class InterruptedRun(WycifarError):
    """Ctrl-C or SIGTERM: a resumable checkpoint was written; the message says how to resume."""

    exit_code = 130
    prefix = ""  # a stop the user asked for, not an error
