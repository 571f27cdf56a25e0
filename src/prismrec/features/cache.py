"""Content-addressed feature cache: encoded rows keyed by a hash of the item's content.

Layout: ``<root>/<encoder name>-<fingerprint>/part-*.safetensors``, one part per encoded batch,
holding ``keys`` (uint8 ``[n, 16]``, blake2b-128 of the content) and ``features`` (float32
``[n, d]``), plus ``encoder.json`` describing the encoder. A part is written to a temporary name
and renamed, so a crash leaves whole parts only: a rerun finds everything encoded before the
crash and encodes the rest. Deleting any part files just makes those items be encoded again.
The fingerprint covers the encoder's name, options and weight digest, so changing any of them
never reuses stale rows.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from prismrec.features.encoders import Encoder

log = logging.getLogger("prismrec")
KEY_BYTES = 16


def content_key(content: str | bytes) -> bytes:
    """blake2b-128 digest of a text (UTF-8) or of file bytes."""
    data = content.encode("utf-8") if isinstance(content, str) else content
    return hashlib.blake2b(data, digest_size=KEY_BYTES).digest()


def file_key(path: Path, chunk: int = 1 << 20) -> bytes:
    """:func:`content_key` of a file's bytes, read in chunks."""
    h = hashlib.blake2b(digest_size=KEY_BYTES)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.digest()


class FeatureCache:
    """The cached rows of one encoder (identified by its fingerprint) under ``root``.

    Args:
        root: the cache folder (shared by encoders; each gets a subfolder).
        encoder: the encoder whose rows live here (``None``: ``root`` is that subfolder).
    """

    def __init__(self, root: str | Path, encoder: Encoder | None = None):
        # without an encoder, ``root`` is the encoder's own folder (how worker processes open it)
        self.dir = Path(root) if encoder is None else Path(root) / f"{encoder.name}-{encoder.fingerprint()}"
        self.dir.mkdir(parents=True, exist_ok=True)
        meta = self.dir / "encoder.json"
        if encoder is not None and not meta.is_file():
            _atomic_write_text(meta, json.dumps(encoder.identity(), indent=1, sort_keys=True))

    def parts(self) -> list[Path]:
        return sorted(self.dir.glob("part-*.safetensors"))

    def index(self) -> dict[bytes, tuple[Path, int]]:
        """Content key -> (part file, row). Unreadable parts are skipped with a warning (their items re-encode)."""
        idx: dict[bytes, tuple[Path, int]] = {}
        for part in self.parts():
            keys = self._read(part, "keys")
            if keys is None:
                continue
            for r, k in enumerate(keys):
                idx[k.tobytes()] = (part, r)
        return idx

    def _read(self, part: Path, name: str) -> np.ndarray | None:
        try:
            with safe_open(str(part), framework="np") as f:
                return f.get_tensor(name)
        except (SafetensorError, OSError, KeyError, ValueError) as e:
            log.warning("feature cache: ignoring unreadable part %s (%s)", part, e)
            return None

    def put(self, keys: list[bytes], features: np.ndarray) -> Path:
        """Store one batch of rows atomically; returns the part file."""
        if len(keys) != len(features):
            raise ValueError(f"{len(keys)} keys for {len(features)} feature rows")
        arr = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), KEY_BYTES)
        part = self.dir / f"part-{uuid.uuid4().hex}.safetensors"
        tmp = part.with_name("." + part.name + ".tmp")
        save_file({"keys": arr, "features": np.ascontiguousarray(features, dtype=np.float32)}, str(tmp))
        os.replace(tmp, part)
        return part

    def gather(self, wanted: dict[bytes, list[int]], out: np.ndarray) -> set[bytes]:
        """Write the cached row of each wanted key into ``out[rows]``; returns the keys found.

        Reads one part at a time, so memory holds one batch of cached rows beside ``out``.
        """
        found: set[bytes] = set()
        by_part: dict[Path, list[tuple[int, bytes]]] = {}
        for key, (part, r) in self.index().items():
            if key in wanted:
                by_part.setdefault(part, []).append((r, key))
        for part, rows in by_part.items():
            feats = self._read(part, "features")
            if feats is None:
                continue
            if feats.shape[1] != out.shape[1]:
                log.warning("feature cache: %s holds %d-d rows, expected %d; ignored", part, feats.shape[1], out.shape[1])
                continue
            for r, key in rows:
                out[wanted[key]] = feats[r]
                found.add(key)
        return found


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
