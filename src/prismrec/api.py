"""The Python facade: ``Recommender(name, **config).fit(dataset)``, ``recommend``, ``save``, ``load``."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from prismrec.bundle import read_bundle, save_bundle
from prismrec.config import resolve, to_dict
from prismrec.data.dataset import Dataset
from prismrec.errors import PrismrecError
from prismrec.evaluation import DEFAULT_BLOCK, DEFAULT_KS, METRICS, evaluate_splits
from prismrec.models.base import Model, get_model_class
from prismrec.train.trainer import FitResult, Trainer, peak_rss_mb, seed_everything

log = logging.getLogger("prismrec")


def model_class_with_plugins(name: str, plugins=()) -> type[Model]:
    """The registered model class, wrapped by each named plug-in in order."""
    cls = get_model_class(name)
    if plugins:
        from prismrec.plugins import get_plugin
        for p in plugins:
            cls = get_plugin(p)(cls)
    return cls


class Recommender:
    """A recommender you can fit, query, save and load.

    Args:
        model: registered model name (``prismrec models`` lists them).
        plugins: plug-in names applied to the model (e.g. ``("befa",)``).
        **config: training keys (``epochs``, ``learning_rate``, ...) and model keys
            (``embedding_dim``, ``reg_weight``, ...); unknown keys are errors.

    ``recommend`` takes and returns **external** ids; ``score`` takes internal indices.
    """

    def __init__(self, model: str = "lightgcn", *, plugins: tuple[str, ...] | list[str] = (), **config: Any):
        self.model_name = model.lower()
        self.plugins = tuple(plugins)
        self.config = dict(config)
        self.model_cls = model_class_with_plugins(self.model_name, self.plugins)
        self.train_config, self.model_config = resolve(self.model_cls, self.config)
        self.model: Model | None = None
        self.dataset: Dataset | None = None
        self.result: FitResult | None = None
        self.metrics: dict = {}

    # ------------------------------------------------------------------------------------------
    def fit(self, dataset: Dataset, *, run_dir: str | Path | None = None, show_progress: bool = True,
            callback: Callable | None = None, resume: bool = False, dist=None,
            data_path: str | None = None) -> "Recommender":
        """Train on ``dataset`` (early stopping on validation), keeping the best epoch's weights.

        With ``run_dir``, checkpoints, ``log.jsonl`` and the bundle are written there.
        """
        cfg = self.train_config
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        rng = seed_everything(cfg.seed)
        t0 = time.perf_counter()
        self.model = self.model_cls(dataset, self.model_config)
        setup_seconds = time.perf_counter() - t0
        self.dataset = dataset
        trainer = Trainer(self.model, dataset, cfg, run_dir=run_dir, show_progress=show_progress,
                          callback=callback, rng=rng, dist=dist)
        self.result = trainer.fit(resume=resume)
        if trainer.best_state is not None:
            self.model.load_state_dict(trainer.best_state)
        r = self.result
        self.metrics = {"model": self.model_name, "plugins": list(self.plugins), "dataset": dataset.name,
                        "best_epoch": r.best_epoch, "epochs": r.epochs_run, "stopped_early": r.stopped_early,
                        "valid": r.best_valid, "test": r.best_test, "sec_per_epoch": r.sec_per_epoch,
                        "cpu_sec_per_epoch": r.cpu_sec_per_epoch,
                        "eval_seconds": r.eval_seconds, "setup_seconds": setup_seconds,
                        "peak_rss_mb": peak_rss_mb(), "data_path": data_path}
        if run_dir is not None and (dist is None or dist.rank == 0):
            self.save(run_dir, data_path=data_path)
        return self

    def _require_fitted(self) -> Model:
        if self.model is None:
            raise PrismrecError("this Recommender is not fitted; call fit(dataset) or Recommender.load(path)")
        return self.model

    # ------------------------------------------------------------------------------------------
    def score(self, users: np.ndarray) -> np.ndarray:
        """Scores ``[len(users), n_items]`` for internal user indices."""
        model = self._require_fitted()
        with model.scoring():
            return model.score(torch.as_tensor(np.atleast_1d(users), dtype=torch.long)).numpy()

    def recommend(self, users, k: int = 10, exclude_seen: bool = True, items=None):
        """Top-``k`` items for one external user id or an array of them.

        Args:
            users: external user id(s).
            k: list length.
            exclude_seen: drop the user's training items.
            items: restrict the candidates to these external item ids.

        Returns:
            ``(item_ids, scores)``: 1-D arrays for one user, 2-D ``[n_users, k]`` for several.
        """
        model = self._require_fitted()
        ds = self.dataset
        single = np.ndim(users) == 0
        uidx = np.atleast_1d(ds.user_map.index(users))
        cand = None if items is None else np.atleast_1d(ds.item_map.index(items))
        with model.scoring():
            scores = model.score(torch.from_numpy(uidx)).clone()
        if exclude_seen:
            from prismrec.evaluation.ranking import _block_coords
            r, c = _block_coords(ds.train, uidx)
            scores[torch.from_numpy(r), torch.from_numpy(c)] = -torch.inf
        if cand is not None:
            keep = torch.full_like(scores, -torch.inf)
            keep[:, torch.from_numpy(cand)] = 0.0
            scores = scores + keep
        kk = min(k, scores.shape[1])
        top = torch.topk(scores, kk, dim=1)
        valid = torch.isfinite(top.values)
        ids = np.asarray(ds.item_ids)[top.indices.numpy()]
        vals = top.values.numpy()
        if not valid.all():  # fewer than k candidates left: drop the masked ones
            n_ok = int(valid.sum(dim=1).min())
            ids, vals = ids[:, :n_ok], vals[:, :n_ok]
        return (ids[0], vals[0]) if single else (ids, vals)

    # ------------------------------------------------------------------------------------------
    def save(self, path: str | Path, data_path: str | None = None) -> Path:
        """Write the bundle (safetensors + JSON) into ``path``."""
        model = self._require_fitted()
        cfg = {"model": self.model_name, "plugins": list(self.plugins), "config": self.config,
               "model_config": to_dict(self.model_config), "train_config": to_dict(self.train_config),
               "data_path": data_path or self.metrics.get("data_path")}
        return save_bundle(Path(path), model=model, dataset=self.dataset, config=cfg, metrics=self.metrics or None)

    @classmethod
    def load(cls, path: str | Path) -> "Recommender":
        """Load a bundle written by :meth:`save` / ``prismrec train``."""
        cfg, ds, weights = read_bundle(path)
        rec = cls(cfg["model"], plugins=cfg.get("plugins", ()), **cfg.get("config", {}))
        torch.manual_seed(rec.train_config.seed)
        rec.model = rec.model_cls(ds, rec.model_config)
        missing, unexpected = rec.model.load_state_dict(weights, strict=False)
        if unexpected or [m for m in missing if m in dict(rec.model.named_parameters())]:
            raise PrismrecError(f"{path}: weights do not match model '{rec.model_name}' "
                                f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
        rec.dataset = ds
        mfile = Path(path) / "metrics.json"
        if mfile.is_file():
            import json
            rec.metrics = json.loads(mfile.read_text())
        rec.bundle_config = cfg
        return rec


def evaluate(rec: Recommender, dataset: Dataset, ks=DEFAULT_KS, splits=("valid", "test"),
             metrics=METRICS, mask_valid_in_test: bool = False, block_size: int = DEFAULT_BLOCK) -> dict[str, dict]:
    """Full-ranking metrics of a fitted :class:`Recommender` on ``dataset``'s splits."""
    model = rec._require_fitted()
    extra = {"test": dataset.valid} if mask_valid_in_test and "test" in splits else None
    with model.scoring():
        return evaluate_splits(model.score, dataset.train, {s: dataset.split(s) for s in splits}, ks=ks,
                               metrics=metrics, block_size=block_size, extra_masks=extra)
