"""Audio encoders: log-mel / MFCC statistics in numpy + scipy, and a hook for a pretrained torch model.

The spectral front end is written with numpy/scipy instead of calling librosa: librosa pulls numba
and llvmlite (~150 MB) and JIT-compiles on first use (seconds per process, per worker), while
these few lines reproduce ``librosa.feature.melspectrogram`` (Slaney mel scale and norm, centred
zero-padded Hann STFT) and ``librosa.feature.mfcc`` to float precision (tested against librosa where
it is installed). Decoding: WAV with scipy; other formats (FLAC, OGG, MP3) with soundfile or
librosa when installed.
"""
from __future__ import annotations

import io
from math import gcd
from pathlib import Path
from typing import Callable

import numpy as np
import scipy.fft
import scipy.io.wavfile
import scipy.signal

from prismrec.features.encoders import (Encoder, build_arch, feature_forward, file_digest, load_weights, pooled,
                                        register_encoder)


def decode_audio(content, sample_rate: int, max_seconds: float | None = None) -> np.ndarray:
    """Mono float32 waveform at ``sample_rate`` from file bytes (or a path); ``ValueError`` if unreadable."""
    if isinstance(content, (str, Path)):
        content = Path(content).read_bytes()
    try:
        sr, y = scipy.io.wavfile.read(io.BytesIO(content))
    except (ValueError, EOFError, OSError):
        sr, y = _decode_other(content)
    y = np.asarray(y)
    if y.dtype.kind in "iu":  # PCM integers -> [-1, 1]
        info = np.iinfo(y.dtype)
        y = (y.astype(np.float32) - (info.max + info.min + 1) / 2) / ((info.max - info.min + 1) / 2)
    y = y.astype(np.float32, copy=False)
    if y.ndim == 2:
        y = y.mean(axis=1)
    if max_seconds:
        y = y[: int(max_seconds * sr)]
    if y.size == 0:
        raise ValueError("empty audio clip")
    if sr != sample_rate:
        g = gcd(int(sr), int(sample_rate))
        y = scipy.signal.resample_poly(y, sample_rate // g, sr // g).astype(np.float32)
    return y


def _decode_other(content: bytes):
    try:
        import soundfile
    except ImportError:
        soundfile = None
    if soundfile is not None:
        try:
            y, sr = soundfile.read(io.BytesIO(content), dtype="float32", always_2d=False)
            return sr, y
        except (RuntimeError, soundfile.LibsndfileError) as e:
            raise ValueError(f"unreadable audio ({e})") from None
    raise ValueError("unreadable audio: not a WAV file (install soundfile to read FLAC/OGG/MP3)")


def hz_to_mel(f):
    """Slaney's mel scale (librosa's default): linear below 1 kHz, logarithmic above."""
    f = np.asarray(f, dtype=np.float64)
    mel = f / (200.0 / 3)
    log_part = 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(f >= 1000.0, log_part, mel)


def mel_to_hz(m):
    m = np.asarray(m, dtype=np.float64)
    return np.where(m >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0)), m * (200.0 / 3))


def mel_filterbank(sr: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None) -> np.ndarray:
    """``[n_mels, n_fft // 2 + 1]`` triangular filters on the mel scale, each of unit area (Slaney).

    Filter ``m`` rises linearly from 0 at edge ``e_m`` to 1 at ``e_{m+1}`` and falls back to 0 at
    ``e_{m+2}``, where the ``n_mels + 2`` edges are equally spaced in mels between ``fmin`` and
    ``fmax``; it is then scaled by ``2 / (e_{m+2} - e_m)`` so that every filter has the same area.
    """
    fmax = sr / 2 if fmax is None else fmax
    bins = np.fft.rfftfreq(n_fft, 1.0 / sr)                                  # [n_fft // 2 + 1] Hz
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    left, centre, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]   # [n_mels, 1] each
    rising = (bins - left) / (centre - left)
    falling = (right - bins) / (right - centre)
    triangle = np.clip(np.minimum(rising, falling), 0.0, None)              # [n_mels, n_bins]
    return (triangle * (2.0 / (right - left))).astype(np.float32)


