"""Micro-video datasets (MMGCN / MetaMMF style): interaction arrays plus visual, acoustic and
textual item feature arrays, and a synthetic generator whose modalities differ in usefulness per item.

On-disk layout (one folder; its name is the dataset name)::

    train.npy | train.json     training interactions (required)
    val.npy   | val.json       validation interactions (required)
    test.npy  | test.json      test interactions (required)
    v_feat.npy                 visual features   float [n_items, d_v]  -> modality "visual"
    a_feat.npy                 acoustic features float [n_items, d_a]  -> modality "acoustic"
    t_feat.npy                 textual features  float [n_items, d_t]  -> modality "textual"

- ``<split>.npy``: a plain (not pickled) integer array ``[n, 2]`` of ``(user, item)`` rows with
  0-based ids. MMGCN's own arrays store items offset by the number of users: pass
  ``item_offset=n_users`` to subtract it (from every split). (MMGCN's ragged ``val``/``test`` lists are pickled
  object arrays, which are never loaded; convert them to pairs or to JSON.)
- ``<split>.json``: an object mapping a user id (a string of an integer) to a list of item ids,
  ``{"0": [3, 17], "1": [5]}``.
- At least one feature file; all of them have one row per item. ``n_items`` is their row count
  (items may have no interactions), ``n_users`` is the largest user id + 1.

Every error names the file, the row (``.npy``: 0-based row, reported as ``line`` = row + 1) or
the user key (``.json``), the field and what was expected.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from prismrec.data.dataset import Dataset
from prismrec.data.io import atomic_folder
from prismrec.data.split import per_user_split
from prismrec.data.synthetic import synth_interactions
from prismrec.data.validate import check_features, check_id_bound, dedupe, id_bound
from prismrec.errors import DataError

SPLITS = ("train", "val", "test")
FEATURE_FILES = {"v_feat.npy": "visual", "a_feat.npy": "acoustic", "t_feat.npy": "textual"}


def is_microvideo(folder: str | Path) -> bool:
    """Whether ``folder`` looks like a micro-video dataset (has ``train.npy`` or ``train.json``)."""
    folder = Path(folder)
    return folder.is_dir() and any((folder / f"train.{ext}").is_file() for ext in ("npy", "json"))


def _split_file(folder: Path, split: str) -> Path:
    found = [folder / f"{split}.{ext}" for ext in ("npy", "json") if (folder / f"{split}.{ext}").is_file()]
    if not found:
        raise DataError(f"missing {split} interactions: expected {split}.npy ((user, item) pairs) or "
                        f"{split}.json (user -> items)", file=str(folder))
    if len(found) > 1:
        raise DataError(f"both {split}.npy and {split}.json exist; keep one", file=str(folder))
    return found[0]


def _read_pairs_npy(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as e:
        raise DataError(f"expected a plain integer .npy array of (user, item) rows, not a pickled object "
                        f"array ({e})", file=str(path)) from None
    except OSError as e:
        raise DataError(f"not a readable .npy file ({e})", file=str(path)) from None
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise DataError(f"expected an array of shape [n, 2] (user, item), got shape {list(arr.shape)}",
                        file=str(path))
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise DataError(f"expected integer ids, got dtype {arr.dtype}", file=str(path))
    if not np.issubdtype(arr.dtype, np.integer):
        bad = ~np.isfinite(arr) | (arr != np.round(arr))
        if bad.any():
            r, c = map(int, np.argwhere(bad)[0])
            raise DataError(f"expected an integer id, got {arr[r, c].item()!r}", file=str(path), line=r + 1,
                            field=("user", "item")[c])
    arr = arr.astype(np.int64)
    return arr[:, 0], arr[:, 1]


def _read_pairs_json(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"not valid JSON ({e.msg})", file=str(path), line=e.lineno) from None
    if not isinstance(data, dict):
        raise DataError(f"expected an object mapping user id -> list of item ids, got {type(data).__name__}",
                        file=str(path))
    users, items = [], []
    for key, vals in data.items():
        try:
            u = int(key)
        except ValueError:
            raise DataError(f"expected an integer user id as key, got {key!r}", file=str(path),
                            field="user") from None
        if not isinstance(vals, list):
            raise DataError(f"expected a list of item ids for user {key!r}, got {type(vals).__name__}",
                            file=str(path), field="item")
        for j, v in enumerate(vals):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v != int(v):
                raise DataError(f"expected an integer item id at position {j} of user {key!r}, got {v!r}",
                                file=str(path), field="item")
        users.append(np.full(len(vals), u, np.int64))
        items.append(np.asarray(vals, dtype=np.int64))
    if not users:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return np.concatenate(users), np.concatenate(items)


def _check_range(users, items, n_items, path: Path, is_json: bool):
    for ids, name, hi in ((users, "user", None), (items, "item", n_items)):
        bad = ids < 0 if hi is None else (ids < 0) | (ids >= hi)
        if bad.any():
            r = int(np.flatnonzero(bad)[0])
            want = "a non-negative id" if hi is None else f"an id in [0, {hi}) (one row per item in the features)"
            where = {"field": name} if is_json else {"line": r + 1, "field": name}
            extra = f" (user {users[r]})" if is_json else ""
            raise DataError(f"expected {want}, got {int(ids[r])}{extra}", file=str(path), **where)


def load_microvideo(folder: str | Path, modalities: list[str] | None = None, item_offset: int = 0) -> Dataset:
    """Load a micro-video folder (layout in the module docstring).

    Args:
        folder: the dataset folder; its name is the dataset name.
        modalities: load only these of ``visual``, ``acoustic``, ``textual`` (default: all present).
        item_offset: subtracted from every item id (MMGCN's ``train.npy`` uses ``n_users``).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError("missing dataset folder: not found or not a directory", file=str(folder))
    wanted = set(FEATURE_FILES.values()) if modalities is None else set(modalities)
    unknown = wanted - set(FEATURE_FILES.values())
    if unknown:
        raise DataError(f"unknown modality {sorted(unknown)}; micro-video modalities are visual (v_feat.npy), "
                        "acoustic (a_feat.npy), textual (t_feat.npy)", file=str(folder))
    raw = {}
    for fname, m in FEATURE_FILES.items():
        path = folder / fname
        if m in wanted and path.is_file():
            try:
                raw[m] = (path, np.load(path, allow_pickle=False))
            except (ValueError, OSError) as e:
                raise DataError(f"expected a plain numeric .npy array ({e})", file=str(path), field=m) from None
    if not raw:
        raise DataError("missing item features: expected at least one of v_feat.npy, a_feat.npy, t_feat.npy",
                        file=str(folder))
    if modalities is not None and wanted - set(raw):
        missing = sorted(wanted - set(raw))
        raise DataError(f"missing feature file(s) for modality {missing}", file=str(folder))
    first_path, first = next(iter(raw.values()))
    if first.ndim != 2:
        raise DataError(f"expected a 2-D array [items, dim], got shape {list(first.shape)}", file=str(first_path))
    n_items = first.shape[0]
    features = {m: check_features(a, n_items, p, m) for m, (p, a) in raw.items()}

    pairs = []
    for split in SPLITS:
        path = _split_file(folder, split)
        is_json = path.suffix == ".json"
        users, items = (_read_pairs_json if is_json else _read_pairs_npy)(path)
        items = items - item_offset
        _check_range(users, items, n_items, path, is_json)
        if len(users) == 0:
            raise DataError(f"the {split} split is empty; every split needs at least one interaction",
                            file=str(path))
        pairs.append((path, users, items))
    n_rows = sum(len(u) for _, u, _ in pairs)
    bound = id_bound(n_rows)  # user ids are row indices: check them before allocating
    for path, users, _ in pairs:
        if path.suffix == ".npy":
            check_id_bound(users, path, "user", header_lines=0, limit=bound)
        elif int(users.max()) >= bound:
            raise DataError(f"user id {int(users.max()):,} would make {int(users.max()) + 1:,} users, more than "
                            f"max(1000, 10 x {n_rows:,} interactions) = {bound:,} (ids are 0-based row indices); "
                            "remap the user ids to 0..n-1", file=str(path), field="user")
    n_users = int(max(u.max() for _, u, _ in pairs)) + 1
    mats = []
    for path, users, items in pairs:
        users, items = dedupe(users, items, path)
        mats.append(sp.csr_matrix((np.ones(len(users), np.float32), (users, items)), shape=(n_users, n_items)))
    return Dataset(name=folder.name, train=mats[0], valid=mats[1], test=mats[2], features=features)


# ---------------------------------------------------------------------------------------------
# synthetic micro-video data
# ---------------------------------------------------------------------------------------------
DEFAULT_DIMS = {"visual": 64, "acoustic": 32, "textual": 48}


def make_microvideo(n_users: int = 2000, n_items: int = 1000, interactions_per_user: float = 15.0, *,
                    dims: dict[str, int] | None = None, noise_fraction: float = 0.3, noise_scale: float = 1.0,
                    noisy_modalities: list[str] | None = None, noise_kind: str = "gaussian", n_reused: int = 3,
                    latent_dim: int = 8, private_dim: int = 4, beta: float = 2.0, feature_noise: float = 0.1,
                    popularity: float = 0.5, seed: int = 0,
                    name: str = "microvideo-synth") -> tuple[Dataset, dict[str, np.ndarray]]:
    """Synthetic micro-video data where each modality's usefulness differs per item.

    Items have a latent ``z_i = [c_i ; q_i^{(1)} ; ... ; q_i^{(M)}]``; users pick items with
    probability ``∝ exp(beta · p_u·z_i)`` times a popularity prior. Modality ``m`` is a low-rank
    map of the shared part ``c_i`` and its own private part ``q_i^{(m)}`` plus a little noise, so
    every modality carries information the others lack, except
    that for a known subset of items one modality is **noise**: ``noise_fraction`` of the
    items are split evenly between the ``noisy_modalities`` (default: all), and for the items
    assigned to modality ``m`` the ``m`` features say nothing about the item:

    - ``noise_kind="gaussian"``: Gaussian noise with ``noise_scale`` times the per-dimension
      standard deviation of the clean ones (at 1, nothing but their lack of structure tells
      them apart).
    - ``noise_kind="reused"`` (reused background music): exact copies of the ``m`` features of
      ``n_reused`` clean source items (the "trending tracks"), each noisy item copying one of
      them at random. The copy points to a real but wrong region of preference space
      (misleading), is shared by many items (it cannot act as an item ID), and contradicts the
      item's other modalities (the only thing that tells it apart). ``noise_scale`` is unused.

    A static fusion must trust a modality equally for every item; an item-specific one
    (MetaMMF) could ignore it where it is noise.

    Args:
        n_users, n_items, interactions_per_user: size.
        dims: modality -> feature dimension (default visual 64, acoustic 32, textual 48).
        noise_fraction: share of items with one noise modality.
        noise_scale: standard deviation of Gaussian noise relative to the clean features'.
        noisy_modalities: the modalities that are noise for some items (default: every one).
        noise_kind: ``"gaussian"`` or ``"reused"`` (copies of a few clean items' features).
        n_reused: number of source items (tracks) the ``"reused"`` noise copies, per modality.
        latent_dim: dimension of the shared latent part.
        private_dim: dimension of each modality's private latent part.
        beta: strength of the preference signal.
        feature_noise: standard deviation of the noise on clean features (signal ~unit scale).
        popularity: Zipf exponent of item popularity.
        seed: random seed.

    Returns:
        ``(dataset, noise_items)`` with ``noise_items[m]`` the sorted item indices whose ``m``
        features are noise (one entry per noisy modality).
    """
    dims = dict(DEFAULT_DIMS if dims is None else dims)
    if not 0 <= noise_fraction < 1:
        raise ValueError(f"noise_fraction must be in [0, 1), got {noise_fraction}")
    if noise_kind not in ("gaussian", "reused"):
        raise ValueError(f"noise_kind must be 'gaussian' or 'reused', got {noise_kind!r}")
    # the generator's one "latent" modality with zero noise is z_i through a random square map
    total = latent_dim + private_dim * len(dims)
    users, items, lat = synth_interactions(n_users, n_items, interactions_per_user,
                                           modalities={"latent": total}, latent_dim=total, beta=beta,
                                           noise=0.0, popularity=popularity, seed=seed)
    z = lat["latent"]
    z = (z - z.mean(0)) / z.std(0)
    rng = np.random.default_rng(seed + 7)
    noisy = rng.permutation(n_items)[: int(round(noise_fraction * n_items))]
    noisy_modalities = list(dims) if noisy_modalities is None else list(noisy_modalities)
    if not set(noisy_modalities) <= set(dims):
        raise ValueError(f"noisy_modalities {noisy_modalities} must be among {list(dims)}")
    groups = dict(zip(noisy_modalities, np.array_split(noisy, len(noisy_modalities))))
    if noise_kind == "reused":
        clean = np.setdiff1d(np.arange(n_items), noisy)
        if not 1 <= n_reused <= len(clean):
            raise ValueError(f"n_reused must be in [1, {len(clean)}] (the clean items), got {n_reused}")
    features, noise_items = {}, {}
    for j, (m, d) in enumerate(dims.items()):
        group = groups.get(m, np.empty(0, np.int64))
        private = latent_dim + j * private_dim
        zm = np.concatenate([z[:, :latent_dim], z[:, private:private + private_dim]], axis=1)
        a = rng.standard_normal((zm.shape[1], d)).astype(np.float32) / np.sqrt(zm.shape[1])
        f = zm @ a + feature_noise * rng.standard_normal((n_items, d))
        if noise_kind == "gaussian":
            std = f.std(axis=0, keepdims=True)
            f[group] = rng.standard_normal((len(group), d)) * (noise_scale * std) + f.mean(axis=0, keepdims=True)
        elif len(group):  # copies of a few clean items' features ("trending tracks")
            sources = rng.choice(clean, n_reused, replace=False)
            f[group] = f[sources[rng.integers(n_reused, size=len(group))]]
        features[m] = f.astype(np.float32)
        if m in groups:
            noise_items[m] = np.sort(group)
    labels = per_user_split(users, np.random.default_rng(seed + 1).random(len(users)))
    mats = [sp.csr_matrix((np.ones(int((labels == c).sum()), np.float32), (users[labels == c], items[labels == c])),
                          shape=(n_users, n_items)) for c in (0, 1, 2)]
    return Dataset(name=name, train=mats[0], valid=mats[1], test=mats[2], features=features), noise_items


def save_microvideo(dataset: Dataset, folder: str | Path, noise_items: dict[str, np.ndarray] | None = None) -> Path:
    """Write ``dataset`` in the micro-video layout (``.npy`` pairs), atomically.

    Modalities named visual/acoustic/textual go to ``v_feat``/``a_feat``/``t_feat.npy``; other
    names are an error. ``noise_items`` (from :func:`make_microvideo`) is written to
    ``noise_items.json``, which the loader ignores.
    """
    names = {v: k for k, v in FEATURE_FILES.items()}
    bad = [m for m in dataset.features if m not in names]
    if bad:
        raise ValueError(f"micro-video modalities are visual, acoustic, textual; got {bad}")
    folder = Path(folder)
    with atomic_folder(folder) as tmp:
        for split, key in zip(SPLITS, ("train", "valid", "test")):
            coo = dataset.split(key).tocoo()
            np.save(tmp / f"{split}.npy", np.stack([coo.row, coo.col], axis=1).astype(np.int64))
        for m, f in dataset.features.items():
            np.save(tmp / names[m], f)
        if noise_items is not None:
            (tmp / "noise_items.json").write_text(json.dumps({m: v.tolist() for m, v in noise_items.items()}))
    return folder
