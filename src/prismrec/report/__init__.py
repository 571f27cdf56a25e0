"""One self-contained HTML report of one run or a comparison of runs.

``build_report([run_dir, ...], out)`` reads each run directory written by ``prismrec train``
(``metrics.json``, ``config.json``, ``log.jsonl`` and the bundle) and writes one HTML file with
inline CSS and base64 PNGs (matplotlib): a metrics table, training curves (one loss panel per
objective, i.e. per model and plug-ins, and the validation metric each run early-stopped on, with
the most-popular baseline as a reference line), per-modality training signals when a run logs
them, and modality attribution plots (:mod:`prismrec.explain`) for models that read features.
A folder of runs (``prismrec compare --out``) stands for the runs in it. Sections with nothing
to show are left out.
"""
from __future__ import annotations

import base64
import html
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from prismrec import __version__
from prismrec.errors import PrismrecError
from prismrec.report import plots

log = logging.getLogger("prismrec")
KNOWN_LOG_KEYS = {"epoch", "loss", "train_seconds", "eval_seconds", "valid", "test", "lr", "best_epoch"}
TABLE_METRICS = ("recall@10", "recall@20", "ndcg@10", "ndcg@20")


@dataclass
class Run:
    """What the report reads from one run directory."""

    path: Path
    label: str
    config: dict
    metrics: dict
    history: list[dict]
    modalities: list[str] = field(default_factory=list)

    @property
    def model(self) -> str:
        return self.config.get("model", self.metrics.get("model", "?"))

    @property
    def objective(self) -> str:
        """What the training loss measures: the model with its plug-ins (their losses differ)."""
        plugins = self.config.get("plugins") or self.metrics.get("plugins") or []
        return self.model + "".join("+" + p for p in plugins)

    @property
    def valid_metric(self) -> str:
        """The metric early stopping selected on (``valid_metric`` of the run's config)."""
        return (self.config.get("train_config") or {}).get("valid_metric") or "recall@20"


def _is_run(path: Path) -> bool:
    return (path / "metrics.json").is_file() or (path / "log.jsonl").is_file()


def expand_run_dirs(paths) -> list[Path]:
    """Run directories of ``paths``: a run stands for itself, a folder of runs (``prismrec compare
    --out``) for the runs directly inside it, in name order (the comparison's order when it has a
    ``comparison.json``)."""
    out = []
    for p in map(Path, paths):
        if p.is_dir() and not _is_run(p):
            subs = sorted(d for d in p.iterdir() if d.is_dir() and _is_run(d))
            order = _comparison_order(p)
            if order:
                subs.sort(key=lambda d: order.index(d.name) if d.name in order else len(order))
            if subs:
                out.extend(subs)
                continue
        out.append(p)
    return out


def _comparison_order(folder: Path) -> list[str]:
    try:
        rows = json.loads((folder / "comparison.json").read_text())
        return [str(r["model"]) for r in rows if isinstance(r, dict) and "model" in r]
    except (OSError, ValueError, TypeError):
        return []


def load_run(path: str | Path) -> Run:
    """Read a run directory (a bundle plus ``log.jsonl``); a clear error when it is not one."""
    path = Path(path)
    if not path.is_dir():
        raise PrismrecError(f"{path}: not a run directory (expected the --out folder of `prismrec train`)")
    if not _is_run(path):
        raise PrismrecError(f"{path}: neither metrics.json nor log.jsonl found, and no run folder inside it; "
                            "is this a run directory?")
    read = lambda f: json.loads((path / f).read_text()) if (path / f).is_file() else {}
    config, metrics = read("config.json"), read("metrics.json")
    history = []
    if (path / "log.jsonl").is_file():
        for n, line in enumerate((path / "log.jsonl").read_text().splitlines(), 1):
            if line.strip():
                try:
                    history.append(json.loads(line))
                except json.JSONDecodeError:
                    log.warning("%s line %d: not JSON, skipped", path / "log.jsonl", n)
    plugins = config.get("plugins") or metrics.get("plugins") or []
    label = path.name
    name = config.get("model", metrics.get("model", "?")) + "".join("+" + p for p in plugins)
    if name not in label:
        label = f"{label} ({name})"
    return Run(path, label, config, metrics, history, list(config.get("modalities", {})))


