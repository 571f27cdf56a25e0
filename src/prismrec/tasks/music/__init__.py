"""Background music for micro-videos: match a video (visual + text) to music tracks (audio + text).

Its own task beside user-item recommendation: a :class:`MusicDataset` (videos, tracks, the track
each video uses), models that embed both sides by content (``cmvae``, ``dual-encoder``, ``pop``),
retrieval metrics by full ranking over the catalogue, a training loop, bundles, a CLI
(``prismrec music ...``) and a FastAPI router (:func:`prismrec.tasks.music.serving.router`).
"""
from prismrec._lazy import lazy_getattr

# Imported on first use (PEP 562): `prismrec --help` registers `prismrec music` without torch.
_LAZY = {"MusicDataset": "data", "load_music": "data", "save_music": "data", "metrics_from_ranks": "metrics",
         "true_ranks": "metrics", "MatchModel": "model", "build": "model", "registered": "model",
         "make_music_synthetic": "synthetic", "MusicTrainConfig": "train", "evaluate_model": "train", "fit": "train"}

__all__ = ["MusicDataset", "load_music", "save_music", "make_music_synthetic", "MatchModel", "build",
           "registered", "fit", "evaluate_model", "MusicTrainConfig", "metrics_from_ranks", "true_ranks"]


__getattr__ = lazy_getattr(__name__, _LAZY, globals())
