"""Bundles: a trained model as a directory of safetensors + JSON (never pickle), written all at once
and checked when loaded.

Layout::

    config.json              model name, model + training config, plug-ins, shapes, prismrec version
    weights.safetensors      the model's state dict (best epoch)
    features.safetensors     item modality features (the model's content path, cold start)
    interactions.safetensors training interactions (CSR): graphs, seen-item filtering
    embeddings.safetensors   final user/item embeddings (dot-product models), for fast serving
    users.json, items.json   external ids in internal order
    metrics.json             valid/test metrics at the best epoch, timings
    items_meta.json          item titles/images for display (when the dataset has an items table)
    feature_norm.json        the fitted ``feature_norm`` transform (when trained with one): the
                             features above are already transformed; new items' raw ones go
                             through it (data.transforms.FeatureNorm)
    manifest.json            written last: size and sha256 of every file above (and of the run's
                             checkpoint when there is one)

Writing (:func:`save_bundle`): every file goes into a staging folder ``.bundle.<pid>.<random>``
inside the bundle directory first. Then the old ``manifest.json`` is removed, the files are renamed
into place, and the new manifest is renamed into place last: that one rename is the commit. A
writer killed at any point leaves either the old bundle, the new one, or a folder without a
manifest, which :func:`read_bundle` refuses; the next write removes staging folders left by
writers that are gone. :func:`write_bundle` and :func:`read_manifest` hold that protocol for
other kinds of bundle too (``tasks.music.bundle``).

Reading (:func:`read_bundle`) refuses a folder without a complete manifest, verifies each file's
size and sha256 on the very bytes it then parses (about 0.15 s per 100 MB), and checks that the
files agree with each other (shapes, id counts, index ranges, finite weights): a bundle that loads
can answer every request. Loading needs neither the dataset nor the training code paths.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from safetensors.numpy import load as load_np_bytes, save_file as save_np
from safetensors.torch import load as load_pt_bytes, save_file as save_pt

from prismrec import __version__
from prismrec.data.dataset import Dataset
from prismrec.errors import BundleError
from prismrec.graphs import binary_csr

log = logging.getLogger("prismrec")
MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
REQUIRED = ("config.json", "weights.safetensors", "features.safetensors", "interactions.safetensors",
            "users.json", "items.json")
OPTIONAL = ("embeddings.safetensors", "metrics.json", "items_meta.json", "feature_norm.json")
# written from save_bundle(extra_json=...): display metadata (data.items_meta), the fitted feature transform
EXTRA_JSON = ("items_meta.json", "feature_norm.json")
FILES = REQUIRED  # kept for callers of the old name
BUNDLE_FILES = REQUIRED + OPTIONAL
CHECKPOINT_FILE = "checkpoint.safetensors"
STAGE_PREFIX = ".bundle."
PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".bin", ".ckpt")
_CHUNK = 8 << 20
_SHA256 = re.compile(r"[0-9a-f]{64}")


def write_json(path: Path, obj) -> None:
    """Write JSON atomically (temporary file + rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, default=_default))
    os.replace(tmp, path)


def _default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def sha256_file(path: Path) -> tuple[str, int]:
    """``(hex sha256, size in bytes)`` of a file, read in 8 MiB chunks."""
    h, n = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            n += len(chunk)
    return h.hexdigest(), n


