"""prismrec: multimodal recommendation — load, train, evaluate, explain and serve.

Python API::

    import prismrec
    ds = prismrec.load_dataset("synthetic")            # or an MMRec / generic folder
    rec = prismrec.Recommender("vbpr", epochs=20).fit(ds)
    items, scores = rec.recommend(ds.user_ids[0], k=10)   # external ids in and out
    rec.save("runs/vbpr")
    rec = prismrec.Recommender.load("runs/vbpr")
    prismrec.evaluate(rec, ds, ks=(10, 20))

The names below are imported on first use (PEP 562), so that ``import prismrec`` and light
commands such as ``prismrec models`` or ``prismrec --help`` do not pay for importing torch.
"""
from __future__ import annotations

from prismrec._lazy import lazy_getattr
import typing

__version__ = "0.1.0"

_LAZY = {"Recommender": "prismrec.api", "evaluate": "prismrec.api", "Dataset": "prismrec.data",
         "load_dataset": "prismrec.data", "make_synthetic": "prismrec.data",
         "registered_models": "prismrec.models"}

__all__ = ["Recommender", "evaluate", "Dataset", "load_dataset", "make_synthetic", "registered_models",
           "__version__"]

if typing.TYPE_CHECKING:  # pragma: no cover
    from prismrec.api import Recommender, evaluate
    from prismrec.data import Dataset, load_dataset, make_synthetic
    from prismrec.models import registered_models


__getattr__ = lazy_getattr(__name__, _LAZY, globals())


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