def log_mel(y: np.ndarray, sr: int, n_fft: int = 2048, hop_length: int = 512, n_mels: int = 128,
            fb: np.ndarray | None = None, top_db: float = 80.0) -> np.ndarray:
    """``[n_mels, frames]`` log-power mel spectrogram in dB (= ``librosa.power_to_db(melspectrogram(y))``)."""
    pad = n_fft // 2
    yp = np.pad(y.astype(np.float32), (pad, pad))  # librosa: center=True, pad_mode="constant"
    if len(yp) < n_fft:
        yp = np.pad(yp, (0, n_fft - len(yp)))
    frames = np.lib.stride_tricks.sliding_window_view(yp, n_fft)[::hop_length]  # [T, n_fft]
    window = scipy.signal.get_window("hann", n_fft, fftbins=True).astype(np.float32)
    power = np.abs(scipy.fft.rfft(frames * window, axis=1)) ** 2  # [T, n_fft//2 + 1]
    fb = mel_filterbank(sr, n_fft, n_mels) if fb is None else fb
    mel = fb @ power.T.astype(np.float32)  # [n_mels, T]
    db = 10.0 * np.log10(np.maximum(mel, 1e-10))
    return np.maximum(db, db.max() - top_db) if top_db is not None else db


def mfcc_from_log_mel(db: np.ndarray, n_mfcc: int = 20) -> np.ndarray:
    """``[n_mfcc, frames]`` (= ``librosa.feature.mfcc``: DCT-II, orthonormal, of the dB mel spectrogram)."""
    return scipy.fft.dct(db, type=2, axis=0, norm="ortho")[:n_mfcc]


@register_encoder
class LogMelEncoder(Encoder):
    """Clip-level statistics of log-mel and MFCC frames; needs no weights.

    Per clip: mean and std over time of ``n_mfcc`` MFCCs and of their deltas (first differences),
    mean and std of the ``n_mels`` log-mel bands (dB / 80), and mean and std of five frame
    descriptors (spectral centroid / (sr/2), 85% roll-off / (sr/2), spectral flatness, zero-crossing
    rate, RMS): ``4 n_mfcc + 2 n_mels + 10`` values (218 by default), as in the statistics
    descriptors of music auto-tagging before deep embeddings.

    Args:
        sample_rate: clips are resampled to this rate.
        n_fft, hop_length: STFT size and hop (samples).
        n_mels, n_mfcc: mel bands and cepstral coefficients.
        max_seconds: only the first ``max_seconds`` of a clip are read (bounds memory and time).
    """

    name = "logmel"
    fork_safe = True
    modality = "audio"
    description = "weight-free: log-mel + MFCC (+deltas) statistics, spectral descriptors (218-d)"

    def __init__(self, sample_rate: int = 22050, n_fft: int = 2048, hop_length: int = 512, n_mels: int = 64,
                 n_mfcc: int = 20, max_seconds: float = 30.0):
        if n_mfcc > n_mels:
            raise ValueError(f"logmel: n_mfcc ({n_mfcc}) must not exceed n_mels ({n_mels})")
        super().__init__(sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels,
                         n_mfcc=n_mfcc, max_seconds=max_seconds)
        self.sr, self.n_fft, self.hop, self.n_mels, self.n_mfcc = sample_rate, n_fft, hop_length, n_mels, n_mfcc
        self.max_seconds = max_seconds
        self.fb = mel_filterbank(sample_rate, n_fft, n_mels)
        self._freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate).astype(np.float32)

    @property
    def dim(self) -> int:
        return 4 * self.n_mfcc + 2 * self.n_mels + 10

    def prepare(self, content) -> np.ndarray:
        if isinstance(content, np.ndarray):
            return content.astype(np.float32, copy=False)
        return decode_audio(content, self.sr, self.max_seconds)

    def _clip(self, y: np.ndarray) -> np.ndarray:
        db = log_mel(y, self.sr, self.n_fft, self.hop, self.n_mels, self.fb)  # [n_mels, T]
        mfcc = mfcc_from_log_mel(db, self.n_mfcc)  # [n_mfcc, T]
        delta = np.diff(mfcc, axis=1) if mfcc.shape[1] > 1 else np.zeros_like(mfcc)
        power = 10.0 ** (db / 10.0)  # mel power per frame, for the descriptors
        total = power.sum(0) + 1e-10
        mel_hz = mel_to_hz(np.linspace(hz_to_mel(0), hz_to_mel(self.sr / 2), self.n_mels + 2))[1:-1]
        nyq = self.sr / 2
        centroid = (mel_hz[:, None] * power).sum(0) / total / nyq
        rolloff = mel_hz[np.argmax(np.cumsum(power, 0) >= 0.85 * total, axis=0)] / nyq
        flatness = np.exp(np.log(power + 1e-10).mean(0)) / (power.mean(0) + 1e-10)
        frames = np.lib.stride_tricks.sliding_window_view(np.pad(y, (0, max(0, self.n_fft - len(y)))),
                                                          self.n_fft)[::self.hop]
        zcr = (np.diff(np.signbit(frames), axis=1) != 0).mean(1)
        rms = np.sqrt((frames ** 2).mean(1))
        desc = np.stack([centroid, rolloff, flatness])  # [3, T]
        parts = [mfcc.mean(1), mfcc.std(1), delta.mean(1), delta.std(1), db.mean(1) / 80, db.std(1) / 80,
                 desc.mean(1), desc.std(1), [zcr.mean(), zcr.std(), rms.mean(), rms.std()]]
        return np.concatenate([np.asarray(p, np.float32).ravel() for p in parts])

    def encode(self, batch: list) -> np.ndarray:
        out = np.zeros((len(batch), self.dim), np.float32)
        for r, y in enumerate(batch):
            out[r] = self._clip(self.prepare(y))
        return out


