#!/usr/bin/env python3
"""MGSV-EC's real short-video -> background-music pairs as a prismrec music dataset folder.

    python benchmarks/mgsv_music.py --raw ../shared/data/real/mgsv-ec-pairs/raw --out /tmp/data/mgsv-music
    python benchmarks/music.py --data /tmp/data/mgsv-music --threads 1

The raw CSVs (``val_data.csv``, ``test_data.csv``; the train file was never available here) hold one
row per Kuaishou video and the music moment it uses, and no content features: only metadata. This
script turns them into the ``prismrec.tasks.music`` layout, in a folder outside the repository (the
data is licensed for research and must not be redistributed; nothing derived from it is committed):

- videos: the 2,000 ``val_data.csv`` videos are split 1,600 train / 400 valid at random (``--seed``),
  the 2,000 ``test_data.csv`` videos are the test split; the catalogue is every music id of both files.
- ``video_meta``: one-hot category (blank is a category of its own) and the standardised log video
  duration, log used-segment duration, log aspect ratio and log frame rate.
- ``track_text``: the track title (the part of ``music_path``'s file name after the id) embedded
  with prismrec's offline sentence-transformer (all-MiniLM-L6-v2, an English model: most titles are
  Chinese, so expect little from it); ``--text-encoder hashing`` uses the weight-free hashing encoder.
- ``track_meta``: the standardised log total duration of the track.

Only a video's own fields and a track's own fields become features: the pair's fields (the music
moment's start and end) are not read, so nothing of the answer leaks into the inputs.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from prismrec.data.io import atomic_folder  # noqa: E402
from prismrec.errors import DataError  # noqa: E402
from prismrec.features.encoders import get_encoder  # noqa: E402

COLUMNS = ("video_id", "music_id", "music_path", "music_total_duration", "video_total_duration",
           "video_segment_duration", "video_width", "video_height", "video_frame_rate", "video_category")


def read_split(path: Path) -> pd.DataFrame:
    """One raw CSV, with its columns checked (a :class:`DataError` names the file and the column)."""
    if not path.is_file():
        raise DataError(f"{path}: file not found (expected MGSV-EC's raw CSV)")
    df = pd.read_csv(path, dtype={"video_id": str, "music_id": str})
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{path}: line 1: columns {missing} missing (expected MGSV-EC's header)")
    for c in COLUMNS[3:-1]:
        bad = ~(pd.to_numeric(df[c], errors="coerce") > 0)
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(f"{path}: line {row + 2}: field {c}: expected a positive number, got {df[c].iloc[row]!r}")
    return df


def title(music_path: str, music_id: str) -> str:
    """The track title: the file name without its extension and the ``<id>+`` prefix."""
    stem = Path(str(music_path)).stem
    return stem[len(music_id) + 1:] if stem.startswith(music_id + "+") else stem


def standardise(x: np.ndarray) -> np.ndarray:
    return ((x - x.mean(0)) / np.where(x.std(0) > 0, x.std(0), 1.0)).astype(np.float32)


def convert(raw: Path, out: Path, seed: int = 0, text_encoder: str = "sentence-transformer") -> dict:
    val, test = read_split(raw / "val_data.csv"), read_split(raw / "test_data.csv")
    videos = pd.concat([val, test], ignore_index=True)
    if videos.video_id.duplicated().any():
        raise DataError(f"{raw}: video {videos.video_id[videos.video_id.duplicated()].iloc[0]} appears twice")
    split = np.full(len(videos), 2)
    split[: len(val)] = np.where(np.random.default_rng(seed).permutation(len(val)) < int(0.8 * len(val)), 0, 1)
    tracks = videos.drop_duplicates("music_id").sort_values("music_id").reset_index(drop=True)
    durations = videos.groupby("music_id").music_total_duration.nunique()
    if (durations > 1).any():
        raise DataError(f"{raw}: music id {durations.index[durations > 1][0]} has two different "
                        "music_total_duration values (expected one per track)")

    cats = videos.video_category.fillna("(blank)").astype(str)
    names = sorted(cats.unique())
    onehot = (cats.to_numpy()[:, None] == np.array(names)[None, :]).astype(np.float32)
    numeric = np.log(np.stack([videos.video_total_duration, videos.video_segment_duration,
                               videos.video_width / videos.video_height, videos.video_frame_rate], 1).astype(np.float64))
    video_meta = np.concatenate([onehot, standardise(numeric)], 1)
    titles = [title(p, m) for p, m in zip(tracks.music_path, tracks.music_id)]
    enc = get_encoder(text_encoder, "text")
    track_text = enc.encode([enc.prepare(t) for t in titles]).astype(np.float32)
    track_meta = standardise(np.log(tracks.music_total_duration.to_numpy(np.float64))[:, None])

    with atomic_folder(out) as tmp:
        pd.DataFrame({"video_id": videos.video_id, "split": np.array(["train", "valid", "test"])[split]}).to_csv(
            tmp / "videos.csv", index=False)
        pd.DataFrame({"track_id": tracks.music_id}).to_csv(tmp / "tracks.csv", index=False)
        pd.DataFrame({"video_id": videos.video_id, "track_id": videos.music_id}).to_csv(tmp / "pairs.csv", index=False)
        np.save(tmp / "video_meta.npy", video_meta)
        np.save(tmp / "track_text.npy", track_text)
        np.save(tmp / "track_meta.npy", track_meta)
        info = {"name": "mgsv-ec-pairs", "source": str(raw), "seed": seed, "text_encoder": text_encoder,
                "videos": len(videos), "tracks": len(tracks), "categories": names,
                "split_sizes": {s: int((split == i).sum()) for i, s in enumerate(("train", "valid", "test"))},
                "test_tracks_seen_in_train_or_valid": int(test.music_id.isin(val.music_id).sum())}
        (tmp / "meta.json").write_text(json.dumps(info, indent=1, ensure_ascii=False) + "\n")
    return info


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--raw", required=True, help="MGSV-EC's raw folder (val_data.csv, test_data.csv)")
    ap.add_argument("--out", required=True, help="music dataset folder to write (outside the repository)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the train/valid split of val_data.csv")
    ap.add_argument("--text-encoder", default="sentence-transformer", help="title encoder: sentence-transformer or hashing")
    args = ap.parse_args(argv)
    try:
        info = convert(Path(args.raw), Path(args.out), args.seed, args.text_encoder)
    except DataError as e:
        sys.exit(f"error: {e}")
    print(json.dumps({k: v for k, v in info.items() if k != "categories"}, ensure_ascii=False))


if __name__ == "__main__":
    main()
