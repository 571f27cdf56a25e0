"""Exception types that prismrec users see.

Every data error names the file, the line (when there is one), the field and what was expected,
so that a user can fix the input without reading a traceback.
"""
from __future__ import annotations


class PrismrecError(Exception):
    """Base class of every error prismrec raises on purpose."""


class DataError(PrismrecError, ValueError):
    """Bad input data.

    Args:
        message: what was wrong and what was expected.
        file: the file the problem is in.
        line: 1-based line number in that file (header is line 1), when it applies.
        field: the column or array the problem is in.
    """

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 field: str | None = None):
        self.file, self.line, self.field, self.reason = file, line, field, message
        where = []
        if file is not None:
            where.append(str(file))
        if line is not None:
            where.append(f"line {line}")
        if field is not None:
            where.append(f"field '{field}'")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)


class ConfigError(PrismrecError, ValueError):
    """Unknown config key, wrong type or invalid value."""


class UnknownNameError(PrismrecError, KeyError):
    """An unknown model, plug-in or encoder name."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0])


class BundleError(PrismrecError, ValueError):
    """A bundle directory that is missing files or holds something other than safetensors + JSON."""


class UnsupportedError(PrismrecError, NotImplementedError):
    """The model cannot do what was asked (for example embed an unseen item)."""
