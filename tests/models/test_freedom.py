"""FREEDOM: learning, shapes, 1/2/3 modalities, seeded degree pruning, fast modality loss vs a dense reference."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from prismrec import Recommender
from prismrec.data.sampler import PairwiseSampler
from prismrec.models import build_model
from prismrec.models.freedom import FREEDOMConfig, modality_weights
from tests.models.helpers import assert_learns_and_scores


def _fit(ds, epochs=5, **cfg):
    return Recommender("freedom", epochs=epochs, batch_size=256, checkpoint=False, **cfg).fit(ds, show_progress=False)


def test_loss_decreases_and_score_shape(tiny):
    assert_learns_and_scores(_fit(tiny, epochs=6, learning_rate=0.01), tiny, min_drop=0.05)


@pytest.mark.parametrize("fixture", ["tiny_one_modality", "tiny_three_modalities"])
def test_any_number_of_modalities(fixture, request):
    ds = request.getfixturevalue(fixture)
    rec = _fit(ds, epochs=2)
    assert rec.model.modalities == list(ds.features)
    assert sum(rec.model.weights) == pytest.approx(1.0)
    assert rec.score(np.arange(3)).shape == (3, ds.n_items)
    contrib = rec.model.modality_contributions(torch.tensor([0, 1]), torch.tensor([2, 3]))
    assert set(contrib) == set(ds.features)


def test_modality_weights_generalise_mm_image_weight():
    assert modality_weights(["image", "text"], 0.1) == [0.1, 0.9]
    assert modality_weights(["text", "image"], 0.1) == [0.9, 0.1]
    assert modality_weights(["image"], 0.1) == [1.0]
    assert modality_weights(["visual", "acoustic", "textual"], 0.1) == pytest.approx([0.1, 0.45, 0.45])
    assert modality_weights(["audio", "text"], 0.1) == [0.5, 0.5]
    assert modality_weights(["image", "text"], 0.1, (0.3, 0.7)) == [0.3, 0.7]
    with pytest.raises(ValueError, match="modality_weights"):
        modality_weights(["image", "text"], 0.1, (1.0,))


def test_pruning_keeps_fraction_and_is_seeded(tiny):
    torch.manual_seed(0)
    model = build_model("freedom", tiny, FREEDOMConfig(dropout=0.8))
    n_edges = tiny.train.nnz

    def prune(seed):
        torch.manual_seed(seed)
        model.on_epoch_start(0)
        return model.masked_adj.scipy.copy()

    a, b, c = prune(1), prune(1), prune(2)
    assert a.nnz == 2 * int(n_edges * 0.2)  # both directions of each kept edge
    assert (a != b).nnz == 0 and (a != c).nnz > 0
    kept = a[: tiny.n_users, tiny.n_users:]
    assert (kept.multiply(tiny.train) != kept).nnz == 0  # only training edges survive
    np.testing.assert_allclose(a.toarray(), a.T.toarray(), atol=1e-7)
    model.eval()  # scoring uses the full graph, not the pruned one
    with model.scoring():
        full = model.score(torch.arange(3))
    model.train()
    torch.manual_seed(1)
    model.on_epoch_start(1)
    model.eval()
    with model.scoring():
        torch.testing.assert_close(model.score(torch.arange(3)), full)


def test_modality_loss_matches_full_projection(tiny):
    """Projecting f+ - f- (bias cancels) gives the dense reference's loss and gradients (all items
    projected)."""
    torch.manual_seed(0)
    model = build_model("freedom", tiny, FREEDOMConfig(reg_weight=0.5))
    batch = next(iter(PairwiseSampler(tiny.train, 128, np.random.default_rng(0))))
    torch.manual_seed(3)
    model.on_epoch_start(0)

    def reference():
        users, items = model.embeddings()
        u = users[batch.users]
        out = -F.logsigmoid((u * items[batch.pos_items]).sum(1) - (u * items[batch.neg_items]).sum(1)).mean()
        for m in model.modalities:
            f = model.proj[m](model.features(m))
            out = out + 0.5 * -F.logsigmoid((u * f[batch.pos_items]).sum(1) - (u * f[batch.neg_items]).sum(1)).mean()
        return out

    grads = []
    for fn in (model.loss, lambda _: reference()):
        model.zero_grad()
        loss = fn(batch)
        loss.backward()
        grads.append((loss.detach(), [p.grad.clone() if p.grad is not None else torch.zeros_like(p)
                                      for p in model.parameters()]))
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=1e-5, atol=1e-6)
    for g0, g1 in zip(grads[0][1], grads[1][1]):
        torch.testing.assert_close(g0, g1, rtol=1e-4, atol=1e-7)


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="dropout"):
        FREEDOMConfig(dropout=1.0)
    with pytest.raises(ValueError, match="num_mm_layers"):
        FREEDOMConfig(num_mm_layers=0)
