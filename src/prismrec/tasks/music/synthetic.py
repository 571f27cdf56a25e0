"""Synthetic music-matching data with a planted video–music relation.

Every track ``j`` has a latent "mood" ``s_j ~ N(0, I_L)`` and a popularity drawn from a Zipf law.
Each video picks its background track by popularity, and its own latent is a noisy copy of the
track's, ``z_i = s_j + coupling · ε``: what a video shows reflects the music it uses. Each modality
observes its side's latent through a fixed random non-linear map plus noise,
``x^m = tanh(z A_m) B_m + noise_m · ε``, with one video modality (``text``) noisier than the other
(``visual``) so that precision-weighted fusion has something to weigh. A content model that maps
both sides into the latent space recovers the track; popularity alone recovers only the head.
"""
from __future__ import annotations

import numpy as np

from prismrec.tasks.music.data import MusicDataset, random_split

DEFAULT_VIDEO = {"visual": (128, 0.5), "text": (48, 1.0)}   # modality -> (dim, noise std)
DEFAULT_TRACK = {"audio": (96, 0.3), "text": (32, 0.8)}


def make_music_synthetic(n_videos: int = 20000, n_tracks: int = 1000, *, latent_dim: int = 16,
                         coupling: float = 1.0, popularity: float = 0.8,
                         video_modalities: dict[str, tuple[int, float]] | None = None,
                         track_modalities: dict[str, tuple[int, float]] | None = None,
                         hidden: int = 64, seed: int = 0, name: str = "music-synth") -> MusicDataset:
    """Generate a :class:`MusicDataset` with a planted video–music relation.

    Args:
        n_videos, n_tracks: sizes; videos are split 8:1:1 at random.
        latent_dim: dimension ``L`` of the shared latent space.
        coupling: std of a video's latent around its track's (smaller = easier matching).
        popularity: Zipf exponent of track popularity (0 = uniform).
        video_modalities, track_modalities: modality -> (feature dim, noise std).
        hidden: width of the random non-linear feature maps.
        seed: the same seed gives the same dataset.
    """
    if n_tracks < 2 or n_videos < 10:
        raise ValueError(f"need at least 2 tracks and 10 videos, got {n_tracks} and {n_videos}")
    rng = np.random.default_rng(seed)
    s = rng.standard_normal((n_tracks, latent_dim))
    pop = (rng.permutation(n_tracks) + 1.0) ** -popularity
    video_track = rng.choice(n_tracks, size=n_videos, p=pop / pop.sum())
    z = s[video_track] + coupling * rng.standard_normal((n_videos, latent_dim))

    def observe(lat, spec):
        out = {}
        for m, (dim, noise) in spec.items():
            a = rng.standard_normal((latent_dim, hidden)) / np.sqrt(latent_dim)
            b = rng.standard_normal((hidden, dim)) / np.sqrt(hidden)
            x = np.tanh(lat @ a) @ b
            x = (x - x.mean(0)) / (x.std(0) + 1e-8)   # unit-scale signal, so `noise` is a noise-to-signal ratio
            out[m] = (x + noise * rng.standard_normal(x.shape)).astype(np.float32)
        return out

    vf = observe(z, DEFAULT_VIDEO if video_modalities is None else video_modalities)
    tf = observe(s, DEFAULT_TRACK if track_modalities is None else track_modalities)
    return MusicDataset(name=name, video_features=vf, track_features=tf, video_track=video_track,
                        split=random_split(n_videos, seed + 1),
                        video_ids=np.array([f"v{i}" for i in range(n_videos)]),
                        track_ids=np.array([f"t{j}" for j in range(n_tracks)]))