def _fsync(path: Path) -> None:
    """Flush a file (or a directory's entries) to disk: a rename is durable only after both."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on directories
        pass
    finally:
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def clean_stale(path: Path) -> list[str]:
    """Remove what killed writers left in ``path``: staging folders ``.bundle.<pid>.*`` and
    temporary files ``*.tmp<pid>`` whose process is gone (and ``.bundle.*`` folders without a pid,
    left by earlier prismrec versions). Returns the names removed."""
    path = Path(path)
    removed = []
    if not path.is_dir():
        return removed
    for entry in path.iterdir():
        name = entry.name
        if name.startswith(STAGE_PREFIX) and entry.is_dir():
            pid = name[len(STAGE_PREFIX):].split(".", 1)[0]
            if pid.isdigit() and _pid_alive(int(pid)):
                continue  # another live writer's staging folder
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(name)
        elif (m := re.search(r"\.tmp(\d+)$", name)) and entry.is_file() and not _pid_alive(int(m.group(1))):
            entry.unlink(missing_ok=True)
            removed.append(name)
    if removed:
        log.info("%s: removed %d file(s) left by an interrupted write: %s", path, len(removed),
                 ", ".join(sorted(removed)[:5]))
    return removed


# ------------------------------------------------------------------------------------------------
def save_bundle(path: Path, *, model, dataset: Dataset, config: dict, metrics: dict | None = None,
                state_dict: dict | None = None, extra_json: dict | None = None) -> Path:
    """Write a bundle into ``path``, all at once (see the module docstring); other files are kept.

    Args:
        path: the bundle (run) directory; created when missing.
        model: the fitted model (its current state is saved unless ``state_dict`` is given).
        dataset: the training data (features, train interactions, id maps).
        config: JSON metadata for ``config.json`` (model name, configs, plug-ins).
        metrics: ``metrics.json`` content; ``None`` writes none.
        state_dict: weights to save instead of the model's current ones.
        extra_json: further JSON files by name (one of ``EXTRA_JSON``), listed in the manifest too.

    Returns:
        ``path``.
    """
    def write(stage: Path) -> None:
        _write_files(stage, model=model, dataset=dataset, config=config, metrics=metrics, state_dict=state_dict)
        for name, obj in (extra_json or {}).items():
            if name not in EXTRA_JSON:
                raise ValueError(f"extra bundle file must be one of {EXTRA_JSON}, got {name!r}")
            (stage / name).write_text(json.dumps(obj, indent=2, default=_default))

    return write_bundle(path, write)


def write_bundle(path: Path, write, *, files: tuple[str, ...] = BUNDLE_FILES, checkpoint: bool = True) -> Path:
    """Write the files of a bundle into ``path`` all at once: the protocol of the module docstring,
    for any kind of bundle (this module's, the music task's).

    ``write(stage)`` fills a fresh staging folder inside ``path``; then every file's size and
    sha256 go into the manifest, and :func:`_commit` makes the bundle visible with the manifest's
    rename last. An exception anywhere before that leaves ``path`` as it was (the staging folder is
    removed); one during the renames leaves a folder without a manifest, which
    :func:`read_manifest` refuses.

    Args:
        path: the bundle directory; created when missing. Files other than ``files`` are kept.
        write: ``write(stage: Path)``, writing only files named in ``files``.
        files: every file name a bundle of this kind may hold; those the new bundle lacks are
            removed from ``path``.
        checkpoint: record the run's :data:`CHECKPOINT_FILE` (when there is one) in the manifest.

    Returns:
        ``path``.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    clean_stale(path)
    stage = Path(tempfile.mkdtemp(prefix=f"{STAGE_PREFIX}{os.getpid()}.", dir=path))
    try:
        write(stage)
        entries = {}
        for f in sorted(stage.iterdir()):
            if f.name not in files:
                raise ValueError(f"{f.name!r} is not a file of this bundle (expected some of {', '.join(files)})")
            _fsync(f)
            digest, size = sha256_file(f)
            entries[f.name] = {"sha256": digest, "bytes": size}
        manifest = {"format": MANIFEST_FORMAT, "prismrec_version": __version__, "files": entries,
                    "checkpoint": _checkpoint_entry(path) if checkpoint else None}
        (stage / MANIFEST).write_text(json.dumps(manifest, indent=2))
        _fsync(stage / MANIFEST)
        _commit(path, stage, entries, files)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return path


