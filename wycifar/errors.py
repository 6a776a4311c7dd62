"""Errors that are the user's to fix: printed as one line, never as a traceback."""


class ConfigError(ValueError):
    """A configuration value or input that is not allowed; the message names key, value and choices."""
