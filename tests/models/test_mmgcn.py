"""MMGCN: the fast path against a dense reference of the paper's equations; training basics."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from prismrec import Recommender
from prismrec.data import make_synthetic
from prismrec.models.base import build_model
from prismrec.models.mmgcn import MMGCNConfig


@pytest.fixture(scope="module")
def wide():
    """Image 80-d (> raw_max_dim below: goes through the MLP), text 70-d (raw, > 64: bf16 path)."""
    return make_synthetic(120, 60, 8, modalities={"image": 80, "text": 70}, seed=5, name="wide")


def reference(model, dataset):
    """Dense reference of the paper's equations (MMGCN, Eq. 1-5), one modality m at a time.

    With Â the row-normalised (mean) adjacency of the bipartite graph and H⁰ = ℓ2-rows([P_m; f̃_m])
    (user preferences on top of the item features, f̃ = f W_mlp + b when the features are wide):
    aggregation ``G = σ(Â H W)``, combination ``H' = σ(W_c [G ; σ(H W_l + b_l) + E_id] + b_c)``
    with σ = LeakyReLU(0.01); the representation is the mean of the last layer over modalities."""
    train = torch.tensor(dataset.train.toarray())
    n_u, n_i = train.shape
    adjacency = torch.zeros(n_u + n_i, n_u + n_i)
    adjacency[:n_u, n_u:] = train
    adjacency[n_u:, :n_u] = train.T
    mean_adj = adjacency / adjacency.sum(dim=1).clamp(min=1.0)[:, None]
    act = torch.nn.LeakyReLU(0.01)
    per_modality = []
    for name, net in model.gcn.items():
        raw = model.features(name)
        items = raw if net.mlp is None else raw @ net.mlp.weight.T + net.mlp.bias
        h = F.normalize(torch.vstack([net.preference, items]), p=2, dim=1)
        for n_layer in range(len(net.conv)):
            gathered = act(mean_adj @ h @ net.conv[n_layer])
            own = act(h @ net.lin[n_layer].weight.T + net.lin[n_layer].bias) + model.id_emb
            w_c, b_c = net.comb[n_layer].weight, net.comb[n_layer].bias
            h = act(torch.hstack([gathered, own]) @ w_c.T + b_c)
        per_modality.append(h)
    rep = torch.stack(per_modality).mean(dim=0)
    return rep[:n_u], rep[n_u:]


@pytest.mark.parametrize("learn", [False, True])
def test_matches_dense_reference(wide, learn):
    torch.manual_seed(0)
    cfg = MMGCNConfig(raw_max_dim=75, latent_dim=32, feature_precision="float32", learn_embeddings=learn)
    model = build_model("mmgcn", wide, cfg)
    assert model.gcn["image"].mlp is not None and model.gcn["text"].mlp is None
    u, i = model.embeddings()
    ru, ri = reference(model, wide)
    torch.testing.assert_close(u, ru, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(i, ri, atol=1e-5, rtol=1e-4)
    # the last layer restricted to a batch's rows gives the same rows
    rows_u, rows_i = torch.tensor([3, 0, 3]), torch.tensor([5, 59, 1, 5])
    bu, bi = model.forward(rows_u, rows_i)
    torch.testing.assert_close(bu, ru[rows_u], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(bi, ri[rows_i], atol=1e-5, rtol=1e-4)


def test_bf16_close_to_fp32(wide):
    torch.manual_seed(0)
    fp = build_model("mmgcn", wide, MMGCNConfig(raw_max_dim=75, latent_dim=96, feature_precision="float32"))
    torch.manual_seed(0)
    bf = build_model("mmgcn", wide, MMGCNConfig(raw_max_dim=75, latent_dim=96, feature_precision="bfloat16"))
    (u1, i1), (u2, i2) = fp.embeddings(), bf.embeddings()
    s1, s2 = u1 @ i1.T, u2 @ i2.T
    assert torch.corrcoef(torch.stack([s1.ravel(), s2.ravel()]))[0, 1] > 0.99


def test_embeddings_frozen_by_default(tiny):
    model = build_model("mmgcn", tiny)
    names = {n for n, _ in model.named_parameters()}
    assert "id_emb" not in names and not any("preference" in n for n in names)
    learn = build_model("mmgcn", tiny, MMGCNConfig(learn_embeddings=True))
    assert "id_emb" in {n for n, _ in learn.named_parameters()}


@pytest.mark.parametrize("fixture", ["tiny_one_modality", "tiny", "tiny_three_modalities"])
def test_trains_and_scores(fixture, request):
    ds = request.getfixturevalue(fixture)
    losses = []
    rec = Recommender("mmgcn", epochs=4, checkpoint=False, batch_size=512)
    rec.fit(ds, show_progress=False, callback=lambda e, r: losses.append(r["loss"]))
    assert losses[-1] < losses[0]
    scores = rec.score(np.arange(5))
    assert scores.shape == (5, ds.n_items) and np.isfinite(scores).all()
    ids, _ = rec.recommend(ds.user_ids[0], k=10)
    seen = set(ds.item_ids[ds.train[0].indices])
    assert not seen & set(ids)
