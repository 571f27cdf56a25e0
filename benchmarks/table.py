#!/usr/bin/env python3
"""Regenerate ``benchmarks/results/<dataset>/README.md`` from the JSON results, MMRec's numbers beside ours.

    python benchmarks/table.py baby-like
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def fmt(v, nd=4):
    if v is None or v == "":
        return "—"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def ratio(ours, ref):
    return f"{100 * ours / ref:.1f}%" if ours is not None and ref else "—"


def delta(a, b):
    return f"{100 * (a - b) / b:+.1f}%" if a is not None and b else "—"


def plugin_table(lines, results):
    """Each plug-in run beside the run of its bare host with the same settings and stopping rule."""
    rows = [(n, r) for n, r in results.items() if r.get("plugins")]
    if not rows:
        return
    lines.extend(["## Plug-ins: with vs without", "",
                  "Each plug-in run beside its bare host with the same settings and the same stopping rule: "
                  "both trained to early stopping, or both for the same fixed epoch count (`-Nep`).", "",
                  "| run | host R@20 | with R@20 | Δ | host N@20 | with N@20 | Δ | best epoch (host / with) "
                  "| parameters (host / with) |", "|---|---|---|---|---|---|---|---|---|"])
    for name, r in rows:
        suffix = name.split("-")[-1]
        fixed = suffix.endswith("ep") and suffix[:-2].isdigit()
        host = results.get(f"{r['model']}-{suffix}" if fixed else r["model"])
        h = host["test"] if host else {}
        t = r["test"]
        lines.append("| " + " | ".join([
            name, fmt(h.get("recall@20")), fmt(t.get("recall@20")), delta(t.get("recall@20"), h.get("recall@20")),
            fmt(h.get("ndcg@20")), fmt(t.get("ndcg@20")), delta(t.get("ndcg@20"), h.get("ndcg@20")),
            f"{fmt(host['best_epoch']) if host else '—'} / {fmt(r['best_epoch'])}",
            f"{fmt(host.get('parameters')) if host else '—'} / {fmt(r.get('parameters'))}"]) + " |")
    lines.append("")


def cp_table(lines, results):
    """MetaMMF full vs its CP-decomposed light variant, for every pair run with the same settings
    (``metammf-cp<rest>`` beside ``metammf<rest>``: the default backbone, other backbones, fixed epochs)."""
    pairs = [(n.replace("metammf-cp", "metammf", 1), n) for n in results if n.startswith("metammf-cp")]
    pairs = [(f, c) for f, c in pairs if f in results]
    if not pairs:
        return
    lines.extend(["## MetaMMF: full vs CP-decomposed", "",
                  "| full run | CP run | parameters (full / CP) | ratio | test R@20 (full / CP) | CP / full R@20 "
                  "| test N@20 (full / CP) | best epoch (full / CP) | s/epoch (full / CP) |",
                  "|---|---|---|---|---|---|---|---|---|"])
    for f, c in pairs:
        full, cp = results[f], results[c]
        pr = full.get("parameters", 0) / max(cp.get("parameters", 1), 1)
        lines.append(" | ".join([
            f"| {f}", c, f"{full.get('parameters')} / {cp.get('parameters')}", f"{pr:.1f}×",
            f"{fmt(full['test'].get('recall@20'))} / {fmt(cp['test'].get('recall@20'))}",
            ratio(cp["test"].get("recall@20"), full["test"].get("recall@20")),
            f"{fmt(full['test'].get('ndcg@20'))} / {fmt(cp['test'].get('ndcg@20'))}",
            f"{full['best_epoch']} / {cp['best_epoch']}",
            f"{fmt(full['sec_per_epoch'], 2)} / {fmt(cp['sec_per_epoch'], 2)}"]) + " |")
    lines.append("")


def seed_table(lines, folder):
    """Per-seed 5-epoch MGCN runs: prismrec's own pipeline, MMRec's (transcribed), and prismrec's
    model on MMRec's random streams (``benchmarks/mmrec_mgcn.py --prismrec``)."""
    files = [("prismrec (own sampler and init)", "mgcn-5ep-seeds.json"),
             ("MMRec (`benchmarks/mmrec_mgcn.py`)", "mmrec-mgcn-5ep-seeds.json"),
             ("prismrec on MMRec's init and batches, fp32", "mgcn-5ep-on-mmrec-stream-fp32.json"),
             ("prismrec on MMRec's init and batches, default precision", "mgcn-5ep-on-mmrec-stream.json")]
    runs = [(label, json.loads((folder / f).read_text())) for label, f in files if (folder / f).is_file()]
    if not runs:
        return
    seeds = [999, 1, 2, 3, 4]  # the seeds every pipeline ran; the means are over all of a file's runs
    lines.extend(["## MGCN after 5 epochs, per seed (test R@20 / N@20)", "",
                  "The `mgcn-5ep` row above compares prismrec's seed 999 with MMRec's seed 999: two different "
                  "random draws (initial weights, shuffles, negatives) at MGCN's take-off epoch. Here the draws are "
                  "shared (rows 3-4: prismrec's model on MMRec's draws gives MMRec's numbers) or averaged over seeds.", "",
                  "| pipeline | " + " | ".join(f"seed {x}" for x in seeds) + " | seeds | mean R@20 | mean N@20 |",
                  "|---|" + "---|" * (len(seeds) + 3)])
    for label, d in runs:
        by = {r["seed"]: r for r in d["runs"]}
        cells = [f"{by[x]['test_recall@20']:.4f} / {by[x]['test_ndcg@20']:.4f}" if x in by else "—" for x in seeds]
        r, n = d["test_recall@20"], d["test_ndcg@20"]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {len(d['runs'])} | {r['mean']:.4f} ± {r['stdev']:.4f} | "
                     f"{n['mean']:.4f} ± {n['stdev']:.4f} |")
    lines.append("")


