"""One contract suite for every registered model (in the style of implicit's RecommenderBaseTestMixin)."""
import numpy as np
import pytest
import torch

from prismrec import Recommender
from prismrec.errors import PrismrecError
from prismrec.models import registered_models
from prismrec.models.base import Model
from prismrec.plugins import get_plugin
from tests.models.helpers import check_serve_round_trip, check_trains_with_plugin

MODELS = sorted(registered_models())
# the models whose feature plug-ins and served bundle are checked end to end, with the settings that keep them small
END_TO_END = {"diffmm": {"hidden_dim": 16}, "pgl": {}, "smore": {}}
# models that read their features once, to build fixed structures: a feature plug-in would change nothing
READ_ONCE = sorted(n for n, c in registered_models().items() if c.uses_features and not c.features_in_training)


@pytest.fixture(scope="module")
def fitted(tiny, tmp_path_factory):
    cache = {}

    def get(name):
        if name not in cache:
            run = tmp_path_factory.mktemp(name)
            rec = Recommender(name, epochs=2, batch_size=512, eval_ks=(10, 20)).fit(tiny, run_dir=run,
                                                                                 show_progress=False)
            cache[name] = (rec, run)
        return cache[name]
    return get


@pytest.mark.parametrize("name", MODELS)
def test_score_shape_and_finite(name, fitted, tiny):
    rec, _ = fitted(name)
    users = np.array([0, 3, 7])
    s = rec.score(users)
    assert s.shape == (3, tiny.n_items)
    assert np.isfinite(s).all()


@pytest.mark.parametrize("name", MODELS)
def test_recommend_single_batch_and_seen_filter(name, fitted, tiny):
    rec, _ = fitted(name)
    u = tiny.user_ids[4]
    ids, scores = rec.recommend(u, k=10)
    assert ids.shape == (10,) and scores.shape == (10,)
    assert np.all(np.diff(scores) <= 1e-6)
    seen = set(tiny.item_ids[tiny.train[4].indices].tolist())
    assert not seen & set(ids.tolist())
    many, _ = rec.recommend(tiny.user_ids[[4, 5]], k=10)
    assert many.shape == (2, 10) and many[0].tolist() == ids.tolist()
    allowed = tiny.item_ids[:30]
    sub, _ = rec.recommend(u, k=5, items=allowed, exclude_seen=False)
    assert set(sub.tolist()) <= set(allowed.tolist())


@pytest.mark.parametrize("name", MODELS)
def test_save_load_round_trip(name, fitted, tiny):
    rec, run = fitted(name)
    loaded = Recommender.load(run)
    users = np.arange(5)
    np.testing.assert_allclose(loaded.score(users), rec.score(users), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_loss_is_finite_scalar(name, tiny):
    from prismrec.data.sampler import SAMPLERS
    from prismrec.models import build_model
    torch.manual_seed(0)
    model = build_model(name, tiny)
    if not model.trainable:
        pytest.skip("not trainable")
    batch = next(iter(SAMPLERS[model.sampler](tiny.train, 64, np.random.default_rng(0))))
    loss = model.loss(batch)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert any(p.grad is not None for p in model.parameters())


def test_unfitted_recommender_is_a_clear_error():
    with pytest.raises(PrismrecError, match="not fitted"):
        Recommender("bpr").recommend(0)


def test_unknown_model_lists_known():
    with pytest.raises(KeyError, match=r"unknown model 'freedomm'; known: .*bpr"):
        Recommender("freedomm")


def test_unknown_user():
    from prismrec import make_synthetic
    ds = make_synthetic(100, 50, seed=0)
    rec = Recommender("pop").fit(ds, show_progress=False)
    with pytest.raises(KeyError, match="unknown user 'nobody'"):
        rec.recommend("nobody")


def test_multimodal_beats_id_only_on_planted_signal():
    """Issue 3 acceptance on the synthetic default: VBPR beats BPR on test Recall@20."""
    from prismrec import make_synthetic
    ds = make_synthetic()
    r = {m: Recommender(m, epochs=40, patience=10).fit(ds, show_progress=False).metrics["test"]["recall@20"]
         for m in ("bpr", "vbpr")}
    assert r["vbpr"] > r["bpr"] + 0.03, r



@pytest.mark.parametrize("name", MODELS)
def test_scoring_factors_reproduce_score(name, fitted):
    """Where a model exposes ``(U, I)`` for ranking, ``score(u)`` is ``U[u] @ Iᵀ`` (ranking prunes
    items with them); a model with its own ``score`` exposes none."""
    model = fitted(name)[0].model
    users = torch.arange(5)
    with model.scoring():
        factors = model.scoring_factors()
        if type(model).score is not Model.score or not model.is_dot_product:
            assert factors is None
        else:
            u, i = factors
            torch.testing.assert_close(model.score(users), u[users] @ i.T)
    assert model.scoring_factors() is None  # outside scoring(): nothing cached


@pytest.mark.parametrize("plugin", ["befa", "erl"])
@pytest.mark.parametrize("name", sorted(END_TO_END))
def test_trains_with_feature_plugins(name, plugin, tiny):
    check_trains_with_plugin(name, tiny, plugin, **END_TO_END[name])


@pytest.mark.parametrize("name", sorted(END_TO_END))
def test_serve_round_trip(name, tiny, tmp_path):
    check_serve_round_trip(name, tiny, tmp_path, **END_TO_END[name])


@pytest.mark.parametrize("plugin", ["befa", "erl"])
@pytest.mark.parametrize("name", READ_ONCE)
def test_feature_plugins_refuse_models_that_read_features_once(name, plugin):
    with pytest.raises(PrismrecError, match=f"plug-in '{plugin}' .* '{name}' reads them only once"):
        get_plugin(plugin)(name)


def test_read_once_models_are_listed():
    assert {"damrs", "itemknncbf"} <= set(READ_ONCE)
