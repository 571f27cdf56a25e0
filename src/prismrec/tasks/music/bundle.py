"""Music bundles: a trained matcher as safetensors + JSON (never pickle).

Layout::

    config.json              task "music", model name, model + training config, modality dims,
                             similarity, dataset, prismrec version
    weights.safetensors      the model's state dict (best valid epoch)
    embeddings.safetensors   "video" [n_videos, K], "track" [n_tracks, K], "video_track" int64 [n_videos]
    videos.json, tracks.json external ids in internal order
    metrics.json             valid/test metrics at the best epoch, timings
    manifest.json            written last: size and sha256 of every file above
    log.jsonl                per-epoch log (when trained with a run directory; not part of the bundle)

Serving a known video needs only the embeddings; a new video is embedded by the model from its
content features. Loading needs neither the dataset nor the training code.

A music bundle is written and checked like a recommendation bundle (:mod:`prismrec.bundle`):
staged, then committed by renaming its manifest in last, so a writer that fails or is killed
leaves the old bundle or a folder that loading refuses, never a mix; loading verifies every file
against the manifest.
"""
from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from prismrec import __version__
from prismrec.bundle import config_field, read_manifest, verified_json, verified_tensors, verify_bundle, write_bundle, write_json
from prismrec.data.idmap import IdMap
from prismrec.errors import BundleError
from prismrec.tasks.music.data import MusicDataset
from prismrec.tasks.music.metrics import similarity
from prismrec.tasks.music.model import MatchModel, build
from prismrec.tasks.music.train import MusicFit, tensors

log = logging.getLogger("prismrec")
FILES = ("config.json", "weights.safetensors", "embeddings.safetensors", "videos.json", "tracks.json")
BUNDLE_FILES = FILES + ("metrics.json",)
# what read_manifest / verify_bundle check for this kind of bundle
# config.json fields a bundle needs: name -> (type, what is expected)
CONFIG_FIELDS = {"model": (str, "a model name"), "model_config": (dict, "an object of config keys"),
                 "video_dims": (dict, "an object of modality -> dimension"),
                 "track_dims": (dict, "an object of modality -> dimension"),
                 "n_tracks": (int, "a track count"), "similarity": (str, "a similarity name")}
EMBEDDINGS = ("video", "track", "video_track")
KIND = dict(files=BUNDLE_FILES, required=FILES, written_by="a music bundle is written by `prismrec music train`",
            recreate="Train it again with `prismrec music train --out {path} ...`.")


def plain_config(cfg) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()}


def save_music_bundle(path: str | Path, result: MusicFit, ds: MusicDataset, *, data_path: str | None = None) -> Path:
    """Write the fitted model of ``result`` (trained on ``ds``) as a bundle in ``path``."""
    model = result.model
    model.eval()
    with torch.no_grad():
        video_emb = model.embed_videos(tensors(ds.video_features))
        track_emb = model.embed_tracks(tensors(ds.track_features))

    def write(stage: Path) -> None:
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()} or
                  {"_none": torch.zeros(0)}, str(stage / "weights.safetensors"))
        save_file({"video": video_emb.contiguous(), "track": track_emb.contiguous(),
                   "video_track": torch.from_numpy(np.array(ds.video_track))}, str(stage / "embeddings.safetensors"))
        write_json(stage / "config.json", {
            "task": "music", "model": model.name, "model_config": plain_config(model.config),
            "train_config": plain_config(result.train_config), "video_dims": model.video_dims,
            "track_dims": model.track_dims, "n_tracks": ds.n_tracks, "n_videos": ds.n_videos,
            "similarity": model.similarity, "dataset": ds.name, "data_path": data_path,
            "prismrec_version": __version__})
        write_json(stage / "videos.json", [str(v) for v in ds.video_ids.tolist()])
        write_json(stage / "tracks.json", [str(t) for t in ds.track_ids.tolist()])
        write_json(stage / "metrics.json", result.metrics())

    return write_bundle(Path(path), write, files=BUNDLE_FILES, checkpoint=False)


def verify_music_bundle(path: str | Path) -> dict:
    """Check every file of a music bundle against its manifest without loading it; the manifest.

    Raises:
        BundleError: naming the first file that is missing or does not match.
    """
    return verify_bundle(path, **KIND)


