"""Cold-start items of the frozen-kNN-graph models (FREEDOM, PGL): ``embed_items`` gives an unseen
item the vector it has as a training item without interactions (a model built with it, same
weights); deeper item propagation matches a dense reference of the graph with the new row; the
feature plug-ins refine new items' features through ``new_item_features``. (Served over HTTP:
tests/serve/test_serve_graph_models.py.)"""
import numpy as np
import pytest
import scipy.sparse as sp
import torch

from prismrec.data import Dataset, make_synthetic
from prismrec.graphs import NewItemRows, SparseMatrix, modality_graph, propagate_new_items
from prismrec.models import build_model
from prismrec.models.base import Model, get_model_class
from prismrec.plugins import get_plugin

F32 = {"pgl": {"feature_precision": "float32"}, "freedom": {}}


@pytest.fixture(scope="module")
def pair():
    """``(with_item, without_item, item)``: one dataset whose last item has features but no training
    interactions, and the same dataset without that item."""
    full = make_synthetic(200, 90, 8, modalities={"image": 20, "text": 12}, seed=4, name="cold")
    x = full.n_items - 1
    keep = np.ones(full.n_items, np.float32)
    keep[x] = 0.0
    train = sp.csr_matrix(full.train @ sp.diags(keep))
    train.eliminate_zeros()
    splits = {"valid": full.valid, "test": full.test}
    with_item = Dataset("cold-a", train, **splits, features=full.features)
    without = Dataset("cold-b", train[:, :x], **{k: v[:, :x] for k, v in splits.items()},
                      features={m: f[:x] for m, f in full.features.items()})
    return with_item, without, x


def _twins(name, pair, **cfg):
    """The model built on both datasets, the smaller one holding the larger one's weights (item rows
    cut); the larger one's own ID row of the interaction-free item is zeroed (a new item has none)."""
    with_item, without, x = pair
    torch.manual_seed(0)
    a = build_model(name, with_item, get_model_class(name).Config(**{**F32[name], **cfg}))
    torch.manual_seed(1)
    b = build_model(name, without, type(a.config)(**{**F32[name], **cfg}))
    with torch.no_grad():
        if hasattr(a, "item_emb"):
            a.item_emb[x] = 0.0
        state = {k: v[:x] if v.shape != b.state_dict()[k].shape else v for k, v in a.state_dict().items()}
    b.load_state_dict(state)
    return a.eval(), b.eval()


@pytest.mark.parametrize("name", ["freedom", "pgl"])
def test_new_item_gets_its_vector_as_an_item_without_interactions(name, pair):
    with_item, _, x = pair
    a, b = _twins(name, pair)
    with torch.no_grad():
        expected = a.embeddings()[1][x]
        cold = b.embed_items({m: torch.tensor(f[x:x + 1]) for m, f in with_item.features.items()})
        warm_b = b.embeddings()[1]
    assert cold.shape == (1, warm_b.shape[1])
    torch.testing.assert_close(cold[0], expected, rtol=1e-5, atol=1e-6)


def _dense_rows(known, new, k, weights):
    """Dense ``[n, I + n]`` new-item rows: cosine top-k among known items and the item itself, 1/k each."""
    out = 0.0
    for (m, f), w in zip(known.items(), weights):
        x = torch.nn.functional.normalize(torch.tensor(f), dim=1)
        q = torch.nn.functional.normalize(torch.tensor(new[m]), dim=1)
        sims = torch.cat([q @ x.T, torch.full((len(q), len(q)), -2.0).fill_diagonal_(2.0)], dim=1)
        top = sims.topk(k, dim=1).indices
        out = out + w * torch.zeros_like(sims).scatter_(1, top, 1.0 / k)
    return out


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_new_item_propagation_matches_a_dense_reference(pair, layers):
    """``propagate_new_items`` = the new rows of ``S'^L [table; own]``, ``S' = [[S, 0], [rows]]``."""
    _, without, _ = pair
    rng = np.random.default_rng(0)
    new = {m: rng.normal(size=(3, f.shape[1])).astype(np.float32) for m, f in without.features.items()}
    rows = NewItemRows(without.features, new, 6, [0.3, 0.7])
    # S of the known items with the test's k and weights, built as the models build it
    s = sum(w * torch.tensor(modality_graph(np.array(f), 6, weighted=False, cache=False).toarray())
            for f, w in zip(without.features.values(), [0.3, 0.7]))
    adj = SparseMatrix(sp.csr_matrix(s.numpy()))
    n_known = s.shape[0]
    dense = torch.zeros(n_known + 3, n_known + 3)
    dense[:n_known, :n_known] = s
    dense[n_known:] = _dense_rows(without.features, new, 6, [0.3, 0.7])
    table, own = torch.randn(n_known, 5), torch.randn(3, 5)
    expected = (torch.linalg.matrix_power(dense, layers) @ torch.cat([table, own]))[n_known:]
    torch.testing.assert_close(propagate_new_items(adj, rows, table, own, layers), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("plugin", ["befa", "erl"])
def test_plugins_refine_new_items_features(plugin, tiny):
    """A wrapped PGL embeds unseen items from refined features (not the raw ones); a host without a
    content path for unseen items (MGCN) stays without one when wrapped."""
    cls = get_plugin(plugin)("pgl")
    torch.manual_seed(0)
    model = cls(tiny, cls.Config(feature_precision="float32")).eval()
    feats = {m: torch.tensor(f[:4]) for m, f in tiny.features.items()}
    with torch.no_grad():
        for key, p in model.named_parameters():   # as after training (ERL starts as the identity)
            if key.startswith(plugin):
                p.add_(0.1 * torch.randn_like(p))
        refined = model.new_item_features(feats)
        cold = model.embed_items(feats)
    assert cold.shape == (4, model.embeddings()[1].shape[1]) and torch.isfinite(cold).all()
    assert any(not torch.equal(refined[m], feats[m]) for m in feats)
    assert get_plugin(plugin)("mgcn").embed_items is Model.embed_items
