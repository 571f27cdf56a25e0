"""BM3: learning, shapes, 1/2/3 modalities, no negatives, batch-only loss vs a dense whole-table reference."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from prismrec import Recommender
from prismrec.data.sampler import PairwiseSampler
from prismrec.models import build_model
from prismrec.models.bm3 import BM3Config
from tests.models.helpers import assert_ignores_negatives, assert_learns_and_scores, assert_loss_and_grads_match


def _fit(ds, epochs=5, **cfg):
    return Recommender("bm3", epochs=epochs, batch_size=256, checkpoint=False, **cfg).fit(ds, show_progress=False)


def _model_and_batch(ds, size=64, config=None):
    """A BM3 built at torch seed 0 and the first pairwise batch of ``size`` rows."""
    torch.manual_seed(0)
    model = build_model("bm3", ds, config)
    return model, next(iter(PairwiseSampler(ds.train, size, np.random.default_rng(0))))


def test_loss_decreases_and_score_shape(tiny):
    assert_learns_and_scores(_fit(tiny, epochs=5), tiny)


@pytest.mark.parametrize("fixture", ["tiny_one_modality", "tiny_three_modalities"])
def test_any_number_of_modalities(fixture, request):
    ds = request.getfixturevalue(fixture)
    rec = _fit(ds, epochs=2)
    assert sorted(rec.model.proj) == sorted(ds.features)
    assert rec.score(np.arange(3)).shape == (3, ds.n_items)


def test_negatives_are_ignored(tiny):
    assert_ignores_negatives(*_model_and_batch(tiny))


def test_loss_matches_dense_reference(tiny):
    """Batch-only predictor/projections give the whole-table reference's loss and gradients (dropout 0:
    fixed targets)."""
    model, b = _model_and_batch(tiny, 128, BM3Config(dropout=0.0))
    cfg = model.config

    def reference(model, b):
        u_o, i_o = model.online()
        u_t, i_t = u_o.detach()[b.users], i_o.detach()[b.pos_items]
        u_p, i_p = model.predictor(u_o)[b.users], model.predictor(i_o)[b.pos_items]
        c = lambda x, y: 1 - F.cosine_similarity(x, y, dim=-1).mean()
        cl = 0.0
        for m in model.modalities:
            z = model.proj[m](model.features(m))
            p = model.predictor(z)[b.pos_items]
            cl = cl + c(p, i_t) + c(p, z.detach()[b.pos_items])
        reg = (u_o.norm() + i_o.norm()) / i_o.shape[0]
        return c(u_p, i_t) + c(i_p, u_t) + cfg.reg_weight * reg + cfg.cl_weight * cl

    assert_loss_and_grads_match(model, b, reference)


def test_target_dropout_is_seeded(tiny):
    model, b = _model_and_batch(tiny)
    torch.manual_seed(5)
    a = model.loss(b)
    torch.manual_seed(5)
    torch.testing.assert_close(model.loss(b), a)
    assert not torch.allclose(model.loss(b), a)  # a fresh mask changes the targets


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="dropout"):
        BM3Config(dropout=1.0)
