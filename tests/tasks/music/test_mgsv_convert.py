"""benchmarks/mgsv_music.py: MGSV-EC's raw CSVs -> a prismrec music folder (on tiny made-up rows)."""
import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from prismrec.errors import DataError
from prismrec.tasks.music import load_music

SCRIPT = Path(__file__).resolve().parents[3] / "benchmarks" / "mgsv_music.py"


@pytest.fixture(scope="module")
def mgsv():
    spec = importlib.util.spec_from_file_location("mgsv_music", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _rows(n, start, tracks):
    rng = np.random.default_rng(start)
    music = [tracks[i % len(tracks)] for i in range(n)]
    return pd.DataFrame({
        "video_id": [str(10_000 + start + i) for i in range(n)], "music_id": music,
        "video_start": 0.0, "video_end": 20.0, "music_start": 1.0, "music_end": 21.0,
        "music_total_duration": [100.0 + int(m.split("t")[-1]) for m in music],
        "video_segment_duration": rng.uniform(5, 40, n), "music_segment_duration": 20.0,
        "music_path": [f"/Data/music/source_music/1/{m}+song {m} (DJ)" + ".mp3" for m in music],
        "video_total_duration": rng.uniform(5, 60, n), "video_width": 1080, "video_height": 1920,
        "video_total_frames": 600, "video_frame_rate": 30,
        "video_category": rng.choice(["Fashion", "Games", None], n)})


def _raw(tmp_path, test=None):
    raw = tmp_path / "raw"
    raw.mkdir()
    tracks = [f"4+t{i}" for i in range(12)]
    _rows(20, 0, tracks).to_csv(raw / "val_data.csv", index=False)
    (test if test is not None else _rows(10, 100, tracks[2:])).to_csv(raw / "test_data.csv", index=False)
    return raw


def test_convert_writes_a_music_folder(mgsv, tmp_path):
    info = mgsv.convert(_raw(tmp_path), tmp_path / "out", seed=0, text_encoder="hashing")
    assert info["split_sizes"] == {"train": 16, "valid": 4, "test": 10} and info["tracks"] == 12
    ds = load_music(tmp_path / "out")
    assert ds.name == "mgsv-ec-pairs" and ds.n_videos == 30 and ds.n_tracks == 12
    assert ds.video_features["meta"].shape == (30, 3 + 4)        # Fashion, Games, (blank) + 4 numbers
    assert set(ds.track_features) == {"meta", "text"}
    # each video's track is its own music_id, and the title reached the text features
    assert np.abs(ds.track_features["text"]).sum(1).min() > 0
    assert info["test_tracks_seen_in_train_or_valid"] == 10


def test_bad_duration_names_file_line_and_field(mgsv, tmp_path):
    bad = _rows(10, 100, ["4+t1", "4+t2"])
    bad.loc[3, "video_frame_rate"] = 0
    with pytest.raises(DataError, match=r"test_data.csv: line 5: field video_frame_rate"):
        mgsv.convert(_raw(tmp_path, bad), tmp_path / "out", text_encoder="hashing")
    assert not (tmp_path / "out").exists()                      # nothing half-written
