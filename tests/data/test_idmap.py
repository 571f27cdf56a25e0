"""IdMap: external ids (compared as strings) to internal indices and back."""
import numpy as np
import pytest

from prismrec.data.idmap import IdMap


def test_round_trip_and_unknown_id():
    m = IdMap(np.array([10, 7, 42]), "user")
    assert m.index(7) == 1 and m.index("42") == 2  # compared as strings
    assert m.index([42, 10]).tolist() == [2, 0]
    assert m.external([2, 0]) == [42, 10] and "7" in m and 8 not in m
    with pytest.raises(KeyError, match="unknown user '8'"):
        m.index(8)


@pytest.mark.parametrize("ids", [[1, 2, 1], ["a", "b", "a"], np.array(["1", 1], dtype=object)])
def test_duplicates_are_refused(ids):
    with pytest.raises(ValueError, match="duplicate external item ids"):
        IdMap(ids, "item")


def test_lookup_table_is_built_only_when_needed():
    m = IdMap(np.arange(1000), "user")
    assert m._lookup is None          # training never looks ids up
    assert m.index(999) == 999 and m._lookup is not None