def main(dataset: str = "baby-like") -> Path:
    folder = HERE / "results" / dataset
    peers = json.loads((HERE / "peers.json").read_text()).get(dataset, {})
    results = {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))
               if "test" in json.loads(p.read_text())}
    lines = [f"# Results on {dataset}", "",
             "Generated by `python benchmarks/table.py " + dataset + "` from the JSON files in this folder "
             "(each written by `benchmarks/run.py`; the file's `command` field reproduces it). "
             "MMRec's numbers are from `../shared/peers.md` (`benchmarks/peers.json`). "
             "`load` is the machine's 1-minute load average when the run started: timings taken with load "
             "well above 0 are inflated by other jobs and are not speed claims.", ""]
    speed = peers.get("speed", {})

    def section(title, rows, ref_key):
        if not rows:
            return
        lines.extend([f"## {title}", "",
                      "| run | epochs | best epoch | test R@20 | MMRec R@20 | ratio | test N@20 | MMRec N@20 | ratio "
                      "| s/epoch (threads) | CPU s/epoch | MMRec s/epoch (best) | target | eval s | peak RSS MB | load |",
                      "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"])
        for name, r in rows:
            model = r["model"]
            ref = peers.get(ref_key, {}).get(model, {}) if not r.get("plugins") else {}
            if "epochs" in ref and ref["epochs"] != r["epochs"]:
                ref = {}  # MMRec's fixed-epoch numbers compare only at their own epoch count
            sp = speed.get(model, {})
            mm_best = min([v for v in (sp.get("sec_per_epoch_1t"), sp.get("sec_per_epoch_2t")) if v] or [None]) \
                if sp else None
            t = r["test"]
            lines.append("| " + " | ".join([
                name, fmt(r["epochs"]), fmt(r["best_epoch"]), fmt(t.get("recall@20")), fmt(ref.get("recall@20")),
                ratio(t.get("recall@20"), ref.get("recall@20")), fmt(t.get("ndcg@20")), fmt(ref.get("ndcg@20")),
                ratio(t.get("ndcg@20"), ref.get("ndcg@20")),
                f"{fmt(r['sec_per_epoch'], 2)} ({r.get('threads', '?')})", fmt(r.get("cpu_sec_per_epoch"), 2),
                fmt(mm_best, 1),
                fmt(sp.get("target_sec_per_epoch"), 1), fmt(r.get("eval_seconds"), 3), fmt(r.get("peak_rss_mb"), 0),
                fmt((r.get("load_avg") or [None])[0], 1)]) + " |")
        lines.append("")

    fixed = [(n, r) for n, r in results.items() if "ep" in n.split("-")[-1] and n.split("-")[-1][:-2].isdigit()]
    conv = [(n, r) for n, r in results.items() if (n, r) not in fixed and "ddp" not in n]
    other = [(n, r) for n, r in results.items() if "ddp" in n]
    section("Fixed epoch count (MMRec's settings of peers.md)", fixed, "5ep")
    section("Trained to early stopping (patience 20 on valid Recall@20)", conv, "converged")
    section("Other runs", other, "converged")
    seed_table(lines, folder)
    plugin_table(lines, results)
    cp_table(lines, results)
    pop = peers.get("popularity")
    if pop:
        lines.append(f"Most-popular baseline (MMRec/Cornac): R@20 {pop['recall@20']}, N@20 {pop['ndcg@20']}. "
                     f"Evaluation target: one full ranking of all users in ≤ {peers.get('eval_target_seconds')} s.")
    extra = folder / "NOTES.md"
    if extra.is_file():
        lines.extend(["", extra.read_text().strip()])
    out = folder / "README.md"
    out.write_text("\n".join(lines) + "\n")
    return out


if __name__ == "__main__":
    print(main(*sys.argv[1:]))
