"""Fixtures of the music-matching tests: a small planted-signal dataset and its folder on disk."""
from __future__ import annotations

import pytest

from prismrec.tasks.music import make_music_synthetic, save_music


def small_music(**kw):
    kw = {"n_videos": 1500, "n_tracks": 60, "latent_dim": 6, "coupling": 0.4,
          "video_modalities": {"visual": (20, 0.3), "text": (12, 0.6)},
          "track_modalities": {"audio": (16, 0.3), "text": (8, 0.6)}, "seed": 5, "name": "music-small", **kw}
    return make_music_synthetic(**kw)


@pytest.fixture(scope="session")
def music_small():
    """1,500 videos (visual 20-d, text 12-d), 60 tracks (audio 16-d, text 8-d)."""
    return small_music()


@pytest.fixture
def music_dir(tmp_path, music_small):
    return save_music(music_small, tmp_path / "music-small")