def _write_files(stage: Path, *, model, dataset: Dataset, config: dict, metrics, state_dict) -> None:
    sd = state_dict if state_dict is not None else model.state_dict()
    _check_finite(Path("weights.safetensors"), sd)  # a bundle that could never load is not written
    save_pt({k: v.detach().cpu().contiguous() for k, v in sd.items()}, str(stage / "weights.safetensors"))
    save_np({m: np.ascontiguousarray(f) for m, f in dataset.features.items()} or {"_none": np.zeros(0)},
            str(stage / "features.safetensors"))
    tr = dataset.train
    save_np({"indptr": tr.indptr.astype(np.int64), "indices": tr.indices.astype(np.int64),
             "shape": np.array(tr.shape, np.int64)}, str(stage / "interactions.safetensors"))
    if model.is_dot_product:
        if state_dict is not None:
            current = {k: v.clone() for k, v in model.state_dict().items()}
            model.load_state_dict(state_dict)
        with model.scoring():
            u, i = model.embeddings()
            save_pt({"user": u.detach().cpu().contiguous(), "item": i.detach().cpu().contiguous()},
                    str(stage / "embeddings.safetensors"))
        if state_dict is not None:
            model.load_state_dict(current)
    meta = dict(config)
    meta.update({"prismrec_version": __version__, "n_users": dataset.n_users, "n_items": dataset.n_items,
                 "modalities": {m: int(f.shape[1]) for m, f in dataset.features.items()},
                 "dataset": dataset.name, "dot_product": model.is_dot_product})
    for name, obj in (("config.json", meta), ("users.json", dataset.user_ids.tolist()),
                      ("items.json", dataset.item_ids.tolist()), ("metrics.json", metrics)):
        if obj is not None:
            (stage / name).write_text(json.dumps(obj, indent=2, default=_default))


def _checkpoint_entry(path: Path) -> dict | None:
    """The run's checkpoint as it is now (the epoch this bundle comes from), or None."""
    ckpt = path / CHECKPOINT_FILE
    if not ckpt.is_file():
        return None
    digest, size = sha256_file(ckpt)
    return {"file": CHECKPOINT_FILE, "sha256": digest, "bytes": size}


def _commit(path: Path, stage: Path, entries: dict, files: tuple[str, ...] = BUNDLE_FILES) -> None:
    """Make the staged bundle visible: drop the old manifest (the folder stops being a bundle),
    rename the files in, drop bundle files the new bundle lacks, rename the manifest in last."""
    # No fsync inside this window (it would only widen it): should a power cut reorder these
    # renames on disk, the manifest's hashes still refuse any mix of old and new files.
    (path / MANIFEST).unlink(missing_ok=True)
    for name in entries:
        os.replace(stage / name, path / name)
    for name in files:
        if name not in entries:  # e.g. embeddings of a former dot-product model
            (path / name).unlink(missing_ok=True)
    os.replace(stage / MANIFEST, path / MANIFEST)
    _fsync(path)


# ------------------------------------------------------------------------------------------------
RECREATE = ("Re-create it: `prismrec train --resume --out {path} ...` (the same --data/--model/--set) rewrites "
            "it from the run's checkpoint without training again when the run had finished; otherwise train again")
WRITTEN_BY = "a bundle is written by `prismrec train`"


def read_manifest(path: str | Path, *, files: tuple[str, ...] = BUNDLE_FILES, required: tuple[str, ...] = REQUIRED,
                  recreate: str = RECREATE, written_by: str = WRITTEN_BY) -> dict:
    """The checked ``manifest.json`` of bundle directory ``path``.

    Args:
        path: the bundle directory.
        files, required: the file names a bundle of this kind may hold and those it must
            (this module's bundles by default).
        recreate: how to re-create a bundle without a manifest (``{path}`` is filled in).
        written_by: what writes such bundles, for a folder that is not one.

    Raises:
        BundleError: not a directory, no manifest (an interrupted write, or a bundle written
            before bundles had manifests), or a manifest that is not complete and well-formed.
    """
    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"{path}: not a bundle directory")
    for f in path.iterdir():
        if f.is_file() and f.suffix in PICKLE_SUFFIXES:
            raise BundleError(f"{f}: refusing to load pickle-based files; bundles are safetensors + JSON only")
    mfile = path / MANIFEST
    if not mfile.is_file():
        if (path / "config.json").is_file():
            raise BundleError(
                f"{path}: incomplete bundle: no {MANIFEST}, so its files cannot be verified. Either its "
                "write was interrupted or it was written by a prismrec from before bundles had manifests. "
                + recreate.format(path=path))
        raise BundleError(f"{path}: not a bundle (no {MANIFEST}); {written_by}")
    try:
        manifest = json.loads(mfile.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"{mfile}: not valid JSON ({e}); re-create the bundle") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise BundleError(f"{mfile}: expected a manifest of format {MANIFEST_FORMAT}, got {got!r}")
    listed = manifest.get("files")
    if not isinstance(listed, dict):
        raise BundleError(f"{mfile}: field 'files': expected an object of file name -> sha256 and size")
    for name, entry in listed.items():
        if name not in files:
            raise BundleError(f"{mfile}: field 'files': unexpected file {name!r}; expected only "
                              f"{', '.join(files)}")
        _check_entry(mfile, f"files.{name}", entry)
    missing = [n for n in required if n not in listed]
    if missing:
        raise BundleError(f"{mfile}: incomplete manifest: {', '.join(missing)} not listed")
    ck = manifest.get("checkpoint")
    if ck is not None:
        _check_entry(mfile, "checkpoint", ck)
    return manifest


