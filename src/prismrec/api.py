"""The Python facade: ``Recommender(name, **config).fit(dataset)``, ``recommend``, ``save``, ``load``."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from prismrec.bundle import read_bundle, read_extra_json, save_bundle
from prismrec.config import resolve, to_dict
from prismrec.data.dataset import Dataset
from prismrec.errors import BundleError, DataError, PrismrecError, UnknownNameError
from prismrec.evaluation import DEFAULT_BLOCK, DEFAULT_KS, METRICS, evaluate_splits
from prismrec.models.base import Model, get_model_class
from prismrec.models.layers import building_for
from prismrec.train.trainer import FitResult, Trainer, peak_rss_mb, seed_everything

log = logging.getLogger("prismrec")
FEATURE_NORM_FILE = "feature_norm.json"  # a bundle's fitted data.transforms.FeatureNorm


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) during :meth:`Recommender.fit`, raised once the best epoch so far is kept.

    Attributes:
        recommender: the Recommender, holding the best epoch's weights (unfitted when no epoch
            finished).
        run_dir: where its bundle was written (``None``: nothing written).
        signal: the number of the signal that stopped the run (SIGINT = 2 for Ctrl-C, SIGTERM = 15).
    """

    def __init__(self, message: str, *, recommender: "Recommender", run_dir, signal: int):
        super().__init__(message)
        self.recommender, self.run_dir, self.signal = recommender, run_dir, int(signal)


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
        self.items_meta: dict | None = None  # the bundle's items_meta.json (data.items_meta), for display
        self.feature_norm = None  # the fitted data.transforms.FeatureNorm when feature_norm != "none"
        self.bundle_path: Path | None = None  # the bundle this Recommender was loaded from

    # ------------------------------------------------------------------------------------------
    def fit(self, dataset: Dataset, *, run_dir: str | Path | None = None, show_progress: bool = True,
            callback: Callable | None = None, resume: bool = False, dist=None,
            data_path: str | None = None, max_minutes: float | None = None, overwrite: bool = False,
            allow_config_change: tuple[str, ...] | list[str] = ()) -> "Recommender":
        """Train on ``dataset`` (early stopping on validation), keeping the best epoch's weights.

        With ``run_dir``, checkpoints, ``log.jsonl`` and the bundle are written there. A new run
        needs an empty (or new) ``run_dir``: ``resume=True`` continues the run in it, with the
        checkpoint's settings unless ``allow_config_change`` names the keys meant to change (e.g.
        ``("epochs",)``); ``overwrite=True`` deletes the run's files there first.
        ``max_minutes`` is a time budget for this call: training stops when it is used up and keeps
        the best epoch (``metrics["stop_reason"] == "time_budget"``).

        Raises:
            TrainingInterrupted: on Ctrl-C or SIGTERM, after the bundle of the best epoch so far was written
                (marked ``"interrupted": true`` in its ``metrics.json``); this Recommender holds it.
            PrismrecError: a non-empty ``run_dir`` without ``resume``/``overwrite``; a checkpoint of
                another model or dataset, or with other settings than allowed (``CheckpointError``).
        """
        cfg = self.train_config
        run_config = {"model": self.model_name, "plugins": list(self.plugins), "train_config": to_dict(cfg),
                      "model_config": to_dict(self.model_config),
                      "dataset": {"n_users": dataset.n_users, "n_items": dataset.n_items,
                                  "train_interactions": int(dataset.train.nnz)}}
        if run_dir is not None:
            from prismrec.train.rundir import prepare_run_dir
            prepare_run_dir(run_dir, resume=resume, overwrite=overwrite, run_config=run_config,
                            allow_config_change=allow_config_change, is_main=dist is None or dist.rank == 0)
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        rng = seed_everything(cfg.seed)
        if data_path is not None:  # read before training, so that a bad items table fails now
            from prismrec.data.items_meta import items_meta_for
            self.items_meta = items_meta_for(data_path, dataset.item_ids)
        t0 = time.perf_counter()
        if cfg.feature_norm != "none":  # once, before Model.setup: every model sees the same inputs
            from prismrec.data.transforms import normalize_dataset
            dataset, self.feature_norm = normalize_dataset(dataset, cfg.feature_norm)
        with building_for(cfg.device):  # "auto" precisions resolve for the training device
            self.model = self.model_cls(dataset, self.model_config)
        setup_seconds = time.perf_counter() - t0
        self.dataset = dataset
        trainer = Trainer(self.model, dataset, cfg, run_dir=run_dir, show_progress=show_progress,
                          callback=callback, rng=rng, dist=dist,
                          max_seconds=None if max_minutes is None else 60.0 * max_minutes)
        trainer.run_config = run_config
        self.result = trainer.fit(resume=resume)
        if trainer.best_state is not None:
            self.model.load_state_dict(trainer.best_state)
        if trainer.device.type != "cpu":  # bundles are written, and models served, from the CPU
            trainer.best_state = None
            self.model.to_device("cpu")
        r = self.result
        self.metrics = {"model": self.model_name, "plugins": list(self.plugins), "dataset": dataset.name,
                        "best_epoch": r.best_epoch, "epochs": r.epochs_run, "stopped_early": r.stopped_early,
                        "valid": r.best_valid, "test": r.best_test, "sec_per_epoch": r.sec_per_epoch,
                        "cpu_sec_per_epoch": r.cpu_sec_per_epoch,
                        "eval_seconds": r.eval_seconds, "setup_seconds": setup_seconds,
                        "peak_rss_mb": peak_rss_mb(), "data_path": data_path, "stop_reason": r.stop_reason,
                        "interrupted": r.interrupted, "device": _device_name(trainer.device)}
        if r.interrupted and r.best_epoch < 0:  # no epoch finished: nothing worth a bundle
            self.model = None
            raise TrainingInterrupted("interrupted before the first epoch finished; nothing was saved",
                                      recommender=self, run_dir=None, signal=r.stop_signal)
        if run_dir is not None and (dist is None or dist.rank == 0):
            self.save(run_dir, data_path=data_path)
        if r.interrupted:
            raise TrainingInterrupted(f"interrupted after {r.epochs_run} epoch(s); best epoch {r.best_epoch}"
                                      + (f", bundle written to {run_dir}" if run_dir is not None else ""),
                                      recommender=self, run_dir=run_dir, signal=r.stop_signal)
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

    def recommend(self, users, k: int = 10, exclude_seen: bool = True, items=None, exclude=None):
        """Top-``k`` items for one external user id or an array of them.

        Users are ranked in blocks by the evaluation's ranking (:mod:`prismrec.evaluation.ranking`),
        pruned by norm for dot-product models, so that every user of a dataset can be ranked at
        once in bounded memory.

        Args:
            users: external user id(s).
            k: list length.
            exclude_seen: drop the user's training items.
            items: restrict the candidates to these external item ids.
            exclude: more items never to recommend, a CSR ``[n_users, n_items]`` over internal
                indices (e.g. the dataset's ``valid + test`` rows, the CLI's ``--exclude all-seen``).

        Returns:
            ``(item_ids, scores)``: 1-D arrays for one user, 2-D ``[n_users, k]`` for several. Where
            fewer than ``k`` candidates are left for some user, every row is cut to the shortest.

        Raises:
            UnknownNameError: an unknown user id (the message gives examples of known ones).
        """
        model = self._require_fitted()
        ds = self.dataset
        single = np.ndim(users) == 0
        try:
            uidx = np.atleast_1d(ds.user_map.index(users)).astype(np.int64)
        except KeyError as e:
            raise UnknownNameError(f"{e.args[0]}; {unknown_hint(ds.user_ids, 'user')}") from None
        masks = [m for m in (ds.train if exclude_seen else None, exclude) if m is not None]
        cand = None if items is None else np.unique(np.atleast_1d(ds.item_map.index(items)))
        kk = max(0, min(int(k), ds.n_items if cand is None else len(cand)))
        ids, vals = _rank_with_scores(model, uidx, kk, masks, cand)
        n_ok = int((ids >= 0).sum(axis=1).min()) if len(ids) else kk
        if n_ok < kk:  # fewer than k candidates left for some user: cut every row to the shortest
            ids, vals = ids[:, :n_ok], vals[:, :n_ok]
        ext = np.asarray(ds.item_ids)[np.maximum(ids, 0)]
        return (ext[0], vals[0]) if single else (ext, vals)

    # ------------------------------------------------------------------------------------------
    def typed_config(self) -> dict[str, Any]:
        """The keys given to the constructor with their typed values (``"5"`` from the command
        line becomes ``5``): what ``config.json`` records."""
        typed = {**to_dict(self.train_config), **to_dict(self.model_config)}
        return {k: typed.get(k, v) for k, v in self.config.items()}

    def save(self, path: str | Path, data_path: str | None = None) -> Path:
        """Write the bundle (safetensors + JSON) into ``path``."""
        model = self._require_fitted()
        cfg = {"model": self.model_name, "plugins": list(self.plugins), "config": self.typed_config(),
               "model_config": to_dict(self.model_config), "train_config": to_dict(self.train_config),
               "data_path": data_path or self.metrics.get("data_path")}
        extra = {}
        if self.items_meta is not None:
            extra["items_meta.json"] = self.items_meta
        if self.feature_norm is not None and self.feature_norm.mode != "none":
            extra[FEATURE_NORM_FILE] = self.feature_norm.to_json()  # new items' raw features need it
        return save_bundle(Path(path), model=model, dataset=self.dataset, config=cfg, metrics=self.metrics or None,
                           extra_json=extra or None)

    # ------------------------------------------------------------------------------------------
    def transform_features(self, features: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """New items' raw features as the model reads them: through the fitted ``feature_norm``
        transform of training (:class:`prismrec.data.transforms.FeatureNorm`; unchanged for
        ``feature_norm=none``).

        Args:
            features: modality -> ``[n, d_m]`` raw features, every modality of the model.

        Returns:
            modality -> float32 ``[n, d_m]``, in the model's modality order.

        Raises:
            DataError: a missing or unknown modality, a wrong shape, non-finite values.
            BundleError: a loaded bundle trained with ``feature_norm=standardize`` that lacks its
                fitted transform (``feature_norm.json``, written by a prismrec from before bundles
                kept it).
        """
        self._require_fitted()
        dims = {m: int(f.shape[1]) for m, f in self.dataset.features.items()}
        missing, extra = [m for m in dims if m not in features], [m for m in features if m not in dims]
        if missing or extra:
            raise DataError(f"expected features for exactly the modalities {list(dims)}; "
                            + (f"missing {missing}" if missing else f"unknown {extra}"), field="features")
        out = {}
        for m, d in dims.items():
            f = np.array(features[m], dtype=np.float32)  # a copy: the caller's arrays stay untouched
            if f.ndim != 2 or f.shape[1] != d:
                raise DataError(f"expected [n, {d}], got {list(f.shape)}", field=f"{m} features")
            if not np.isfinite(f).all():
                raise DataError("holds NaN or infinite values", field=f"{m} features")
            out[m] = f
        mode = self.train_config.feature_norm
        if mode == "none":
            return out
        if self.feature_norm is None:
            raise BundleError(f"{(self.bundle_path or Path('.')) / FEATURE_NORM_FILE}: {self.missing_feature_norm()}")
        return self.feature_norm.apply(out)

    def missing_feature_norm(self) -> str | None:
        """Why new items' raw features cannot be transformed for this Recommender, or None: a bundle
        trained with ``feature_norm=standardize`` but written without ``feature_norm.json``."""
        mode = self.train_config.feature_norm
        if mode == "none" or self.feature_norm is not None:
            return None
        return (f"missing: this bundle was trained with feature_norm={mode} but written without its fitted "
                "transform (by a prismrec from before bundles kept it), so new items' raw "
                "features cannot be transformed like the training items'; re-create the bundle (`prismrec train "
                "--resume --out RUN ...` with the run's settings rewrites it from its checkpoint)")

    def embed_items(self, features: dict[str, np.ndarray]) -> np.ndarray:
        """Cold start: vectors of items the model never saw, from their **raw** features.

        The features go through the training's fitted ``feature_norm`` transform
        (:meth:`transform_features`) and then the model's content path (``Model.embed_items``), so
        an item gets the vector it would have had as a training item with no interactions.

        Args:
            features: modality -> ``[n, d_m]`` raw features, every modality of the model.

        Returns:
            ``[n, d]`` float32 vectors, comparable (dot product) with the model's item vectors.

        Raises:
            UnsupportedError: the model cannot embed unseen items.
            DataError, BundleError: see :meth:`transform_features`.
        """
        model = self._require_fitted()
        feats = self.transform_features(features)
        was_training = model.training
        model.eval()  # not model.scoring(): that would drop a server's prepared scoring cache
        try:
            with torch.no_grad():
                vec = model.embed_items({m: torch.from_numpy(f) for m, f in feats.items()})
        finally:
            model.train(was_training)
        return vec.detach().float().cpu().numpy()

    @classmethod
    def load(cls, path: str | Path) -> "Recommender":
        """Load a bundle written by :meth:`save` / ``prismrec train``.

        Raises:
            BundleError: naming the file, for a bundle that is incomplete, does not match its
                manifest, or whose files do not fit together (see :func:`prismrec.bundle.read_bundle`).
        """
        path = Path(path)
        cfg, ds, weights = read_bundle(path)  # verified against the manifest, shapes and ids checked
        try:
            rec = cls(cfg["model"], plugins=cfg.get("plugins", ()), **cfg.get("config", {}))
        except PrismrecError as e:  # unknown model, plug-in or key, a value of the wrong type
            raise BundleError(f"{path / 'config.json'}: {e}") from None
        torch.manual_seed(rec.train_config.seed)
        try:
            rec.model = rec.model_cls(ds, rec.model_config)
        except (PrismrecError, RuntimeError, ValueError, TypeError, KeyError, IndexError) as e:
            raise BundleError(f"{path}: model '{rec.model_name}' cannot be built from config.json and "
                              f"features.safetensors ({_first_line(e)})") from None
        try:
            missing, unexpected = rec.model.load_state_dict(weights, strict=False)
        except RuntimeError as e:  # a tensor of another shape
            raise BundleError(f"{path / 'weights.safetensors'}: does not fit model '{rec.model_name}' "
                              f"({_first_line(e)})") from None
        if unexpected or [m for m in missing if m in dict(rec.model.named_parameters())]:
            raise BundleError(f"{path / 'weights.safetensors'}: weights do not match model '{rec.model_name}' "
                              f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
        rec.dataset = ds
        rec.metrics = read_extra_json(path, "metrics.json") or {}
        rec.bundle_config = cfg
        meta = read_extra_json(path, "items_meta.json")
        if meta is not None:
            from prismrec.data.items_meta import check_items_meta
            rec.items_meta = check_items_meta(meta, str(Path(path) / "items_meta.json"))
        rec.bundle_path = path
        rec.feature_norm = _bundle_feature_norm(path, rec.train_config.feature_norm,
                                                {m: int(f.shape[1]) for m, f in ds.features.items()})
        return rec


def _bundle_feature_norm(path: Path, mode: str, modalities: dict[str, int]):
    """The fitted transform of a bundle's ``feature_norm.json``, checked against its config.

    A bundle without the file (written before bundles kept it) loads: for ``l2``, which fits
    nothing, the transform is rebuilt from the config; for ``standardize`` it is None, and
    :meth:`Recommender.transform_features` names the missing file when new items need it.
    """
    from prismrec.data.transforms import FeatureNorm
    f = path / FEATURE_NORM_FILE
    d = read_extra_json(path, FEATURE_NORM_FILE)
    if d is None:
        if mode != "none":
            log.warning("%s: no %s; new items' raw features %s", path, FEATURE_NORM_FILE,
                        "are l2-normalised as in training" if mode == "l2" else
                        "cannot be transformed (re-create the bundle to add items)")
        return FeatureNorm("l2") if mode == "l2" else None
    try:
        norm = FeatureNorm.from_json(d, modalities=modalities, file=str(f))
    except DataError as e:
        raise BundleError(str(e)) from None
    if norm.mode != mode:
        raise BundleError(f"{f}: field 'mode': expected {mode!r} (config.json's feature_norm), got {norm.mode!r}")
    return norm


def _device_name(device: torch.device) -> str:
    """``"cpu"``, or e.g. ``"cuda:0 (NVIDIA H200)"``: where a run trained (its ``metrics.json``)."""
    if device.type != "cuda":
        return str(device)
    return f"{device} ({torch.cuda.get_device_name(device)})"


def _first_line(e: BaseException) -> str:
    text = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    return (text.strip().splitlines() or [type(e).__name__])[0][:300]


def unknown_hint(ids, kind: str, n: int = 3) -> str:
    """``"the bundle knows 19445 users, e.g. 0, 1, 2"``: what to put after an unknown-id error."""
    ids = np.asarray(ids)
    return f"{len(ids)} {kind}s known, e.g. {', '.join(str(x) for x in ids[:n].tolist())}"


def _rank_with_scores(model: Model, users: np.ndarray, k: int, masks, candidates: np.ndarray | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` internal item indices ``[U, k]`` (``-1`` pads) and their scores, ranked in blocks by
    :mod:`prismrec.evaluation.ranking` (norm-pruned for dot-product models); with ``candidates``
    (internal item indices), among those items only."""
    from prismrec.evaluation.ranking import _block_coords, _ranked_blocks, _takes_out
    ids = np.full((len(users), k), -1, dtype=np.int64)
    vals = np.full((len(users), k), -np.inf, dtype=np.float32)
    if k == 0 or len(users) == 0:
        return ids, vals
    if candidates is not None:  # a restricted catalogue: score each block, keep the candidates' columns
        cand_t = torch.from_numpy(candidates)
        with model.scoring():
            for s in range(0, len(users), DEFAULT_BLOCK):
                ub = users[s:s + DEFAULT_BLOCK]
                sc = model.score(torch.from_numpy(ub)).float()
                for m in masks:
                    r, c = _block_coords(m, ub)
                    sc[torch.from_numpy(r), torch.from_numpy(c)] = -torch.inf
                top = torch.topk(sc.index_select(1, cand_t), k, dim=1)
                ok = torch.isfinite(top.values).numpy()
                ids[s:s + len(ub)] = np.where(ok, candidates[top.indices.numpy()], -1)
                vals[s:s + len(ub)] = np.where(ok, top.values.numpy(), -np.inf)
        return ids, vals
    with model.scoring():
        factors = model.scoring_factors()
        if factors is not None:  # the pruned path; scores recomputed for the k items kept
            score_fn, last = model.score, None
        else:  # any other model: keep each block's masked scores to read the kept ones from
            last = {}
            if _takes_out(model.score):  # ranking then reuses one score buffer
                def score_fn(u, out=None):
                    last["scores"] = model.score(u) if out is None else model.score(u, out=out)
                    return last["scores"]
            else:
                def score_fn(u):
                    last["scores"] = model.score(u)
                    return last["scores"]
        for s, ub, top in _ranked_blocks(score_fn, users, k, masks, DEFAULT_BLOCK):
            ids[s:s + len(ub)] = top
            t = torch.from_numpy(np.maximum(top, 0))
            if last is None:
                u_all, i_all = factors
                v = torch.einsum("bd,bkd->bk", u_all[torch.from_numpy(ub)], i_all[t])
            else:
                v = last["scores"][: len(ub)].gather(1, t)
            v = v.float().numpy()
            vals[s:s + len(ub)] = np.where(top >= 0, v, -np.inf)
    return ids, vals


def evaluate(rec: Recommender, dataset: Dataset, ks=DEFAULT_KS, splits=("valid", "test"),
             metrics=METRICS, mask_valid_in_test: bool = False, block_size: int = DEFAULT_BLOCK) -> dict[str, dict]:
    """Full-ranking metrics of a fitted :class:`Recommender` on ``dataset``'s splits."""
    model = rec._require_fitted()
    extra = {"test": dataset.valid} if mask_valid_in_test and "test" in splits else None
    with model.scoring():
        return evaluate_splits(model.score, dataset.train, {s: dataset.split(s) for s in splits}, ks=ks,
                               metrics=metrics, block_size=block_size, extra_masks=extra)