@register_encoder
class TorchAudioEncoder(Encoder):
    """Hook for a pretrained audio network given by architecture and a weights file.

    The network gets either the log-mel spectrogram ``[B, 1, n_mels, frames]`` (``input="logmel"``;
    dB values, clips cut or zero-padded to ``seconds``) or the waveform ``[B, samples]``
    (``input="waveform"``), and returns ``[B, d]`` (or ``[B, d, ...]``, averaged). Architecture and
    weights as in :class:`prismrec.features.image.TorchImageEncoder` (``module:factory`` or a callable;
    ``.safetensors`` or a ``.pt`` state dict).

    Args:
        arch: the architecture.
        weights: the weights file.
        input: ``"logmel"`` or ``"waveform"``.
        sample_rate, seconds, n_fft, hop_length, n_mels: the front end the network was trained with.
    """

    name = "torch-audio"
    modality = "audio"
    requires = ("torch",)
    description = "pretrained audio network: --audio-arch module:factory --audio-model PATH"

    def __init__(self, arch: str | Callable, weights: str | Path, input: str = "logmel", sample_rate: int = 16000,
                 seconds: float = 10.0, n_fft: int = 1024, hop_length: int = 320, n_mels: int = 64):
        if input not in ("logmel", "waveform"):
            raise ValueError(f"torch-audio: input must be 'logmel' or 'waveform', got {input!r}")
        super().__init__(arch=arch, weights=str(weights), input=input, sample_rate=sample_rate, seconds=seconds,
                         n_fft=n_fft, hop_length=hop_length, n_mels=n_mels)
        self.arch, self.weights, self.input = arch, Path(weights), input
        self.sr, self.n_samples = sample_rate, int(seconds * sample_rate)
        self.n_fft, self.hop, self.n_mels = n_fft, hop_length, n_mels
        self.fb = mel_filterbank(sample_rate, n_fft, n_mels)
        self._digest = file_digest(self.weights)
        self._forward = None
        self._dim: int | None = None

    def identity(self) -> dict:
        return {**super().identity(), "weights": self._digest}

    def prepare(self, content) -> np.ndarray:
        y = content.astype(np.float32) if isinstance(content, np.ndarray) else decode_audio(
            content, self.sr, self.n_samples / self.sr)
        y = np.pad(y[: self.n_samples], (0, max(0, self.n_samples - len(y))))
        return y if self.input == "waveform" else log_mel(y, self.sr, self.n_fft, self.hop, self.n_mels, self.fb)

    def _load(self) -> Callable:
        if self._forward is None:
            import torch
            model = build_arch(self.arch)
            load_weights(model, self.weights)
            model.eval()
            self._forward = feature_forward(model)
            with torch.inference_mode():
                self._dim = pooled(self._forward(torch.from_numpy(self._stack([self.prepare(np.zeros(1))])))).shape[1]
        return self._forward

    def _stack(self, items: list[np.ndarray]) -> np.ndarray:
        x = np.stack(items).astype(np.float32)
        return x if self.input == "waveform" else x[:, None]  # [B, 1, n_mels, T]

    @property
    def dim(self) -> int:
        self._load()
        return int(self._dim)

    def encode(self, batch: list) -> np.ndarray:
        import torch
        forward = self._load()
        items = [b if isinstance(b, np.ndarray) and b.ndim == (1 if self.input == "waveform" else 2)
                 and (self.input != "waveform" or len(b) == self.n_samples) else self.prepare(b) for b in batch]
        with torch.inference_mode():
            return pooled(forward(torch.from_numpy(self._stack(items))))