def _check_entry(mfile: Path, where: str, entry) -> None:
    if not (isinstance(entry, dict) and isinstance(entry.get("sha256"), str) and _SHA256.fullmatch(entry["sha256"])
            and type(entry.get("bytes")) is int and entry["bytes"] >= 0):
        raise BundleError(f"{mfile}: field '{where}': expected {{\"sha256\": 64 hex digits, \"bytes\": size}}, "
                          f"got {json.dumps(entry)[:120]}")


def _read_verified(path: Path, name: str, manifest: dict) -> bytes:
    """The bytes of bundle file ``name``, checked against the manifest (size, then sha256)."""
    entry = manifest["files"][name]
    f = path / name
    try:
        data = f.read_bytes()
    except FileNotFoundError:
        raise BundleError(f"{f}: listed in {MANIFEST} but missing; re-create the bundle") from None
    except OSError as e:
        raise BundleError(f"{f}: cannot be read ({e.strerror})") from None
    if len(data) != entry["bytes"] or hashlib.sha256(data).hexdigest() != entry["sha256"]:
        what = f"size {len(data)} != {entry['bytes']}" if len(data) != entry["bytes"] else "sha256 mismatch"
        raise BundleError(f"{f}: does not match {MANIFEST} ({what}): the file was changed or corrupted after "
                          "the bundle was written; re-create the bundle")
    return data


def verify_bundle(path: str | Path, *, checkpoint: bool = False, **kind) -> dict:
    """Check every file of the bundle against its manifest (sizes and sha256) without loading it.

    Args:
        path: bundle directory.
        checkpoint: also check the run's checkpoint against the manifest's entry (it changes when
            the run is resumed, so loading a bundle never needs it).
        **kind: :func:`read_manifest`'s keywords for another kind of bundle (``files``, ...).

    Returns:
        The manifest.

    Raises:
        BundleError: naming the first file that is missing or does not match.
    """
    path = Path(path)
    manifest = read_manifest(path, **kind)
    for name, entry in manifest["files"].items():
        digest, size = _hash_or_missing(path / name)
        if (digest, size) != (entry["sha256"], entry["bytes"]):
            raise BundleError(f"{path / name}: does not match {MANIFEST}; re-create the bundle")
    ck = manifest.get("checkpoint")
    if checkpoint and ck is not None:
        digest, size = _hash_or_missing(path / CHECKPOINT_FILE)
        if (digest, size) != (ck["sha256"], ck["bytes"]):
            raise BundleError(f"{path / CHECKPOINT_FILE}: differs from the one the bundle was written with "
                              "(changed, corrupted, or the run was resumed since)")
    return manifest


def _hash_or_missing(f: Path) -> tuple[str | None, int]:
    try:
        return sha256_file(f)
    except FileNotFoundError:
        raise BundleError(f"{f}: listed in {MANIFEST} but missing; re-create the bundle") from None


def verified_json(path: Path, name: str, manifest: dict):
    """The parsed JSON of bundle file ``name``, its bytes checked against ``manifest`` first."""
    try:
        return json.loads(_read_verified(path, name, manifest).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"{path / name}: not valid JSON ({e})") from None


def verified_tensors(path: Path, name: str, manifest: dict, framework: str) -> dict:
    """The tensors (``framework`` "pt": torch, "np": numpy) of safetensors bundle file ``name``,
    its bytes checked against ``manifest`` first."""
    data = _read_verified(path, name, manifest)
    try:
        return (load_pt_bytes if framework == "pt" else load_np_bytes)(data)
    except Exception as e:  # safetensors raises its own (Rust) error type for every malformed file
        raise BundleError(f"{path / name}: not a valid safetensors file ({e})") from None


