"""prismrec: multimodal recommendation — load, train, evaluate, explain and serve.

Python API::

    import prismrec
    ds = prismrec.load_dataset("synthetic")            # or an MMRec / generic folder
    rec = prismrec.Recommender("vbpr", epochs=20).fit(ds)
    items, scores = rec.recommend(ds.user_ids[0], k=10)   # external ids in and out
    rec.save("runs/vbpr")
    rec = prismrec.Recommender.load("runs/vbpr")
    prismrec.evaluate(rec, ds, ks=(10, 20))
"""
__version__ = "0.1.0"

from prismrec.api import Recommender, evaluate  # noqa: E402
from prismrec.data import Dataset, load_dataset, make_synthetic  # noqa: E402
from prismrec.models import registered_models  # noqa: E402

__all__ = ["Recommender", "evaluate", "Dataset", "load_dataset", "make_synthetic", "registered_models",
           "__version__"]
