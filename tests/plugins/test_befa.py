"""BeFA plug-in: wraps every feature-using model without editing it; config, bundles, CLI."""
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from prismrec import Recommender
from prismrec.cli import app
from prismrec.data.sampler import Batch
from prismrec.errors import ConfigError, PrismrecError
from prismrec.models import registered_models
from prismrec.plugins import get_plugin
from prismrec.plugins.befa import BeFAAdapter, wrap

FEATURE_MODELS = sorted(n for n, c in registered_models().items() if c.uses_features and c.features_in_training)


def _batch(ds, n=32):
    g = torch.Generator().manual_seed(0)
    return Batch(torch.randint(0, ds.n_users, (n,), generator=g), torch.randint(0, ds.n_items, (n,), generator=g),
                 torch.randint(0, ds.n_items, (n,), generator=g))


@pytest.mark.parametrize("output", ["raw", "embedding"])
@pytest.mark.parametrize("name", FEATURE_MODELS)
def test_wraps_every_feature_model(name, output, tiny):
    if output == "embedding" and name.startswith("metammf"):
        pytest.skip("MetaMMF derives a PCA basis from features() in setup: it needs befa_output='raw'")
    cls = wrap(name)
    model = cls(tiny, cls.Config(befa_expansion_ratio=2, befa_output=output))
    assert isinstance(model, registered_models()[name]) and model.name == name
    items = torch.tensor([0, 5, 9])
    for m in model.modalities:       # features() now returns the adapted, behaviour-masked feature
        f = model.features(m, items)
        dim = tiny.features[m].shape[1] if output == "raw" else model.befa_dim
        assert f.shape == (3, dim) and model.feature_dims()[m] == dim
        assert model.raw_features(m, items).shape[1] == tiny.features[m].shape[1]
        if output == "raw":
            assert not torch.allclose(f, model.raw_features(m, items))
    batch = _batch(tiny)
    loss = model.loss(Batch(batch.users) if model.sampler == "users" else batch)
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in model.befa.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads), "the adapter must receive a training signal"
    with model.scoring():
        assert model.score(torch.tensor([0, 1])).shape == (2, tiny.n_items)


def test_host_init_and_graphs_are_unchanged(tiny):
    """The host draws the same initial weights and builds its kNN graph from raw features."""
    torch.manual_seed(5)
    plain = registered_models()["freedom"](tiny)
    torch.manual_seed(5)
    wrapped = wrap("freedom")(tiny)
    torch.testing.assert_close(plain.item_emb, wrapped.item_emb)
    for m in plain.modalities:
        assert (plain.mm_graphs[m] != wrapped.mm_graphs[m]).nnz == 0


def test_behaviour_embedding_from_host_or_owned(tiny):
    vbpr = wrap("vbpr")(tiny)
    assert not vbpr.befa_owns_behaviour                 # VBPR has item ID embeddings
    torch.testing.assert_close(vbpr.befa_behaviour(torch.tensor([2])), vbpr.item_emb[[2]])
    ld = wrap("ld4mrec")(tiny)                          # no ID embedding: the adapter owns one
    assert ld.befa_owns_behaviour and ld.befa_item_emb.shape == (tiny.n_items, ld.befa_dim)


def test_adapter_equations():
    torch.manual_seed(0)
    a = BeFAAdapter(6, 4, ratio=2, dropout=0.0).eval()
    f, e = torch.randn(3, 6), torch.randn(3, 4)
    p = a.proj(f)
    h = torch.tanh(torch.relu(a.decouple(p)))
    mask = torch.sigmoid(a.mask(torch.relu(a.filter(h))))
    torch.testing.assert_close(a(f, e), e * mask)
    assert ((a(f, e) / e) > 0).all() and ((a(f, e) / e) < 1).all()    # a soft mask over the behaviour
    a.mode = "project"
    torch.testing.assert_close(a(f, e), p)
    a.mode = "residual"                                                   # content kept beside the mask
    torch.testing.assert_close(a(f, e), p + e * mask)


def test_config_keys_are_settable_and_checked():
    rec = Recommender("vbpr", plugins=["befa"], befa_expansion_ratio=8, befa_dropout=0.5, reg_weight=1e-3)
    assert rec.model_config.befa_expansion_ratio == 8 and rec.model_config.reg_weight == 1e-3
    with pytest.raises(ConfigError, match="befa_dropout"):
        Recommender("vbpr", plugins=["befa"], befa_dropout=1.5)
    with pytest.raises(ConfigError, match="unknown config key"):
        Recommender("vbpr", befa_dropout=0.1)          # BeFA keys need the plug-in


def test_clear_errors():
    with pytest.raises(PrismrecError, match="reads none"):
        wrap("bpr")
    with pytest.raises(PrismrecError, match="already wrapped"):
        wrap(wrap("vbpr"))
    assert get_plugin("befa") is wrap


def test_bundle_round_trip_and_cold_start(tiny, tmp_path):
    rec = Recommender("vbpr", plugins=["befa"], epochs=2, befa_expansion_ratio=2).fit(tiny, run_dir=tmp_path,
                                                                                      show_progress=False)
    loaded = Recommender.load(tmp_path)
    assert loaded.plugins == ("befa",) and type(loaded.model).__name__ == "VBPRBeFA"
    assert loaded.model.config.befa_expansion_ratio == 2
    np.testing.assert_allclose(loaded.score(np.arange(5)), rec.score(np.arange(5)), rtol=1e-5, atol=1e-5)
    model = loaded.model.eval()
    with torch.no_grad():
        new = model.embed_items({m: torch.tensor(f[:2]) for m, f in tiny.features.items()})
    assert new.shape == (2, 2 * model.config.embedding_dim) and torch.isfinite(new).all()


def test_cli_train_with_plugin(mmrec_dir, tmp_path):
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["train", "--data", str(mmrec_dir), "--model", "vbpr", "--plugin", "befa",
                                   "--set", "epochs=1", "--set", "befa_dropout=0.1", "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    assert Recommender.load(out).model.config.befa_dropout == 0.1
