"""Full-ranking evaluation (``specs/protocol.md``): masked top-K and Recall/NDCG/Precision/MAP/Hit."""
from prismrec.evaluation.metrics import METRICS, metrics_from_hits
from prismrec.evaluation.ranking import (
    DEFAULT_BLOCK,
    DEFAULT_KS,
    evaluate_splits,
    ranked_hits,
    topk_items,
)

__all__ = [
    "DEFAULT_BLOCK",
    "DEFAULT_KS",
    "METRICS",
    "evaluate_model",
    "evaluate_splits",
    "metrics_from_hits",
    "ranked_hits",
    "topk_items",
]


def evaluate_model(model, dataset, splits=("valid", "test"), ks=DEFAULT_KS, metrics=METRICS,
                   mask_valid_in_test: bool = False, block_size: int = DEFAULT_BLOCK):
    """Evaluate a trained model on ``splits`` of ``dataset`` by masked full ranking.

    Args:
        mask_valid_in_test: also mask validation items when ranking for test (off, as in MMRec).
    Returns:
        ``{split: {"recall@20": ..., ...}}``.
    """
    extra = {"test": dataset.valid} if mask_valid_in_test and "test" in splits else None
    with model.scoring():
        return evaluate_splits(model.score, dataset.train, {s: dataset.split(s) for s in splits},
                               ks=ks, metrics=metrics, block_size=block_size, extra_masks=extra)