class MusicBundle:
    """A loaded music bundle: ranks tracks for known videos (by id) or new ones (by features).

    Attributes:
        config: the bundle's ``config.json``.
        model: the matcher with its best weights, in eval mode.
        videos, tracks: :class:`~prismrec.data.idmap.IdMap` of external ids.
    """

    def __init__(self, path: str | Path):
        path = Path(path)
        manifest = read_manifest(path, **KIND)  # refuses pickle files, partial writes
        self.config = verified_json(path, "config.json", manifest)
        videos = verified_json(path, "videos.json", manifest)
        tracks = verified_json(path, "tracks.json", manifest)
        if not isinstance(self.config, dict) or self.config.get("task") != "music":
            task = self.config.get("task") if isinstance(self.config, dict) else None
            raise BundleError(f"{path}: not a music bundle (task {task!r}); train one with `prismrec music train`")
        if self.config.get("prismrec_version") != __version__:
            log.warning("bundle %s was written by prismrec %s; this is %s", path,
                        self.config.get("prismrec_version"), __version__)
        c = self.config
        try:
            for key, (types, what) in CONFIG_FIELDS.items():
                config_field(c, key, types, what, path / "config.json")
        except BundleError as e:
            raise BundleError(f"{e}; {KIND['recreate'].format(path=path)}") from None
        self.path = path
        self.model: MatchModel = build(c["model"], c["model_config"], c["video_dims"], c["track_dims"], c["n_tracks"])
        weights = {k: v for k, v in verified_tensors(path, "weights.safetensors", manifest, "pt").items()
                   if k != "_none"}
        try:
            self.model.load_state_dict(weights)
        except RuntimeError as e:  # names the missing / unexpected / mis-shaped tensors
            raise BundleError(f"{path / 'weights.safetensors'} does not fit model {c['model']!r} "
                              f"of config.json: {' '.join(str(e).split())}") from None
        self.model.eval()
        emb = verified_tensors(path, "embeddings.safetensors", manifest, "pt")
        missing = [k for k in EMBEDDINGS if k not in emb]
        if missing:
            raise BundleError(f"{path / 'embeddings.safetensors'}: missing tensor(s) {', '.join(missing)}; "
                              f"{KIND['recreate'].format(path=path)}")
        self.video_emb, self.track_emb, self.video_track = emb["video"], emb["track"], emb["video_track"]
        self.videos, self.tracks = IdMap(videos, "video"), IdMap(tracks, "track")
        if len(self.tracks) != len(self.track_emb) or len(self.videos) != len(self.video_emb):
            raise BundleError(f"{path}: id lists and embeddings disagree in length")
        self.metrics = (verified_json(path, "metrics.json", manifest) if "metrics.json" in manifest["files"]
                        else {})

    def _top(self, video_emb: torch.Tensor, k: int) -> tuple[list[list], list[list[float]]]:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        scores = similarity(video_emb, self.track_emb, self.config["similarity"])      # [N, T]
        top = torch.topk(scores, min(k, scores.shape[1]), dim=1)
        return ([self.tracks.external(row) for row in top.indices.numpy()],
                [[float(s) for s in row] for row in top.values.numpy()])

    def match(self, video, k: int = 10) -> tuple[list, list[float]]:
        """Top-``k`` track ids and scores for a known video (external id); ``KeyError`` if unknown."""
        i = self.videos.index(video)
        ids, scores = self._top(self.video_emb[i:i + 1], k)
        return ids[0], scores[0]

    @torch.no_grad()
    def match_features(self, features: dict[str, np.ndarray], k: int = 10) -> tuple[list[list], list[list[float]]]:
        """Top-``k`` tracks for new videos given by content features (any non-empty subset of modalities).

        Args:
            features: modality -> ``[N, d_m]`` (or ``[d_m]`` for one video).
        """
        feats = {m: torch.from_numpy(np.atleast_2d(np.array(f, dtype=np.float32))) for m, f in features.items()}
        return self._top(self.model.embed_videos(feats), k)

    def used_track(self, video):
        """The external id of the track a known video uses in the data the bundle was trained on."""
        return self.tracks.external(int(self.video_track[self.videos.index(video)]))


def load_music_bundle(path: str | Path) -> MusicBundle:
    return MusicBundle(path)
