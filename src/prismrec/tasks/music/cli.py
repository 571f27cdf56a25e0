"""``prismrec music ...``: train, evaluate and query background-music matchers."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import List, Optional

import typer

music_app = typer.Typer(no_args_is_help=True, help="Background music for micro-videos (CMVAE and baselines).")
log = logging.getLogger("prismrec")


def register(app: typer.Typer) -> None:
    """Add the ``music`` command group to the main ``prismrec`` app."""
    app.add_typer(music_app, name="music")


def load_data(data: str):
    """A music dataset folder, or ``synthetic`` (the default planted-signal set, seed 0)."""
    from prismrec.tasks.music import load_music, make_music_synthetic
    if data == "synthetic":
        return make_music_synthetic()
    return load_music(data)


def _table(res: dict, ks) -> str:
    """Splits as rows; metrics with 4 decimals, the median rank (a rank) with at most one."""
    from prismrec.cli import format_table
    cols = [f"recall@{k}" for k in ks] + [f"ndcg@{k}" for k in ks] + ["mrr", "medr"]
    rows = [{"split": s, **{c: (f"{m[c]:.1f}".removesuffix(".0") if c == "medr" else f"{m[c]:.4f}")
                            for c in cols if c in m}} for s, m in res.items()]
    return format_table(rows, ["split", *cols])


@music_app.command("models")
def models():
    """List the music-matching models."""
    from prismrec.tasks.music import registered
    for name, cls in registered().items():
        typer.echo(f"{name:<13} {cls.description}")


@music_app.command()
def train(
    data: str = typer.Option(..., "--data", help="music dataset folder (videos.csv, tracks.csv, pairs.csv, "
                             "*.npy) or 'synthetic'"),
    model: str = typer.Option("dual-encoder", "--model", help="dual-encoder (fast), cmvae (the paper's model: "
                              "~3x the dual encoder's time per epoch, minutes per epoch on a large set with "
                              "busy cores) or pop"),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML file of training and model keys"),
    set_: List[str] = typer.Option([], "--set", help="override a key: --set epochs=20 (repeatable)"),
    out: Optional[Path] = typer.Option(None, "--out", help="bundle directory (default runs/music-<data>-<model>)"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bars"),
):
    """Train a matcher (early stopping on valid Recall@10) and write a bundle.

    The default, the dual encoder, is the fast model (2.2 s/epoch on the 20,000-video synthetic set,
    one thread); CMVAE, the paper's cross-modal VAE, took 6.3 s there and is worth it where its
    cross-generation helps (see specs/cmvae.md). Both stop early on validation.
    """
    from prismrec.cli import _collect_config, _setup_logging, run_guarded
    _setup_logging(False)
    values = run_guarded(_collect_config, config, set_)
    run_guarded(_train, data, model, values, out, quiet)


def _train(data, model, values, out, quiet):
    from prismrec.cli import run_log
    from prismrec.tasks.music import fit
    from prismrec.tasks.music.bundle import save_music_bundle
    from prismrec.tasks.music.train import split_values
    split_values(model, values)  # unknown model / key errors before loading data
    ds = load_data(data)
    out = out or Path("runs") / f"music-{Path(str(data)).name}-{model}"
    with run_log(out):  # train.log: the command line, the version, one line per epoch
        res = fit(ds, model, values, show_progress=not quiet, run_dir=out)
    save_music_bundle(out, res, ds, data_path=str(data))
    typer.echo(f"best epoch {res.best_epoch} of {len(res.history)}; {res.sec_per_epoch:.2f} s/epoch; bundle in {out}")
    typer.echo(_table({"valid": res.valid, "test": res.test}, (1, 10, 50)))


@music_app.command()
def evaluate(
    run_dir: Path = typer.Argument(..., help="music bundle directory"),
    data: Optional[str] = typer.Option(None, "--data", help="dataset (default: the one the bundle was trained on)"),
    k: List[int] = typer.Option([1, 5, 10, 20, 50], "-k", help="cut-offs (repeatable)"),
):
    """Full-ranking Recall@K, NDCG@K, MRR and MedR of a bundle on valid and test videos."""
    from prismrec.cli import _setup_logging, run_guarded
    _setup_logging(False)
    run_guarded(_evaluate, run_dir, data, sorted(set(k)))


def _evaluate(run_dir, data, ks):
    from prismrec.cli import fail
    from prismrec.tasks.music import evaluate_model
    from prismrec.tasks.music.bundle import MusicBundle
    b = MusicBundle(run_dir)
    path = data or b.config.get("data_path")
    if not path:
        fail("the bundle does not record its dataset; pass --data")
    ds = load_data(path)
    if ds.n_tracks != b.config["n_tracks"]:
        fail(f"the dataset has {ds.n_tracks} tracks, the bundle was trained on {b.config['n_tracks']}")
    typer.echo(_table(evaluate_model(b.model, ds, ("valid", "test"), tuple(ks)), ks))


@music_app.command()
def match(
    run_dir: Path = typer.Argument(..., help="music bundle directory"),
    video: Optional[str] = typer.Option(None, "--video", help="external id of a video in the bundle's data"),
    features: List[str] = typer.Option([], "--features", help="a new video's features: modality=path.npy "
                                       "(one row, or [N, d] for N videos); repeatable, any subset of modalities"),
    k: int = typer.Option(10, "-k", help="number of tracks"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
):
    """Rank background tracks for a video, by id (--video) or by its content features (--features)."""
    from prismrec.cli import run_guarded
    run_guarded(_match, run_dir, video, features, k, as_json)


def _match(run_dir, video, features, k, as_json):
    import numpy as np
    from prismrec.cli import fail
    from prismrec.errors import DataError
    from prismrec.tasks.music.bundle import MusicBundle
    if (video is None) == (not features):
        fail("give exactly one of --video ID or --features modality=path.npy")
    b = MusicBundle(run_dir)
    if video is not None:
        if video not in b.videos:   # (KeyError text would lose its closing quote in run_guarded)
            fail(f"unknown video '{video}'; the bundle knows {len(b.videos)} videos, e.g. {b.videos.external(0)}")
        ids, scores = b.match(video, k)
        rows = [{"video": video, "used_track": b.used_track(video), "tracks": ids, "scores": scores}]
    else:
        feats = {}
        for spec in features:
            m, sep, p = spec.partition("=")
            if not sep:
                fail(f"--features {spec!r} must look like modality=path.npy")
            try:
                feats[m] = np.load(p, allow_pickle=False)
            except (OSError, ValueError) as e:
                raise DataError(f"expected a plain numeric .npy array ({e})", file=p, field=m) from None
        try:
            all_ids, all_scores = b.match_features(feats, k)
        except ValueError as e:
            fail(str(e))
        rows = [{"video": f"#{i}", "tracks": t, "scores": s} for i, (t, s) in enumerate(zip(all_ids, all_scores))]
    if as_json:
        typer.echo(json.dumps(rows if len(rows) > 1 else rows[0]))
        return
    for r in rows:
        used = f" (uses {r['used_track']})" if r.get("used_track") is not None else ""
        typer.echo(f"video {r['video']}{used}:")
        for rank, (t, s) in enumerate(zip(r["tracks"], r["scores"]), 1):
            typer.echo(f"  {rank:>3}. track {t}  score {s:.4f}")


@music_app.command()
def synth(
    out: Path = typer.Option(..., "--out", help="output folder (its name is the dataset name)"),
    videos: int = typer.Option(20000, help="number of videos"),
    tracks: int = typer.Option(1000, help="number of tracks"),
    seed: int = typer.Option(0, help="random seed"),
):
    """Write a synthetic music dataset with a planted video–music relation."""
    from prismrec.cli import run_guarded
    from prismrec.tasks.music import make_music_synthetic, save_music
    ds = run_guarded(make_music_synthetic, videos, tracks, seed=seed, name=out.name)
    save_music(ds, out)
    typer.echo(f"wrote {out}: {json.dumps(ds.info())}")


@music_app.command()
def info(path: str = typer.Argument(..., help="music dataset folder")):
    """Videos, tracks, splits and modalities of a music dataset (the style of `prismrec datasets info`)."""
    from prismrec.cli import print_info, run_guarded
    ds = run_guarded(load_data, path)
    print_info(ds.info())
