"""Background music for micro-videos: match a video (visual + text) to music tracks (audio + text).

Its own task beside user-item recommendation: a :class:`MusicDataset` (videos, tracks, the track
each video uses), models that embed both sides by content (``cmvae``, ``dual-encoder``, ``pop``),
retrieval metrics by full ranking over the catalogue, a training loop, bundles, a CLI
(``prismrec music ...``) and a FastAPI router (:func:`prismrec.tasks.music.serving.router`).
"""
import importlib

# Imported on first use (PEP 562): `prismrec --help` registers `prismrec music` without torch.
_LAZY = {"MusicDataset": "data", "load_music": "data", "save_music": "data", "metrics_from_ranks": "metrics",
         "true_ranks": "metrics", "MatchModel": "model", "build": "model", "registered": "model",
         "make_music_synthetic": "synthetic", "MusicTrainConfig": "train", "evaluate_model": "train", "fit": "train"}

__all__ = ["MusicDataset", "load_music", "save_music", "make_music_synthetic", "MatchModel", "build",
           "registered", "fit", "evaluate_model", "MusicTrainConfig", "metrics_from_ranks", "true_ranks"]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    globals()[name] = value
    return value