def config_field(cfg: dict, key: str, types, what: str, f: Path, default=...):
    """``cfg[key]`` (or ``default`` when given and the key is absent), checked to be of ``types``;
    otherwise a BundleError naming file ``f``, the field and what was expected (bools are not ints)."""
    v = cfg.get(key, default)
    if v is ... or not isinstance(v, types) or (isinstance(v, bool) and bool not in _as_tuple(types)):
        raise BundleError(f"{f}: field '{key}': expected {what}, got {json.dumps(v)[:80] if v is not ... else 'nothing'}")
    return v


def _as_tuple(types) -> tuple:
    return types if isinstance(types, tuple) else (types,)


def _ids(f: Path, ids, n: int, kind: str) -> np.ndarray:
    if not isinstance(ids, list) or len(ids) != n:
        got = f"{len(ids)} ids" if isinstance(ids, list) else type(ids).__name__
        raise BundleError(f"{f}: expected a list of {n} {kind} ids (config.json n_{kind}s), got {got}")
    bad = next((j for j, v in enumerate(ids) if not isinstance(v, (int, str)) or isinstance(v, bool)), None)
    if bad is not None:
        raise BundleError(f"{f}: entry {bad}: expected an int or string {kind} id, got {json.dumps(ids[bad])[:80]}")
    arr = np.asarray(ids)
    keys = arr if arr.dtype.kind in "iu" else arr.astype(str)
    if len(np.unique(keys)) != len(arr):
        raise BundleError(f"{f}: duplicate {kind} ids")
    return arr


def _check_finite(f: Path, tensors: dict, what: str = "tensor") -> None:
    for k, t in tensors.items():
        if t.dtype.is_floating_point and not bool(torch.isfinite(t).all()):
            raise BundleError(f"{f}: {what} '{k}' holds NaN or infinite values; the model cannot score with "
                              "them (re-create the bundle; if training produced them, lower learning_rate)")


def read_extra_json(path: str | Path, name: str):
    """An ``extra_json`` file of the bundle, verified against the manifest; None when it has none."""
    manifest = read_manifest(path)
    return verified_json(Path(path), name, manifest) if name in manifest["files"] else None


def read_bundle(path: str | Path) -> tuple[dict, Dataset, dict[str, torch.Tensor]]:
    """(config, train-only Dataset, state dict) of a verified bundle.

    Raises:
        BundleError: naming the file and what is wrong, for a missing or incomplete manifest, a
            file that does not match it, malformed JSON or safetensors, shapes or ids that do not
            agree with ``config.json``, out-of-range interaction indices, non-finite values.
    """
    path = Path(path)
    manifest = read_manifest(path)
    cf = path / "config.json"
    cfg = verified_json(path, "config.json", manifest)
    if not isinstance(cfg, dict):
        raise BundleError(f"{cf}: expected a JSON object, got {type(cfg).__name__}")
    config_field(cfg, "model", str, "a model name", cf)
    plugins = config_field(cfg, "plugins", list, "a list of plug-in names", cf, default=[])
    if not all(isinstance(p, str) for p in plugins):
        raise BundleError(f"{cf}: field 'plugins': expected a list of plug-in names, got {json.dumps(plugins)[:80]}")
    config_field(cfg, "config", dict, "an object of config keys", cf, default={})
    n_users = config_field(cfg, "n_users", int, "a user count", cf)
    n_items = config_field(cfg, "n_items", int, "an item count", cf)
    if n_users < 1 or n_items < 1:
        raise BundleError(f"{cf}: fields 'n_users'/'n_items': expected >= 1, got {n_users}/{n_items}")
    mods = config_field(cfg, "modalities", dict, "an object of modality -> dimension", cf, default={})
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in mods.values()):
        raise BundleError(f"{cf}: field 'modalities': expected positive integer dimensions, got {json.dumps(mods)[:80]}")
    if cfg.get("prismrec_version") != __version__:
        log.warning("bundle %s was written by prismrec %s; this is %s", path, cfg.get("prismrec_version"),
                    __version__)
    users = _ids(path / "users.json", verified_json(path, "users.json", manifest), n_users, "user")
    items = _ids(path / "items.json", verified_json(path, "items.json", manifest), n_items, "item")
    train = _interactions(path / "interactions.safetensors",
                          verified_tensors(path, "interactions.safetensors", manifest, "np"), n_users, n_items)
    ff = path / "features.safetensors"
    feats = {k: v for k, v in verified_tensors(path, "features.safetensors", manifest, "np").items() if k != "_none"}
    if set(feats) != set(mods):
        raise BundleError(f"{ff}: holds modalities {sorted(feats)}, config.json says {sorted(mods)}")
    for m, d in mods.items():
        f = feats[m]
        if f.dtype != np.float32 or f.shape != (n_items, d):
            raise BundleError(f"{ff}: modality '{m}': expected float32 [{n_items}, {d}], got {f.dtype} "
                              f"{list(f.shape)}")
        if not np.isfinite(f).all():
            raise BundleError(f"{ff}: modality '{m}' holds NaN or infinite values")
    feats = {m: feats[m] for m in mods}  # keep the training order
    if "metrics.json" in manifest["files"] and not isinstance(verified_json(path, "metrics.json", manifest), dict):
        raise BundleError(f"{path / 'metrics.json'}: expected a JSON object")
    empty = sp.csr_matrix(train.shape, dtype=np.float32)
    ds = Dataset(name=str(cfg.get("dataset", path.name)), train=train, valid=empty, test=empty, features=feats,
                 user_ids=users, item_ids=items)
    weights = verified_tensors(path, "weights.safetensors", manifest, "pt")
    _check_finite(path / "weights.safetensors", weights)
    if "embeddings.safetensors" in manifest["files"]:
        _embeddings(path, manifest, n_users, n_items)
    return cfg, ds, weights


