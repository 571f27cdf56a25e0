"""Loader of the music dataset layout: round trip and every bad-input case names file, line, field."""
from __future__ import annotations

import json

import numpy as np
import pytest

from prismrec.errors import DataError
from prismrec.tasks.music import load_music, make_music_synthetic


def test_round_trip(music_dir, music_small):
    ds = load_music(music_dir)
    assert ds.name == "music-small" and ds.n_videos == 1500 and ds.n_tracks == 60
    np.testing.assert_array_equal(ds.video_track, music_small.video_track)
    np.testing.assert_array_equal(ds.split, music_small.split)
    for m in ("visual", "text"):
        np.testing.assert_array_equal(ds.video_features[m], music_small.video_features[m])
    assert sorted(ds.track_features) == ["audio", "text"]
    assert ds.info()["splits"] == {"train": 1200, "valid": 150, "test": 150}
    assert ds.video_map.index("v3") == 3 and ds.track_map.external(2) == "t2"


def test_synthetic_is_deterministic_and_popularity_skewed():
    a = make_music_synthetic(500, 50, seed=3)
    b = make_music_synthetic(500, 50, seed=3)
    np.testing.assert_array_equal(a.video_track, b.video_track)
    np.testing.assert_array_equal(a.video_features["visual"], b.video_features["visual"])
    counts = np.sort(a.track_counts("train"))[::-1]
    assert counts[:5].sum() > 5 * counts.mean()


def _write(folder, videos="video_id,split\na,train\nb,valid\nc,test\nd,train\n", tracks="track_id\nx\ny\n",
           pairs="video_id,track_id\na,x\nb,y\nc,x\nd,y\n", video_feats=None, track_feats=None):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "videos.csv").write_text(videos)
    (folder / "tracks.csv").write_text(tracks)
    (folder / "pairs.csv").write_text(pairs)
    for m, f in (video_feats or {"visual": np.ones((4, 3), np.float32)}).items():
        np.save(folder / f"video_{m}.npy", f)
    for m, f in (track_feats or {"audio": np.ones((2, 2), np.float32)}).items():
        np.save(folder / f"track_{m}.npy", f)
    return folder


def test_hand_written_folder_loads(tmp_path):
    ds = load_music(_write(tmp_path / "d"))
    assert ds.video_track.tolist() == [0, 1, 0, 1] and ds.split.tolist() == [0, 1, 2, 0]


def _err(folder) -> DataError:
    with pytest.raises(DataError) as e:
        load_music(folder)
    return e.value


@pytest.mark.parametrize("kw, file, line, field, words", [
    ({"videos": "video_id,split\na,train\nb,valid\na,test\nd,train\n"}, "videos.csv", 4, "video_id", "repeats line 2"),
    ({"videos": "video_id,split\na,train\nb,valid\nc,tset\nd,train\n"}, "videos.csv", 4, "split", "tset"),
    ({"videos": "video_id,split\na,train\n ,valid\nc,test\nd,train\n"}, "videos.csv", 3, "video_id", "non-empty"),
    ({"videos": "video,split\na,train\n"}, "videos.csv", 1, "video_id", "missing column"),
    ({"pairs": "video_id,track_id\na,x\nb,zz\nc,x\nd,y\n"}, "pairs.csv", 3, "track_id", "unknown track 'zz'"),
    ({"pairs": "video_id,track_id\na,x\nb,y\nq,x\nd,y\n"}, "pairs.csv", 4, "video_id", "unknown video 'q'"),
    ({"pairs": "video_id,track_id\na,x\nb,y\nc,x\nd,y\na,y\n"}, "pairs.csv", 6, "video_id", "repeats line 2"),
    ({"pairs": "video_id,track_id\na,x\nb,y\nd,y\n"}, "pairs.csv", None, "video_id", "video 'c'"),
    ({"tracks": "track_id\nx\nx\n"}, "tracks.csv", 3, "track_id", "repeats"),
    ({"videos": "video_id,split\na,train\nb,train\nc,test\nd,train\n"}, "videos.csv", None, "split",
     "valid split is empty"),
    ({"tracks": "track_id\n"}, "tracks.csv", None, None, "no rows"),
])
def test_bad_tables(tmp_path, kw, file, line, field, words):
    e = _err(_write(tmp_path / "d", **kw))
    assert e.file.endswith(file) and e.line == line and e.field == field
    assert words in str(e)


def test_bad_features(tmp_path):
    e = _err(_write(tmp_path / "a", video_feats={"visual": np.ones((3, 3), np.float32)}))
    assert e.file.endswith("video_visual.npy") and e.field == "visual" and "expected 4 rows" in str(e)
    bad = np.ones((2, 2), np.float32)
    bad[1, 0] = np.nan
    e = _err(_write(tmp_path / "b", track_feats={"audio": bad}))
    assert e.file.endswith("track_audio.npy") and "row 1, column 0" in str(e)
    e = _err(_write(tmp_path / "c", video_feats={"visual": np.array([[{"a": 1}]] * 4, dtype=object)}))
    assert e.file.endswith("video_visual.npy") and "plain numeric" in str(e)   # pickled object arrays refused
    e = _err(_write(tmp_path / "d", video_feats={"visual": np.ones(4, np.float32)}))
    assert "2-D" in str(e)


def test_missing_pieces(tmp_path):
    assert "not found" in str(_err(tmp_path / "nope"))
    folder = _write(tmp_path / "d")
    (folder / "pairs.csv").unlink()
    e = _err(folder)
    assert e.file.endswith("pairs.csv") and "missing pair list" in str(e)
    folder = _write(tmp_path / "e")
    (folder / "track_audio.npy").unlink()
    assert "track_<modality>.npy" in str(_err(folder))
    folder = _write(tmp_path / "f")
    (folder / "meta.json").write_text("{broken")
    assert _err(folder).file.endswith("meta.json")


def test_split_column_optional(tmp_path):
    rows = "video_id\n" + "".join(f"v{i}\n" for i in range(30))
    pairs = "video_id,track_id\n" + "".join(f"v{i},{'xy'[i % 2]}\n" for i in range(30))
    folder = _write(tmp_path / "d", videos=rows, pairs=pairs,
                    video_feats={"visual": np.zeros((30, 2), np.float32)})
    a, b = load_music(folder, seed=1), load_music(folder, seed=1)
    np.testing.assert_array_equal(a.split, b.split)
    assert {0, 1, 2} <= set(a.split.tolist()) and (a.split == 0).sum() == 24


def test_meta_name(tmp_path):
    folder = _write(tmp_path / "d")
    (folder / "meta.json").write_text(json.dumps({"name": "tt"}))
    assert load_music(folder).name == "tt"
