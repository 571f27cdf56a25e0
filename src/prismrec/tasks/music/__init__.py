"""Background music for micro-videos: match a video (visual + text) to music tracks (audio + text).

Its own task beside user-item recommendation: a :class:`MusicDataset` (videos, tracks, the track
each video uses), models that embed both sides by content (``cmvae``, ``dual-encoder``, ``pop``),
retrieval metrics by full ranking over the catalogue, a training loop, bundles, a CLI
(``prismrec music ...``) and a FastAPI router (:func:`prismrec.tasks.music.serving.router`).
"""
from prismrec.tasks.music import cmvae, dual_encoder, pop  # noqa: F401  (registers the models)
from prismrec.tasks.music.data import MusicDataset, load_music, save_music
from prismrec.tasks.music.metrics import metrics_from_ranks, true_ranks
from prismrec.tasks.music.model import MatchModel, build, registered
from prismrec.tasks.music.synthetic import make_music_synthetic
from prismrec.tasks.music.train import MusicTrainConfig, evaluate_model, fit

__all__ = ["MusicDataset", "load_music", "save_music", "make_music_synthetic", "MatchModel", "build",
           "registered", "fit", "evaluate_model", "MusicTrainConfig", "metrics_from_ranks", "true_ranks"]