def _interactions(f: Path, t: dict, n_users: int, n_items: int) -> sp.csr_matrix:
    """The training CSR matrix, every index checked before scipy sees it."""
    for key in ("indptr", "indices", "shape"):
        if key not in t:
            raise BundleError(f"{f}: missing array '{key}'")
        if t[key].dtype.kind not in "iu" or t[key].ndim != 1:
            raise BundleError(f"{f}: array '{key}': expected 1-D integers, got {t[key].dtype} {list(t[key].shape)}")
    shape = tuple(int(x) for x in t["shape"])
    if shape != (n_users, n_items):
        raise BundleError(f"{f}: shape {list(shape)} != [n_users, n_items] = [{n_users}, {n_items}] of config.json")
    indptr, indices = t["indptr"].astype(np.int64), t["indices"].astype(np.int64)
    if len(indptr) != n_users + 1 or indptr[0] != 0 or indptr[-1] != len(indices) or (np.diff(indptr) < 0).any():
        raise BundleError(f"{f}: array 'indptr': expected {n_users + 1} non-decreasing offsets from 0 to "
                          f"{len(indices)} (one row per user)")
    if len(indices) and (indices.min() < 0 or indices.max() >= n_items):
        bad = int(np.flatnonzero((indices < 0) | (indices >= n_items))[0])
        raise BundleError(f"{f}: array 'indices': entry {bad} is item {int(indices[bad])}, outside 0..{n_items - 1}")
    return binary_csr(sp.csr_matrix((np.ones(len(indices), np.float32), indices, indptr), shape=shape))


def _embeddings(path: Path, manifest: dict, n_users: int, n_items: int) -> tuple[torch.Tensor, torch.Tensor]:
    f = path / "embeddings.safetensors"
    t = verified_tensors(path, "embeddings.safetensors", manifest, "pt")
    if set(t) != {"user", "item"}:
        raise BundleError(f"{f}: expected tensors 'user' and 'item', got {sorted(t)}")
    u, i = t["user"], t["item"]
    if u.ndim != 2 or i.ndim != 2 or len(u) != n_users or len(i) != n_items or u.shape[1] != i.shape[1]:
        raise BundleError(f"{f}: expected user [{n_users}, d] and item [{n_items}, d], got {list(u.shape)} and "
                          f"{list(i.shape)}")
    _check_finite(f, t)
    return u, i


def read_embeddings(path: str | Path) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The verified ``(user, item)`` embeddings of a dot-product model's bundle, or None."""
    path = Path(path)
    manifest = read_manifest(path)
    if "embeddings.safetensors" not in manifest["files"]:
        return None
    cfg = verified_json(path, "config.json", manifest)
    return _embeddings(path, manifest, int(cfg["n_users"]), int(cfg["n_items"]))
