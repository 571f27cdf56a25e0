"""The music-matching dataset: micro-videos, music tracks, and the track each video uses.

On-disk layout of a music dataset folder (npy / JSON / CSV only, never pickle)::

    videos.csv              columns: video_id, [split]      one row per video
    tracks.csv              column:  track_id               one row per track (the catalogue)
    pairs.csv               columns: video_id, track_id     the background track of each video,
                                                            exactly one row per video
    video_<modality>.npy    float [n_videos, d]             rows in videos.csv order (e.g. video_visual.npy,
                                                            video_text.npy); at least one file
    track_<modality>.npy    float [n_tracks, d]             rows in tracks.csv order (e.g. track_audio.npy,
                                                            track_text.npy); at least one file
    meta.json               optional: {"name": ...}

``split`` holds ``train``/``valid``/``test`` (or 0/1/2). Without the column, videos are split at
random 8:1:1 with ``seed``. The track catalogue is shared by all splits; ids are strings of any
form (compared as text). Every problem is a :class:`~prismrec.errors.DataError` naming the file, the
line (header = line 1), the field and what was expected.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from prismrec.data.idmap import IdMap
from prismrec.data.io import atomic_folder
from prismrec.data.validate import check_features, require_columns, require_file
from prismrec.errors import DataError

SPLITS = ("train", "valid", "test")
SPLIT_CODES = {"0": 0, "1": 1, "2": 2, "train": 0, "valid": 1, "validation": 1, "test": 2}


@dataclass(frozen=True, eq=False)
class MusicDataset:
    """Videos (with content features) matched to tracks (with content features).

    Args:
        name: dataset name.
        video_features: modality -> float32 ``[n_videos, d_m]`` (e.g. ``visual``, ``text``).
        track_features: modality -> float32 ``[n_tracks, d_m]`` (e.g. ``audio``, ``text``).
        video_track: int64 ``[n_videos]``, internal index of each video's background track.
        split: int64 ``[n_videos]``, 0 train, 1 valid, 2 test.
        video_ids, track_ids: external ids in internal order (default ``0..n-1``).
    """

    name: str
    video_features: dict[str, np.ndarray]
    track_features: dict[str, np.ndarray]
    video_track: np.ndarray
    split: np.ndarray
    video_ids: np.ndarray | None = None
    track_ids: np.ndarray | None = None

    def __post_init__(self):
        if not self.video_features or not self.track_features:
            raise DataError("a music dataset needs at least one video modality and one track modality")
        vf = {m: _frozen(f, m, "video") for m, f in self.video_features.items()}
        tf = {m: _frozen(f, m, "track") for m, f in self.track_features.items()}
        nv = {f.shape[0] for f in vf.values()}
        nt = {f.shape[0] for f in tf.values()}
        if len(nv) != 1 or len(nt) != 1:
            raise DataError(f"video feature rows {sorted(nv)} / track feature rows {sorted(nt)} disagree; "
                            "every modality needs one row per video (track)")
        n_videos, n_tracks = nv.pop(), nt.pop()
        vt = np.asarray(self.video_track, dtype=np.int64)
        sp = np.asarray(self.split, dtype=np.int64)
        if vt.shape != (n_videos,) or sp.shape != (n_videos,):
            raise DataError(f"video_track and split must have shape [{n_videos}], got "
                            f"{list(vt.shape)} and {list(sp.shape)}")
        if len(vt) and (vt.min() < 0 or vt.max() >= n_tracks):
            raise DataError(f"video_track holds indices outside 0..{n_tracks - 1}")
        if not np.isin(sp, (0, 1, 2)).all():
            raise DataError("split holds codes other than 0 (train), 1 (valid), 2 (test)")
        vid = np.arange(n_videos) if self.video_ids is None else np.asarray(self.video_ids)
        tid = np.arange(n_tracks) if self.track_ids is None else np.asarray(self.track_ids)
        if len(vid) != n_videos or len(tid) != n_tracks:
            raise DataError("id lists do not match the number of feature rows")
        for a in (vt, sp):
            a.setflags(write=False)
        for k, v in (("video_features", vf), ("track_features", tf), ("video_track", vt), ("split", sp),
                     ("video_ids", vid), ("track_ids", tid)):
            object.__setattr__(self, k, v)

    @property
    def n_videos(self) -> int:
        return len(self.video_track)

    @property
    def n_tracks(self) -> int:
        return len(self.track_ids)

    @property
    def video_modalities(self) -> list[str]:
        return list(self.video_features)

    @property
    def track_modalities(self) -> list[str]:
        return list(self.track_features)

    def videos(self, split: str) -> np.ndarray:
        """Internal indices of the videos of ``split`` ('train', 'valid' or 'test')."""
        if split not in SPLITS:
            raise ValueError(f"unknown split '{split}'; expected train, valid or test")
        return np.flatnonzero(self.split == SPLITS.index(split))

    @cached_property
    def video_map(self) -> IdMap:
        return IdMap(self.video_ids, "video")

    @cached_property
    def track_map(self) -> IdMap:
        return IdMap(self.track_ids, "track")

    def track_counts(self, split: str = "train") -> np.ndarray:
        """How many videos of ``split`` use each track: int64 ``[n_tracks]``."""
        return np.bincount(self.video_track[self.videos(split)], minlength=self.n_tracks)

    def info(self) -> dict:
        """Sizes, per-split video counts, modalities and how concentrated track use is."""
        counts = self.track_counts("train")
        top = np.sort(counts)[::-1][: max(1, self.n_tracks // 100)]
        return {"name": self.name, "videos": self.n_videos, "tracks": self.n_tracks,
                "splits": {s: int(len(self.videos(s))) for s in SPLITS},
                "video_modalities": {m: int(f.shape[1]) for m, f in self.video_features.items()},
                "track_modalities": {m: int(f.shape[1]) for m, f in self.track_features.items()},
                "train_share_of_top1pct_tracks": float(top.sum() / max(1, counts.sum()))}


def _frozen(f: np.ndarray, m: str, side: str) -> np.ndarray:
    f = np.ascontiguousarray(f, dtype=np.float32)
    if f.ndim != 2:
        raise DataError(f"expected a 2-D array [{side}s, dim], got shape {list(f.shape)}", field=f"{side} {m}")
    f.setflags(write=False)
    return f


# ------------------------------------------------------------------------------------------------
def _read_csv(path: Path, what: str, columns: list[str]) -> pd.DataFrame:
    path = require_file(path, what)
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise DataError(f"not a valid CSV file with a header row ({e})", file=str(path)) from None
    df.columns = [c.strip() for c in df.columns]
    require_columns(df, columns, path)
    if len(df) == 0:
        raise DataError(f"no rows (only a header); expected one row per {what.split()[0]}", file=str(path))
    return df


def _ids(df: pd.DataFrame, col: str, path: Path) -> np.ndarray:
    """Stripped id strings of ``col``; an empty or repeated id is reported by line."""
    ids = df[col].str.strip().to_numpy(dtype=object)
    empty = ids == ""
    if empty.any():
        r = int(np.flatnonzero(empty)[0])
        raise DataError("expected a non-empty id", file=str(path), line=r + 2, field=col)
    return ids


def _unique(ids: np.ndarray, path: Path, col: str, what: str) -> None:
    _, first, inv = np.unique(ids.astype(str), return_index=True, return_inverse=True)
    if len(first) != len(ids):
        dup = np.flatnonzero(first[inv] != np.arange(len(ids)))[0]
        raise DataError(f"{what} id {ids[dup]!r} repeats line {first[inv[dup]] + 2}; expected each "
                        f"{what} once", file=str(path), line=int(dup) + 2, field=col)


def _lookup(values: np.ndarray, known: np.ndarray, kind: str, path: Path, col: str, known_file: str) -> np.ndarray:
    """Row index in ``known`` of each of ``values``; an unknown id is reported by line."""
    out = pd.Index(known.astype(str)).get_indexer(values.astype(str)).astype(np.int64)
    if (out < 0).any():
        r = int(np.flatnonzero(out < 0)[0])
        raise DataError(f"unknown {kind} {values[r]!r}; expected an id listed in {known_file}",
                        file=str(path), line=r + 2, field=col)
    return out


def _features(folder: Path, prefix: str, n_rows: int) -> dict[str, np.ndarray]:
    feats = {}
    for f in sorted(folder.glob(f"{prefix}_*.npy")):
        m = f.name[len(prefix) + 1: -len(".npy")]
        try:
            arr = np.load(f, allow_pickle=False)
        except ValueError as e:
            raise DataError(f"expected a plain numeric .npy array ({e})", file=str(f), field=m) from None
        feats[m] = check_features(arr, n_rows, f, m)
    if not feats:
        raise DataError(f"missing {prefix} features: expected at least one {prefix}_<modality>.npy "
                        f"(e.g. {prefix}_{'visual' if prefix == 'video' else 'audio'}.npy)", file=str(folder))
    return feats


def load_music(folder: str | Path, *, seed: int = 0) -> MusicDataset:
    """Load a music dataset folder (layout in the module docstring), validating everything.

    Args:
        folder: the dataset folder; its name is the dataset name unless ``meta.json`` gives one.
        seed: seed of the random 8:1:1 video split when ``videos.csv`` has no ``split`` column.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError("missing music dataset folder: not found or not a directory", file=str(folder))
    vpath, tpath, ppath = folder / "videos.csv", folder / "tracks.csv", folder / "pairs.csv"
    vdf = _read_csv(vpath, "video list", ["video_id"])
    tdf = _read_csv(tpath, "track list", ["track_id"])
    pdf = _read_csv(ppath, "pair list", ["video_id", "track_id"])
    video_ids, track_ids = _ids(vdf, "video_id", vpath), _ids(tdf, "track_id", tpath)
    _unique(video_ids, vpath, "video_id", "video")
    _unique(track_ids, tpath, "track_id", "track")
    pv = _lookup(_ids(pdf, "video_id", ppath), video_ids, "video", ppath, "video_id", "videos.csv")
    pt = _lookup(_ids(pdf, "track_id", ppath), track_ids, "track", ppath, "track_id", "tracks.csv")
    _unique(pv, ppath, "video_id", "pair's video")
    missing = np.setdiff1d(np.arange(len(video_ids)), pv)
    if len(missing):
        raise DataError(f"video {video_ids[missing[0]]!r} (videos.csv line {missing[0] + 2}) has no track; "
                        f"expected exactly one pair per video ({len(missing)} videos lack one)",
                        file=str(ppath), field="video_id")
    video_track = np.empty(len(video_ids), np.int64)
    video_track[pv] = pt

    if "split" in vdf.columns:
        raw = vdf["split"].str.strip().str.lower()
        codes = raw.map(SPLIT_CODES)
        if codes.isna().any():
            r = int(np.flatnonzero(codes.isna().to_numpy())[0])
            raise DataError(f"expected train, valid or test (or 0/1/2), got {vdf['split'].iloc[r]!r}",
                            file=str(vpath), line=r + 2, field="split")
        split = codes.to_numpy().astype(np.int64)
    else:
        split = random_split(len(video_ids), seed)
    for code, name in enumerate(SPLITS):
        if not (split == code).any():
            raise DataError(f"the {name} split is empty; every split needs at least one video",
                            file=str(vpath), field="split")
    name = folder.name
    if (folder / "meta.json").is_file():
        try:
            name = json.loads((folder / "meta.json").read_text()).get("name", name)
        except (json.JSONDecodeError, AttributeError) as e:
            raise DataError(f"expected a JSON object ({e})", file=str(folder / "meta.json")) from None
    return MusicDataset(name=str(name), video_features=_features(folder, "video", len(video_ids)),
                        track_features=_features(folder, "track", len(track_ids)), video_track=video_track,
                        split=split, video_ids=video_ids.astype(str), track_ids=track_ids.astype(str))


