"""MetaMMF and MetaMMF-CP: meta layers against per-item reference products, CP algebra,
training on 1-3 modalities, parameter counts, and the per-item modality weights."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from prismrec import Recommender
from prismrec.data.microvideo import make_microvideo
from prismrec.models.base import build_model
from prismrec.models.metammf import MetaLayer, MetaMMFConfig
from prismrec.models.metammf_cp import MetaMMFCPConfig


def per_item_reference(layer: MetaLayer, x, s):
    """The released code's product: materialise W_i = M + Σ_k s_ik T_k per item, then bmm."""
    m, t = layer.tensors()
    w = m + torch.einsum("nk,kpq->npq", s, t)
    return torch.bmm(x[:, None, :], w).squeeze(1)


@pytest.mark.parametrize("n_in,n_out", [(6, 9), (9, 6)])  # both product orders of the full layer
@pytest.mark.parametrize("rank,mode", [(0, "cp"), (3, "cp"), (3, "released")])
def test_meta_layer_matches_reference(n_in, n_out, rank, mode):
    torch.manual_seed(0)
    layer = MetaLayer(4, n_in, n_out, rank, mode, bf16=False)
    if rank == 0:
        with torch.no_grad():
            layer.weight.mul_(50)  # make the meta part matter
    x, s = torch.randn(7, n_in), torch.randn(7, 4)
    torch.testing.assert_close(layer(x, s), per_item_reference(layer, x, s), atol=1e-4, rtol=1e-4)


def test_released_cp_collapses_rank():
    """The released CP layer: every T_k is a multiple of the same matrix A B."""
    torch.manual_seed(0)
    _, t = MetaLayer(4, 5, 6, 3, "released", bf16=False).tensors()
    flat = t.reshape(4, -1)
    assert torch.linalg.matrix_rank(flat) == 1
    _, t_cp = MetaLayer(4, 5, 6, 3, "cp", bf16=False).tensors()
    assert torch.linalg.matrix_rank(t_cp.reshape(4, -1)) == 3


def test_cp_has_several_times_fewer_parameters(tiny):
    def fusion_params(cfg):
        return sum(p.numel() for p in build_model("metammf", tiny, cfg).fusion.parameters())
    full, cp = fusion_params(MetaMMFConfig()), fusion_params(MetaMMFCPConfig())
    assert full > 4 * cp


def test_pca_reduces_wide_modalities(tiny):
    model = build_model("metammf", tiny, MetaMMFConfig(pca_dim=10, fusion_hidden=(16,)))
    assert model.fusion_inputs().shape == (tiny.n_items, 20)      # image 24 -> 10, text 16 -> 10
    narrow = build_model("metammf", tiny, MetaMMFConfig(pca_dim=64, fusion_hidden=(16,)))
    assert narrow.fusion_inputs().shape == (tiny.n_items, 40)     # raw


@pytest.mark.parametrize("name,fixture,backbone", [
    ("metammf", "tiny_one_modality", "gcn"), ("metammf", "tiny_three_modalities", "gcn"),
    ("metammf-cp", "tiny", "gcn"), ("metammf-cp", "tiny", "mf"), ("metammf-cp", "tiny", "lightgcn")])
def test_trains_and_scores(name, fixture, backbone, request):
    ds = request.getfixturevalue(fixture)
    losses = []
    rec = Recommender(name, epochs=4, checkpoint=False, batch_size=512, fusion_hidden=(32, 16), backbone=backbone)
    rec.fit(ds, show_progress=False, callback=lambda e, r: losses.append(r["loss"]))
    assert losses[-1] < losses[0]
    scores = rec.score(np.arange(4))
    assert scores.shape == (4, ds.n_items) and np.isfinite(scores).all()
    assert rec.train_config.batch_size == 512 and rec.train_config.weight_decay == 1e-6


def test_modality_weights_fixed_fusion_is_item_independent(tiny_three_modalities):
    model = build_model("metammf", tiny_three_modalities, MetaMMFConfig(fusion_hidden=(16,)))
    w = model.modality_weights()
    assert set(w) == {"visual", "acoustic", "textual"}
    torch.testing.assert_close(sum(w.values()), torch.ones(tiny_three_modalities.n_items))
    assert max(v.std().item() for v in w.values()) > 1e-4          # meta part: item-specific
    with torch.no_grad():
        for layer in model.fusion.layers:
            layer.weight[:, 1:] = 0                                 # no meta tensors: a fixed fusion
    w = model.modality_weights()
    assert max(v.std().item() for v in w.values()) < 1e-6


def noise_gap(model_name, **config):
    """Share of the noisy modality in the first fusion weight: clean items minus noisy items."""
    ds, noise = make_microvideo(600, 300, 15, noise_fraction=0.4, noise_scale=3.0, noisy_modalities=["acoustic"],
                                seed=0)
    rec = Recommender(model_name, epochs=15, checkpoint=False, batch_size=256, fusion_hidden=(32,), **config)
    rec.fit(ds, show_progress=False)
    share = rec.model.modality_weights()["acoustic"].numpy()
    clean = np.setdiff1d(np.arange(ds.n_items), noise["acoustic"])
    return share[clean].mean() - share[noise["acoustic"]].mean()


@pytest.mark.slow
@pytest.mark.xfail(reason="under BPR training the meta learner does not learn to switch off a noisy modality "
                          "per item: fixed per-item noise is memorised like an ID (see models/metammf.py)",
                   strict=False)
def test_learned_fusion_downweights_noise_modality():
    assert noise_gap("metammf") > 0.02
