"""Batched, streaming, cached extraction of modality features from an items table.

For each modality: (1) hash every item's content (text, or the file's bytes, read in chunks) to a
cache key; (2) encode, in batches, only the keys the cache lacks — in this process, in ``workers``
processes, or, under ``torchrun``, one shard per rank — storing every batch in the cache as soon as
it is encoded; (3) assemble ``<modality>_feat.npy`` (rows in item order) from the cache into a
memory-mapped temporary file renamed into place, and write ``items.json`` (external ids in row
order) and ``extract_report.json``. Nothing holds more than one batch of media in memory.

**Skipped items.** An item whose content is missing or unreadable is skipped with a warning and
listed (item, source, reason) in the report; its feature row is the mean of the modality's
successfully encoded rows (``fill="mean"``, as MMRec's Amazon features fill items without an image)
or zeros (``fill="zeros"``). A modality in which every item failed is not written.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
import time
import uuid
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from prismrec.features.cache import FeatureCache, content_key, file_key
from prismrec.features.encoders import Encoder, get_encoder, resolve_encoder_name, torch_threads_for
from prismrec.features.items import ItemsTable, read_items

log = logging.getLogger("prismrec")
FILLS = ("mean", "zeros")
REPORT = "extract_report.json"


@dataclass
class ItemError:
    """One skipped item: its external id, its content source and why."""

    item: str
    source: str
    reason: str


@dataclass
class ModalityResult:
    """What extraction did for one modality (``n_encoded + n_cached + n_failed == n_items``)."""

    modality: str
    encoder: str
    identity: dict
    dim: int
    n_items: int
    n_encoded: int = 0
    n_cached: int = 0
    n_failed: int = 0
    fill: str = "mean"
    file: str | None = None
    seconds: float = 0.0
    encode_seconds: float = 0.0
    # CPU seconds of this process (all its threads) while encoding in it: items per CPU-second stays
    # put on a crowded machine where items/s falls (None when worker processes did the encoding)
    encode_cpu_seconds: float | None = None
    errors: list[ItemError] = field(default_factory=list)

    @property
    def items_per_s(self) -> float | None:
        """Throughput of encoding (decode + encode + cache write) over the items encoded in this run."""
        return self.n_encoded / self.encode_seconds if self.n_encoded and self.encode_seconds > 0 else None


@dataclass
class ExtractResult:
    """Per-modality results and where the files are."""

    out: Path
    items: list[str]
    modalities: dict[str, ModalityResult]
    batch_size: int | None = None

    @property
    def errors(self) -> dict[str, list[ItemError]]:
        return {m: r.errors for m, r in self.modalities.items() if r.errors}

    def summary(self) -> str:
        lines = [f"{len(self.items)} items -> {self.out}"]
        for m, r in self.modalities.items():
            rate = f", {r.items_per_s:.1f} items/s" if r.n_encoded else ""
            if r.n_encoded and r.encode_cpu_seconds:
                rate += f" ({r.n_encoded / r.encode_cpu_seconds:.1f} per CPU-second)"
            lines.append(f"  {m:<5} [{r.encoder}, {r.dim}-d] encoded {r.n_encoded}, cached {r.n_cached}, "
                         f"failed {r.n_failed}{f' (filled: {r.fill})' if r.n_failed and r.file else ''}"
                         f"{'' if r.file else ' -> NOT WRITTEN'} in {r.seconds:.1f}s{rate}")
        return "\n".join(lines)


# ---- worker side (also used in-process) -------------------------------------------------------------
_WORKER: dict[str, Any] = {}


def _worker_init(spec: tuple[str, dict], cache_dir: str, threads: int | None) -> None:
    if threads is not None:
        import torch
        torch.set_num_threads(threads)
    # the parent's cache folder itself, so that the rows land where the parent looks for them
    _WORKER.update(encoder=get_encoder(spec[0], **spec[1]), cache=FeatureCache(cache_dir))


def _worker_batch(batch: list[tuple[bytes, str]], modality: str) -> tuple[int, list[tuple[bytes, str]]]:
    return encode_batch(_WORKER["encoder"], _WORKER["cache"], batch, modality)


def encode_batch(encoder: Encoder, cache: FeatureCache, batch: list[tuple[bytes, str]],
                 modality: str) -> tuple[int, list[tuple[bytes, str]]]:
    """Prepare and encode ``(key, source)`` pairs, store the rows in ``cache``; returns (n stored, errors)."""
    keys, prepared, errors = [], [], []
    for key, src in batch:
        try:
            content = src if modality == "text" else Path(src).read_bytes()
            prepared.append(encoder.prepare(content))
            keys.append(key)
        except Exception as e:  # noqa: BLE001 - any decoding failure skips the item, reported by the caller
            errors.append((key, str(e) or type(e).__name__))
    if keys:
        feats = np.asarray(encoder.encode(prepared), dtype=np.float32)
        if feats.shape != (len(keys), encoder.dim):
            raise ValueError(f"encoder '{encoder.name}' returned {list(feats.shape)}, expected [{len(keys)}, {encoder.dim}]")
        bad = ~np.isfinite(feats).all(1)
        for r in np.flatnonzero(bad):
            errors.append((keys[r], "encoder produced NaN/inf"))
        good = np.flatnonzero(~bad)
        if len(good):
            cache.put([keys[r] for r in good], feats[good])
        return len(good), errors
    return 0, errors


# ---- the pipeline -------------------------------------------------------------------------------------
def _plan(modality: str, sources: list[str], show_progress: bool) -> tuple[list[bytes | None], dict[int, str]]:
    """Content key per item (``None`` when it has no readable content) and the reason per failed item."""
    keys: list[bytes | None] = [None] * len(sources)
    errors: dict[int, str] = {}
    for i, src in enumerate(tqdm(sources, desc=f"hash {modality}", unit="item", disable=not show_progress,
                                 leave=False)):
        if not src:
            errors[i] = f"no {modality}"
        elif modality == "text":
            keys[i] = content_key(src)
        else:
            try:
                keys[i] = file_key(Path(src))
            except FileNotFoundError:
                errors[i] = "missing file"
            except OSError as e:
                errors[i] = f"unreadable file ({e.strerror or e})"
    return keys, errors


def _encode_misses(encoder: Encoder, cache: FeatureCache, modality: str, misses: list[tuple[bytes, str]],
                   batch_size: int, workers: int, show_progress: bool) -> tuple[int, dict[bytes, str]]:
    batches = [misses[i:i + batch_size] for i in range(0, len(misses), batch_size)]
    failed: dict[bytes, str] = {}
    done = 0
    bar = tqdm(total=len(misses), desc=f"encode {modality} [{encoder.name}]", unit="item", disable=not show_progress)
    if workers <= 1 or len(batches) <= 1:
        for b in batches:
            n, errs = encode_batch(encoder, cache, b, modality)
            done += n
            failed.update(errs)
            bar.update(len(b))
    else:
        import multiprocessing as mp
        # spawn for torch encoders: a forked child of a process that already ran torch/OpenMP can
        # deadlock; numpy-only encoders fork, which starts a worker in milliseconds instead of seconds
        fork = encoder.fork_safe and sys.platform == "linux"
        init = (encoder.spec(), str(cache.dir), None if fork else torch_threads_for(workers))
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork" if fork else "spawn"),
                                 initializer=_worker_init, initargs=init) as pool:
            futures = {pool.submit(_worker_batch, b, modality): len(b) for b in batches}
            for fut in as_completed(futures):
                n, errs = fut.result()
                done += n
                failed.update(errs)
                bar.update(futures[fut])
    bar.close()
    return done, failed


def _extract_modality(table: ItemsTable, modality: str, encoder: Encoder, cache_root: Path, out: Path | None,
                      *, batch_size: int, workers: int, fill: str, show_progress: bool,
                      shard: tuple[int, int] = (0, 1)) -> ModalityResult:
    t0 = time.perf_counter()
    rank, world = shard
    sources = table.sources[modality]
    idx = np.arange(len(sources))[rank::world]
    keys_sub, errs_sub = _plan(modality, [sources[i] for i in idx], show_progress)
    keys: dict[int, bytes] = {int(i): k for i, k in zip(idx, keys_sub) if k is not None}
    item_errors: dict[int, str] = {int(idx[j]): e for j, e in errs_sub.items()}
    cache = FeatureCache(cache_root, encoder)
    cached = set(cache.index())
    misses: dict[bytes, str] = {}
    for i, k in keys.items():
        if k not in cached and k not in misses:
            misses[k] = sources[i]
    dim = encoder.dim  # loads a lazy model now, so that its load time is not counted as encoding
    t_enc, c_enc = time.perf_counter(), time.process_time()
    n_encoded, failed = _encode_misses(encoder, cache, modality, list(misses.items()), batch_size, workers,
                                       show_progress)
    enc_seconds = time.perf_counter() - t_enc
    enc_cpu = time.process_time() - c_enc if workers <= 1 else None
    for i, k in keys.items():
        if k in failed:
            item_errors[i] = failed[k]
    res = ModalityResult(modality, encoder.name, encoder.identity(), dim, len(idx), fill=fill,
                         encode_seconds=enc_seconds, encode_cpu_seconds=enc_cpu)
    res.n_encoded = sum(1 for i, k in keys.items() if k in misses and i not in item_errors)
    res.n_failed = len(item_errors)
    res.n_cached = len(idx) - res.n_encoded - res.n_failed
    if out is not None:
        _assemble(table, modality, keys, item_errors, cache, out, res)
    res.errors = [ItemError(table.ids[i], sources[i], r) for i, r in sorted(item_errors.items())]
    res.seconds = time.perf_counter() - t0
    return res


def _assemble(table: ItemsTable, modality: str, keys: dict[int, bytes], item_errors: dict[int, str],
              cache: FeatureCache, out: Path, res: ModalityResult) -> None:
    n, d = len(table.ids), res.dim
    wanted: dict[bytes, list[int]] = {}
    for i, k in keys.items():
        if i not in item_errors:
            wanted.setdefault(k, []).append(i)
    final = out / f"{modality}_feat.npy"
    tmp = out / f".{final.name}.{uuid.uuid4().hex}.tmp"
    arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, d))
    try:
        found = cache.gather(wanted, arr)
        for k, rows in wanted.items():
            if k not in found:  # vanished from the cache between encoding and assembly
                for i in rows:
                    item_errors[i] = "not in the feature cache (deleted during extraction?)"
        ok = np.ones(n, bool)
        ok[list(item_errors)] = False
        res.n_failed = len(item_errors)
        res.n_cached = n - res.n_encoded - res.n_failed
        if not ok.any():
            log.error("%s: every item failed; %s not written", modality, final.name)
            return
        if not ok.all():
            fill_row = np.zeros(d, np.float32)
            if res.fill == "mean":
                good = np.flatnonzero(ok)
                total = np.zeros(d, np.float64)
                for s in range(0, len(good), 65536):
                    total += arr[good[s:s + 65536]].sum(0, dtype=np.float64)
                fill_row = (total / len(good)).astype(np.float32)
            arr[~ok] = fill_row
        arr.flush()
        del arr
        os.replace(tmp, final)
        res.file = str(final)
    finally:
        if tmp.exists():
            tmp.unlink()


def extract(items: str | Path, out: str | Path, *, modalities: list[str] | None = None,
            encoders: dict[str, str] | None = None, encoder_options: dict[str, dict] | None = None,
            cache_dir: str | Path | None = None, use_cache: bool = True, batch_size: int = 64, workers: int = 1,
            fill: str = "mean", id_col: str | None = None, text_cols: list[str] | None = None,
            image_col: str | None = None, audio_col: str | None = None, show_progress: bool = True,
            shard: tuple[int, int] = (0, 1)) -> ExtractResult:
    """Extract ``<modality>_feat.npy`` + ``items.json`` into ``out`` from an items table.

    Args:
        items: the items table (see :mod:`prismrec.features.items`).
        out: output folder (created); readable by :func:`prismrec.data.load_generic` once an
            ``interactions.csv`` sits beside the features.
        modalities: subset of text/image/audio (default: those with a column).
        encoders: modality -> encoder name (default ``"auto"``: pretrained if installed, else fallback).
        encoder_options: modality -> keyword options of that encoder (e.g. ``{"image": {"weights": p}}``).
        cache_dir: the content-hash cache (default ``out/cache``); ``use_cache=False`` uses a
            temporary one, removed at the end.
        batch_size: items per encoder call (and per cache part); also the forward-pass batch of an
            encoder that takes a ``batch_size`` option (MiniLM) unless ``encoder_options`` sets one.
        workers: local processes encoding in parallel.
        fill: feature row of skipped items: ``"mean"`` of the encoded rows or ``"zeros"``.
        id_col, text_cols, image_col, audio_col: column names (see :func:`read_items`).
        shard: ``(rank, world_size)``: encode only items ``rank::world_size`` into the cache and write
            no output (used by :func:`extract_distributed`).

    Returns:
        An :class:`ExtractResult`; ``out/extract_report.json`` holds the same, errors included.
    """
    if fill not in FILLS:
        raise ValueError(f"fill must be one of {FILLS}, got {fill!r}")
    if batch_size < 1 or workers < 1:
        raise ValueError(f"batch_size and workers must be >= 1, got {batch_size}, {workers}")
    table = read_items(items, modalities=modalities, id_col=id_col, text_cols=text_cols, image_col=image_col,
                       audio_col=audio_col)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tmp_cache = None
    if use_cache:
        cache_root = Path(cache_dir) if cache_dir is not None else out / "cache"
    else:
        cache_root = tmp_cache = Path(tempfile.mkdtemp(prefix=".extract-cache-", dir=out))
    writing = shard[1] == 1
    results: dict[str, ModalityResult] = {}
    try:
        for m in table.sources:
            name = resolve_encoder_name(m, (encoders or {}).get(m, "auto"))
            opts = dict((encoder_options or {}).get(m, {}))
            if "batch_size" not in opts and _takes_batch_size(name):
                opts["batch_size"] = batch_size  # one batch size: the encoder's forward pass is the pipeline's batch
            encoder = get_encoder(name, m, **opts)
            log.info("%s: encoder %s", m, name)
            r = _extract_modality(table, m, encoder, cache_root, out if writing else None, batch_size=batch_size,
                                  workers=workers, fill=fill, show_progress=show_progress, shard=shard)
            results[m] = r
            _warn_errors(r)
    finally:
        if tmp_cache is not None:
            shutil.rmtree(tmp_cache, ignore_errors=True)
    result = ExtractResult(out, table.ids, results, batch_size)
    if writing:
        _write_meta(out, table, result)
        log.debug("%s", result.summary())
    return result


def _takes_batch_size(name: str) -> bool:
    import inspect
    from prismrec.features.encoders import registered_encoders
    cls = registered_encoders().get(name)
    return cls is not None and "batch_size" in inspect.signature(cls.__init__).parameters


def _warn_errors(r: ModalityResult, shown: int = 10) -> None:
    for e in r.errors[:shown]:
        log.warning("%s: skipped item '%s' (%s): %s", r.modality, e.item, e.source if r.modality != "text" else "text",
                    e.reason)
    if len(r.errors) > shown:
        log.warning("%s: ... and %d more skipped items (see %s)", r.modality, len(r.errors) - shown, REPORT)


def _atomic_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def _write_meta(out: Path, table: ItemsTable, result: ExtractResult) -> None:
    from prismrec import __version__
    ids_file = out / "items.json"
    if ids_file.is_file() and json.loads(ids_file.read_text()) != table.ids:
        stale = [f.name for f in out.glob("*_feat.npy") if f.name.rsplit("_feat", 1)[0] not in result.modalities]
        if stale:
            log.warning("items changed since %s were written; they no longer match items.json: re-extract them", stale)
    _atomic_json(ids_file, table.ids)
    report = {"prismrec_version": __version__, "items_table": str(table.path), "n_items": len(table.ids),
              "batch_size": result.batch_size,
              "skipped_item_row": "mean of the encoded rows" if any(r.fill == "mean" for r in result.modalities.values())
              else "zeros",
              "modalities": {m: {**{k: v for k, v in asdict(r).items() if k != "errors"},
                                 "columns": table.columns.get(m), "items_per_s": r.items_per_s,
                                 "errors": [asdict(e) for e in r.errors]} for m, r in result.modalities.items()}}
    _atomic_json(out / REPORT, report)


def extract_distributed(items: str | Path, out: str | Path, **kwargs) -> ExtractResult | None:
    """Sharded :func:`extract` under ``torchrun``: each rank encodes its shard into the shared cache,
    then rank 0 assembles the outputs from the cache (it encodes nothing the shards did).

    The cache folder must be reachable by every rank (a shared filesystem across machines). Uses the
    gloo backend; returns the result on rank 0 and ``None`` on the other ranks.
    """
    import torch
    import torch.distributed as dist
    own_group = not dist.is_initialized()
    if own_group:
        dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    try:
        kwargs["use_cache"] = True  # the cache is how the shards reach rank 0
        part = extract(items, out, shard=(rank, world), **kwargs)
        counts = torch.tensor([[r.n_encoded, r.n_failed] for r in part.modalities.values()], dtype=torch.long)
        times = torch.tensor([r.encode_seconds for r in part.modalities.values()], dtype=torch.float64)
        dist.all_reduce(counts)
        dist.all_reduce(times, op=dist.ReduceOp.MAX)
        dist.barrier()
        result = None
        if rank == 0:
            result = extract(items, out, shard=(0, 1), **kwargs)
            for (m, r), (enc, _), sec in zip(result.modalities.items(), counts.tolist(), times.tolist()):
                r.n_encoded, r.encode_seconds = enc, sec
                r.n_cached = r.n_items - r.n_encoded - r.n_failed
            _write_meta(Path(out), read_items(items, modalities=list(result.modalities), **{
                k: kwargs[k] for k in ("id_col", "text_cols", "image_col", "audio_col") if k in kwargs}), result)
        dist.barrier()
        return result
    finally:
        if own_group:
            dist.destroy_process_group()
