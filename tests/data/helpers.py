"""Shared helpers of the loader tests."""
from __future__ import annotations

import pytest

from prismrec.errors import DataError


def expect_data_error(load, *args, match: str | None = None, contains: tuple[str, ...] | list[str] = (),
                      **fields) -> DataError:
    """``load(*args)`` raises a :class:`DataError` whose message matches the regex ``match`` and holds each
    string of ``contains``, and whose attributes equal ``fields`` (``line=4, field="item"``). Returns it."""
    with pytest.raises(DataError, match=match) as e:
        load(*args)
    message = str(e.value)
    for text in contains:
        assert text in message, (text, message)
    for name, want in fields.items():
        assert getattr(e.value, name) == want, (name, getattr(e.value, name), message)
    return e.value
