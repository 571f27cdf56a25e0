"""SMORE: the paper's equations as a dense reference for the batch-rows fast path, spectral filters,
the max-pooled fusion graph, learning, config."""
import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from prismrec.data.sampler import PairwiseSampler
from prismrec.graphs import union_max
from prismrec.models import build_model
from prismrec.models.layers import SpectralFilter, spectrum
from prismrec.models.smore import SMORE, SMOREConfig
from tests.models.helpers import (assert_matches_dense_reference, check_beats_most_popular, check_config_names_field,
                                  check_tunable)


def _model(ds, **cfg):
    torch.manual_seed(0)
    return build_model("smore", ds, SMOREConfig(**{"feature_precision": "float32", "cl_precision": "float32", **cfg}))


def test_spectral_filter_is_a_circular_convolution():
    """F⁻¹(K ⊙ X̂ ⊙ Ŷ) equals the circular convolution of x, y and the filter's kernel (ortho FFT scaling)."""
    torch.manual_seed(0)
    d = 8
    filt = SpectralFilter(d).double()
    x, y = torch.randn(3, d, dtype=torch.float64), torch.randn(3, d, dtype=torch.float64)
    kernel = torch.fft.irfft(torch.view_as_complex(filt.weight), n=d, norm="ortho")   # [d]

    def circ(a, b):  # (a ⊛ b)_n = Σ_k a_k b_{(n-k) mod d}
        idx = (torch.arange(d)[:, None] - torch.arange(d)[None]) % d
        return (a[..., None, :] * b[..., idx]).sum(-1)
    want = circ(circ(x, y), kernel.expand(3, d)) / d   # ortho scaling: 1/√d per product
    torch.testing.assert_close(filt(spectrum(x), spectrum(y)), want)
    one = filt(spectrum(x))
    torch.testing.assert_close(one, circ(x, kernel.expand(3, d)) / d ** 0.5)
    assert torch.autograd.gradcheck(lambda w: SpectralFilter.forward(type("F", (), {"dim": d, "weight": w})(),
                                                                    spectrum(x)), (filt.weight.detach().requires_grad_(),))


def test_union_max_keeps_every_edge_with_its_largest_weight():
    a = sp.csr_matrix(np.array([[0.5, 0, -0.2], [0, 0.3, 0], [0, 0, 0]], np.float32))
    b = sp.csr_matrix(np.array([[0.1, 0.4, 0], [0, 0.6, 0], [0.7, 0, 0]], np.float32))
    want = np.array([[0.5, 0.4, -0.2], [0, 0.6, 0], [0.7, 0, 0]], np.float32)
    out = union_max(a, b)
    np.testing.assert_allclose(out.toarray(), want)
    assert out.nnz == 5  # the negative entry stored in only one graph survives


@pytest.mark.parametrize("fixture", ["tiny", "tiny_one_modality", "tiny_three_modalities"])
def test_batch_rows_loss_and_gradients_match_dense_reference(fixture, request):
    ds = request.getfixturevalue(fixture)
    model = _model(ds, dropout=0.0)
    batch = next(iter(PairwiseSampler(ds.train, 64, np.random.default_rng(0))))
    params = [model.embedding, model.spectral["fusion"].weight, model.proj[model.modalities[0]].weight,
              getattr(model, f"feat_{model.modalities[0]}")]
    loss = model.loss(batch)
    loss.backward()  # the raw table's gradient is written by its projection's backward, not returned
    grads = [p.grad.clone() for p in params]
    model.zero_grad(set_to_none=True)

    c, n = model.config, model.n_users
    r = (ds.train.toarray() > 0).astype(np.float64)
    a = np.zeros((n + ds.n_items,) * 2)
    a[:n, n:], a[n:, :n] = r, r.T
    deg = a.sum(1)
    dinv = np.where(deg > 0, np.maximum(deg, 1) ** -0.5, 0)
    a = torch.tensor(dinv[:, None] * a * dinv[None], dtype=torch.float32)
    rhat = a[:n, n:]
    e_id = sum(torch.linalg.matrix_power(a, k) @ model.embedding for k in range(c.num_ui_layers + 1)) / (c.num_ui_layers + 1)
    item = model.embedding[n:]
    xs = {m: torch.fft.rfft(model.proj[m](model.features(m)), dim=1, norm="ortho") for m in model.modalities}
    kern = {v: torch.view_as_complex(model.spectral[v].weight) for v in model.spectral}
    conv = {m: torch.fft.irfft(kern[m] * xs[m], n=c.embedding_dim, dim=1, norm="ortho") for m in model.modalities}
    conv["fusion"] = torch.fft.irfft(kern["fusion"] * torch.stack(list(xs.values())).prod(0), n=c.embedding_dim,
                                     dim=1, norm="ortho")
    views = {}
    for v, cv in conv.items():
        s = torch.tensor((model.fusion_graph if v == "fusion" else model.item_graphs[v]).scipy.toarray())
        h = s @ (item * torch.sigmoid(model.gate[v][0](cv)))
        views[v] = torch.cat([rhat @ h, h])
    parts = [torch.sigmoid(model.prefer[m][0](e_id)) * torch.softmax(model.query[m](views["fusion"]), dim=-1) * views[m]
             for m in model.modalities]
    parts.append(torch.sigmoid(model.prefer["fusion"][0](e_id)) * views["fusion"])
    e_s = torch.stack(parts).mean(0)
    e = e_id + e_s

    def nce(x, y):   # in-batch InfoNCE, duplicates kept
        s = F.normalize(x, dim=1) @ F.normalize(y, dim=1).T / c.temperature
        return (torch.logsumexp(s, 1) - s.diagonal()).mean()
    u, p, q = e[batch.users], e[n + batch.pos_items], e[n + batch.neg_items]
    ref = (-F.logsigmoid((u * p).sum(1) - (u * q).sum(1)).mean()
           + c.reg_weight * ((u ** 2).sum() + (p ** 2).sum() + (q ** 2).sum()) / 2 / c.reg_batch_size
           + c.cl_weight * (nce(e_s[n + batch.pos_items], e_id[n + batch.pos_items])
                            + nce(e_s[batch.users], e_id[batch.users])))
    assert_matches_dense_reference(model, loss, grads, ref, params, e, n_scored=4)


def test_preference_dropout_only_in_training(tiny):
    model = _model(tiny, dropout=0.5)
    model.eval()
    with torch.no_grad():
        a, b = model.embeddings(), model.embeddings()
    torch.testing.assert_close(a, b)


def test_lr_decay_and_learns_beating_most_popular(tiny):
    assert _model(tiny).lr_factor(50) == pytest.approx(0.96)
    check_beats_most_popular("smore", tiny)


@pytest.mark.parametrize("field,value", [("knn_k", 0), ("num_ui_layers", -1), ("dropout", 1.0),
                                         ("temperature", 0.0), ("cl_precision", "fp8")])
def test_config_validation_names_the_field(field, value):
    check_config_names_field(SMOREConfig, field, value, SMORE)


def test_tunable_ranges():
    check_tunable("smore", {"num_ui_layers", "knn_k", "reg_weight", "dropout", "cl_weight"})