def modality_signals(run: Run) -> dict[str, dict[str, list[float]]]:
    """Log fields that hold one number per modality per epoch (e.g. ERL's modality signal)."""
    out: dict[str, dict[str, list[float]]] = {}
    keys = {k for r in run.history for k, v in r.items() if k not in KNOWN_LOG_KEYS and isinstance(v, dict)}
    for key in sorted(keys):
        vals = [r.get(key) or {} for r in run.history]
        mods = sorted({m for v in vals for m, x in v.items() if isinstance(x, (int, float))})
        if mods and (not run.modalities or set(mods) <= set(run.modalities) | {"fused", "id", "all"}):
            out[key] = {m: [float(v.get(m, np.nan)) for v in vals] for m in mods}
    return out


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _fmt(v) -> str:
    if isinstance(v, float):
        return "–" if not np.isfinite(v) else (f"{v:.4f}" if abs(v) < 100 else f"{v:.1f}")
    return html.escape(str(v))


def _shared_metric(runs: list[Run]) -> str | None:
    metrics = {r.valid_metric for r in runs}
    return metrics.pop() if len(metrics) == 1 else None


def metrics_table(runs: list[Run]) -> str:
    """HTML table: one row per run; the best value of each metric column in bold. The validation
    column holds the metric each run early-stopped on."""
    shared = _shared_metric(runs)
    valid_col = f"valid {shared}" if shared else "valid (its valid_metric)"
    cols = ["run", "dataset", "best epoch", "epochs", "s/epoch", valid_col, *[f"test {m}" for m in TABLE_METRICS]]
    rows = []
    for r in runs:
        m = r.metrics
        epochs = m.get("epochs", len(r.history))
        if m.get("stop_reason") in ("interrupted", "time_budget"):
            epochs = f"{epochs} ({'interrupted' if m['stop_reason'] == 'interrupted' else 'time budget'})"
        value = float(m.get("valid", {}).get(r.valid_metric, np.nan))
        rows.append({"run": r.label, "dataset": m.get("dataset", r.config.get("dataset", "?")),
                     "best epoch": m.get("best_epoch", "?"), "epochs": epochs,
                     "s/epoch": float(m.get("sec_per_epoch", np.nan)),
                     valid_col: value if shared else f"{r.valid_metric} {_fmt(value)}",
                     **{f"test {k}": float(m.get("test", {}).get(k, np.nan)) for k in TABLE_METRICS}})
    best = {c: np.nanmax([row[c] for row in rows]) for c in cols[5:]
            if len(rows) > 1 and all(isinstance(row[c], float) for row in rows)
            and any(np.isfinite(row[c]) for row in rows)}
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = []
    for row in rows:
        cells = []
        for c in cols:
            txt = _fmt(row[c])
            cells.append(f"<td><b>{txt}</b></td>" if c in best and row[c] == best[c] else f"<td>{txt}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table class="metrics"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _curves(runs: list[Run], references: dict[str, float] | None = None) -> bytes | None:
    data = []
    for r in runs:
        metric = r.valid_metric
        hist = [h for h in r.history if metric in h.get("valid", {})]
        if hist:
            data.append({"label": r.label, "epochs": [h["epoch"] for h in hist], "objective": r.objective,
                         "loss": [h.get("loss", np.nan) for h in hist], "valid": [h["valid"][metric] for h in hist],
                         "best_epoch": r.metrics.get("best_epoch"), "metric": metric})
    if not data:
        return None
    return plots.training_curves(data, _shared_metric(runs) or "validation metric (each run's own)",
                                 references=references)


def popularity_references(runs: list[Run]) -> dict[str, float]:
    """``{label: value}`` of the most-popular baseline on each run's validation metric: from a
    ``pop`` run among ``runs``, else computed on the run's dataset (``data_path`` in its config)
    when that can be read; a run whose dataset cannot be read gets none."""
    out: dict[str, float] = {}
    metric = _shared_metric(runs)
    if metric is None:  # one reference line would not fit every run's curve
        return out
    pops = [r for r in runs if r.model == "pop" and metric in r.metrics.get("valid", {})]
    if pops:
        return {"most popular": float(pops[0].metrics["valid"][metric])}
    paths = {r.config.get("data_path") for r in runs if r.model != "pop"}
    if len(paths) != 1 or None in paths:
        return out
    path = paths.pop()
    try:
        from prismrec.data import load_dataset
        from prismrec.evaluation import evaluate_splits
        import torch
        ds = load_dataset(path)
        counts = torch.from_numpy(np.asarray(ds.train.sum(axis=0)).ravel().astype(np.float32))
        res = evaluate_splits(lambda u: counts.expand(len(u), -1).clone(), ds.train, {"valid": ds.valid},
                              ks=(int(metric.split("@")[1]),))
        out["most popular"] = float(res["valid"][metric])
    except Exception as e:  # a moved or unreadable dataset: the report goes on without the line
        log.info("no most-popular reference line: %s: %s", path, e)
    return out


def _attribution(run: Run, users: int, dim_users: int, k: int) -> tuple[list[str], str]:
    """(figures as <img> tags, note) for one run's bundle."""
    from prismrec import Recommender
    from prismrec import explain as ex
    try:
        rec = Recommender.load(run.path)
    except Exception as e:  # a log-only folder or an unreadable bundle: report the rest
        return [], f"no attribution: the bundle could not be loaded ({e})"
    model = rec.model
    figs = []
    signal = getattr(model, "modality_signal", None)
    if not model.modalities:
        return figs, f"no attribution: model '{model.name}' reads no modality features (ID only)"
    summary = ex.dominance(model, rec.dataset.train, k=k, max_users=users)
    figs.append(_img(plots.modality_shares(run.label, summary), f"modality attribution of {run.label}"))
    note = (f"Contributions by {'the model’s exact additive split' if summary['method'] == 'model' else 'occlusion (score drop when a modality’s features are zeroed)'}; "
            "“id” is the rest of the score (behaviour/ID part).")
    if dim_users > 0:
        rng = np.random.default_rng(0)
        active = np.flatnonzero(np.diff(rec.dataset.train.indptr) > 0)
        us = np.sort(rng.choice(active, size=min(dim_users, len(active)), replace=False))
        top = ex.recommend_internal(model, rec.dataset.train, us, min(k, 5))
        pu, pi = ex.recommended_pairs(us, top)
        fa = ex.feature_attributions(model, pu, pi)
        if any(np.abs(a).sum() > 0 for a in fa.values()):
            figs.append(_img(plots.feature_dimensions(f"{run.label}: feature dimensions behind {len(pi)} "
                                                      f"recommendations ({len(us)} users × top {top.shape[1]})", fa),
                             f"feature-dimension attribution of {run.label}"))
        else:
            note += " The score has no gradient path to the raw features, so there is no per-dimension plot."
    if callable(signal):
        try:
            sig = signal()
            if isinstance(sig, dict) and sig:
                note += " Model modality signal: " + ", ".join(f"{html.escape(str(m))} {_fmt(float(np.mean(v)))}"
                                                                for m, v in sig.items()) + "."
        except Exception as e:  # optional hook; never fatal for the report
            log.warning("modality_signal() of %s failed: %s", run.label, e)
    return figs, note


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
main{max-width:1150px;margin:0 auto;padding:24px 28px 48px;background:#fff;min-height:100vh;box-shadow:0 0 12px #0001}
h1{font-size:26px;margin:4px 0 2px} h2{font-size:19px;margin:32px 0 10px;border-bottom:2px solid #e3e6eb;padding-bottom:4px}
h3{font-size:15px;margin:20px 0 6px} .sub{color:#5b6475;font-size:13px;margin-bottom:18px}
table{border-collapse:collapse;font-size:13px;margin:8px 0} th,td{padding:6px 10px;border-bottom:1px solid #e3e6eb;text-align:right}
th{background:#eef1f5;font-weight:600} td:first-child,th:first-child{text-align:left} tbody tr:nth-child(even){background:#fafbfc}
figure{margin:10px 0 18px} figure img{max-width:100%;height:auto;border:1px solid #e3e6eb;border-radius:4px}
figcaption,.note{color:#5b6475;font-size:12.5px;margin-top:4px} code{background:#eef1f5;padding:1px 4px;border-radius:3px}
ul.runs{font-size:13px;color:#39414f;padding-left:20px}
"""


def build_report(run_dirs, out: str | Path | None = None, *, attribution: bool = True, attribution_users: int = 300,
                 dimension_users: int = 6, k: int = 10, title: str | None = None) -> Path:
    """Write the HTML report of ``run_dirs`` and return its path.

    Args:
        run_dirs: run directories (``prismrec train --out``) or bundles.
        out: the HTML file (default ``<run>/report.html`` for one run, ``report.html`` for several).
        attribution: load each bundle and plot modality attribution.
        attribution_users: users sampled for the aggregate modality shares.
        dimension_users: users whose top-5 lists are attributed to feature dimensions (one backward each).
        k: list length for the aggregate shares.
        title: page title.
    """
    runs = [load_run(p) for p in expand_run_dirs(run_dirs)]
    if not runs:
        raise PrismrecError("no run directories given")
    out = Path(out) if out else (runs[0].path / "report.html" if len(runs) == 1 else Path("report.html"))
    title = title or ("prismrec report: " + ", ".join(r.label for r in runs))
    shared = _shared_metric(runs)
    metric_text = f"validation {shared}" if shared else "validation metric of each run (its valid_metric)"
    parts = [f"<h1>{html.escape(title)}</h1>",
             f'<div class="sub">generated {time.strftime("%Y-%m-%d %H:%M")} by prismrec {__version__}</div>',
             '<ul class="runs">' + "".join(f"<li><code>{html.escape(str(r.path))}</code>: {html.escape(r.model)}"
                                          f"{html.escape(''.join(' + ' + p for p in r.config.get('plugins', [])))}"
                                          f" on {html.escape(str(r.metrics.get('dataset', '?')))}</li>" for r in runs)
             + "</ul>",
             "<h2>Metrics</h2>", metrics_table(runs),
             f'<div class="note">Test metrics at the epoch with the best {html.escape(metric_text)} '
             "(bold: best per column).</div>"]
    curves = _curves(runs, popularity_references(runs))
    if curves:
        parts += ["<h2>Training curves</h2>",
                  f"<figure>{_img(curves, 'training curves')}<figcaption>Mean training loss per epoch, one panel "
                  f"per objective (losses of different models are not comparable); last panel: "
                  f"{html.escape(metric_text)} per epoch (dot: best epoch; dashed: the most-popular baseline, "
                  "where known).</figcaption></figure>"]
    else:
        parts.append('<p class="note">No per-epoch log (log.jsonl) in these runs, so no training curves.</p>')
    signal_figs = [(r, key, sig) for r in runs for key, sig in modality_signals(r).items()]
    if signal_figs:
        parts.append("<h2>Per-modality training signal</h2>")
        for r, key, sig in signal_figs:
            ep = [h["epoch"] for h in r.history]
            parts.append(f"<figure>{_img(plots.modality_signal(r.label, ep, sig, key), key)}</figure>")
    if attribution:
        sections, notes = [], []
        for r in runs:
            figs, note = _attribution(r, attribution_users, dimension_users, k)
            if figs:
                sections.append(f"<h3>{html.escape(r.label)}</h3>" + "".join(f"<figure>{f}</figure>" for f in figs)
                                + f'<p class="note">{note}</p>')
            else:
                notes.append(f"{html.escape(r.label)}: {note}")
        if sections:
            parts += ["<h2>Modality attribution</h2>", *sections]
        if notes:
            parts.append('<p class="note">' + "<br>".join(notes) + "</p>")
    doc = ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
           f"<meta name='viewport' content='width=device-width, initial-scale=1'><title>{html.escape(title)}</title>"
           f"<style>{CSS}</style></head><body><main>{''.join(parts)}</main></body></html>")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(doc, encoding="utf-8")
    return out
