"""ERL plug-in: starts as the host, trains through the contract, records per-modality signal."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from prismrec import Recommender
from prismrec.config import resolve
from prismrec.errors import ConfigError, PrismrecError
from prismrec.models.base import get_model_class
from prismrec.plugins import get_plugin
from prismrec.plugins.erl import EulerModule

# vbpr in fp32: a plug-in that refines features takes the host's fp32 path, so the bare host must too
HOSTS = [("vbpr", {"feature_precision": "float32"}), ("mmgcn", {}), ("metammf-cp", {"fusion_hidden": (16,)})]


def build(name, dataset, plugins=(), **values):
    cls = get_model_class(name)
    for p in plugins:
        cls = get_plugin(p)(cls)
    _, cfg = resolve(cls, values)
    torch.manual_seed(0)
    return cls(dataset, cfg)


@pytest.mark.parametrize("name,kw", HOSTS)
def test_starts_as_the_host(tiny, name, kw):
    host, wrapped = build(name, tiny, **kw), build(name, tiny, ["erl"], **kw)
    host.eval(), wrapped.eval()
    with torch.no_grad():
        for a, b in zip(host.embeddings(), wrapped.embeddings()):
            torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name,kw", HOSTS)
def test_trains_and_reports_modality_signal(tiny, name, kw):
    losses = []
    rec = Recommender(name, plugins=["erl"], epochs=3, checkpoint=False, batch_size=512, **kw)
    rec.fit(tiny, show_progress=False, callback=lambda e, r: losses.append(r["loss"]))
    assert losses[-1] < losses[0]
    sig = rec.model.modality_signal()
    assert sig["epochs"] == [0, 1, 2]
    for key in ("grad_norm", "grad_share", "unimodal_loss", "unimodal_accuracy"):
        assert set(sig[key]) == {"image", "text"} and all(len(v) == 3 for v in sig[key].values())
    shares = np.array([sig["grad_share"]["image"], sig["grad_share"]["text"]])
    np.testing.assert_allclose(shares.sum(0), 1.0)
    assert all(g > 0 for v in sig["grad_norm"].values() for g in v)
    assert sig["unimodal_accuracy"]["image"][-1] > 0.55               # each modality learns to rank alone


def test_resume_state_round_trip(tiny):
    rec = Recommender("vbpr", plugins=["erl"], epochs=2, checkpoint=False, batch_size=512)
    rec.fit(tiny, show_progress=False)
    state = rec.model.extra_state()
    other = build("vbpr", tiny, ["erl"])
    other.load_extra_state(state)
    assert other.modality_signal() == rec.model.modality_signal()


def test_bundle_round_trip(tiny, tmp_path):
    rec = Recommender("vbpr", plugins=["erl"], epochs=1, checkpoint=False).fit(tiny, show_progress=False)
    rec.save(tmp_path / "b")
    back = Recommender.load(tmp_path / "b")
    np.testing.assert_allclose(back.score(np.arange(3)), rec.score(np.arange(3)), rtol=1e-5, atol=1e-6)


def test_periodic_phase_and_cross_modal_product():
    torch.manual_seed(0)
    mod = EulerModule({"a": 3, "b": 4}, 5, alpha=0.5)
    feats = {"a": torch.randn(6, 3), "b": torch.randn(6, 4)}
    codes = mod.codes(feats)
    re, im, theta, r = codes["a"]
    torch.testing.assert_close(torch.hypot(re, im), r)
    assert (1 - torch.cos((theta + 2 * math.pi) - theta)).abs().max() < 1e-5   # wrap-around costs nothing
    refined = mod.refine(feats, codes)
    torch.testing.assert_close(refined["a"], feats["a"])                        # zero-initialised output map


def test_errors(tiny, tiny_one_modality):
    with pytest.raises(PrismrecError, match="reads none"):
        get_plugin("erl")(get_model_class("bpr"))
    with pytest.raises(PrismrecError, match="already wrapped"):
        get_plugin("erl")(get_plugin("erl")(get_model_class("vbpr")))
    with pytest.raises(PrismrecError, match="only"):
        build("vbpr", tiny_one_modality, ["erl"])
    with pytest.raises(ConfigError, match="erl_phase_loss"):
        Recommender("vbpr", plugins=["erl"], erl_phase_loss="square")
    assert Recommender("vbpr", plugins=["erl"], erl_lambda_uni="0.5").model_config.erl_lambda_uni == 0.5