def random_split(n: int, seed: int, fractions=(0.8, 0.1, 0.1)) -> np.ndarray:
    """0/1/2 codes for ``n`` videos, shuffled with ``seed`` in the given proportions (each split >= 1)."""
    rng = np.random.default_rng(seed)
    n_valid = max(1, int(round(fractions[1] * n)))
    n_test = max(1, int(round(fractions[2] * n)))
    codes = np.zeros(n, np.int64)
    perm = rng.permutation(n)
    codes[perm[:n_valid]] = 1
    codes[perm[n_valid:n_valid + n_test]] = 2
    return codes


def save_music(ds: MusicDataset, folder: str | Path) -> Path:
    """Write ``ds`` in the on-disk layout, atomically (temporary folder renamed into place)."""
    folder = Path(folder)
    with atomic_folder(folder) as tmp:
        pd.DataFrame({"video_id": ds.video_ids, "split": np.asarray(SPLITS)[ds.split]}).to_csv(
            tmp / "videos.csv", index=False)
        pd.DataFrame({"track_id": ds.track_ids}).to_csv(tmp / "tracks.csv", index=False)
        pd.DataFrame({"video_id": ds.video_ids, "track_id": ds.track_ids[ds.video_track]}).to_csv(
            tmp / "pairs.csv", index=False)
        for side, feats in (("video", ds.video_features), ("track", ds.track_features)):
            for m, f in feats.items():
                np.save(tmp / f"{side}_{m}.npy", f)
        (tmp / "meta.json").write_text(json.dumps({"name": ds.name}))
    return folder
