"""Typed errors raised by the library; the CLIs turn them into one line and exit code 2."""


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field and the value."""


class DataError(ValueError):
    """A data source is missing or unusable; the message names the file and the problem."""


def first_line(exc: BaseException) -> str:
    """An exception's message in one line (its first), or its type's name when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
