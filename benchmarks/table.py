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


def md_table(lines: list[str], columns: list[str], rows, title: str | None = None, intro: str | None = None) -> None:
    """Append one results table to ``lines``: ``## title`` and ``intro`` (each followed by a blank line) when
    given, the header of ``columns``, a line per row of cells, and a closing blank line."""
    if title:
        lines.extend([f"## {title}", ""])
    if intro:
        lines.extend([intro, ""])
    lines.extend(["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)])
    lines.extend("| " + " | ".join(cells) + " |" for cells in rows)
    lines.append("")


def write_readme(folder: Path, lines: list[str]) -> Path:
    """Write ``folder/README.md``: ``lines``, then the folder's ``NOTES.md`` when there is one."""
    notes = folder / "NOTES.md"
    if notes.is_file():
        lines.extend([notes.read_text().strip(), ""])
    out = folder / "README.md"
    out.write_text("\n".join(lines))
    return out


def plugin_table(lines, results):
    """Each plug-in run beside the run of its bare host with the same settings and stopping rule."""
    rows = [(n, r) for n, r in results.items() if r.get("plugins")]
    if not rows:
        return
    cells = []
    for name, r in rows:
        suffix = name.split("-")[-1]
        fixed = suffix.endswith("ep") and suffix[:-2].isdigit()
        host = results.get(f"{r['model']}-{suffix}" if fixed else r["model"])
        h = host["test"] if host else {}
        t = r["test"]
        cells.append([
            name, fmt(h.get("recall@20")), fmt(t.get("recall@20")), delta(t.get("recall@20"), h.get("recall@20")),
            fmt(h.get("ndcg@20")), fmt(t.get("ndcg@20")), delta(t.get("ndcg@20"), h.get("ndcg@20")),
            f"{fmt(host['best_epoch']) if host else '—'} / {fmt(r['best_epoch'])}",
            f"{fmt(host.get('parameters')) if host else '—'} / {fmt(r.get('parameters'))}"])
    md_table(lines, ["run", "host R@20", "with R@20", "Δ", "host N@20", "with N@20", "Δ", "best epoch (host / with)",
                     "parameters (host / with)"], cells, "Plug-ins: with vs without",
             "Each plug-in run beside its bare host with the same settings and the same stopping rule: "
             "both trained to early stopping, or both for the same fixed epoch count (`-Nep`).")


def cp_table(lines, results):
    """MetaMMF full vs its CP-decomposed light variant, for every pair run with the same settings
    (``metammf-cp<rest>`` beside ``metammf<rest>``: the default backbone, other backbones, fixed epochs)."""
    pairs = [(n.replace("metammf-cp", "metammf", 1), n) for n in results if n.startswith("metammf-cp")]
    pairs = [(f, c) for f, c in pairs if f in results]
    if not pairs:
        return
    cells = []
    for f, c in pairs:
        full, cp = results[f], results[c]
        pr = full.get("parameters", 0) / max(cp.get("parameters", 1), 1)
        cells.append([
            f, c, f"{full.get('parameters')} / {cp.get('parameters')}", f"{pr:.1f}×",
            f"{fmt(full['test'].get('recall@20'))} / {fmt(cp['test'].get('recall@20'))}",
            ratio(cp["test"].get("recall@20"), full["test"].get("recall@20")),
            f"{fmt(full['test'].get('ndcg@20'))} / {fmt(cp['test'].get('ndcg@20'))}",
            f"{full['best_epoch']} / {cp['best_epoch']}",
            f"{fmt(full['sec_per_epoch'], 2)} / {fmt(cp['sec_per_epoch'], 2)}"])
    md_table(lines, ["full run", "CP run", "parameters (full / CP)", "ratio", "test R@20 (full / CP)", "CP / full R@20",
                     "test N@20 (full / CP)", "best epoch (full / CP)", "s/epoch (full / CP)"], cells,
             "MetaMMF: full vs CP-decomposed")


def seed_table(lines, folder):
    """Per-seed 5-epoch MGCN runs (``benchmarks/seeds.py``): the spread of one fixed-epoch draw."""
    path = folder / "mgcn-5ep-seeds.json"
    if not path.is_file():
        return
    d = json.loads(path.read_text())
    seeds = [r["seed"] for r in d["runs"]]
    shown = seeds[:5]
    by = {r["seed"]: r for r in d["runs"]}
    cells = [f"{by[x]['test_recall@20']:.4f} / {by[x]['test_ndcg@20']:.4f}" for x in shown]
    r, n = d["test_recall@20"], d["test_ndcg@20"]
    row = ["prismrec", *cells, str(len(d["runs"])), f"{r['mean']:.4f} ± {r['stdev']:.4f}",
           f"{n['mean']:.4f} ± {n['stdev']:.4f}"]
    md_table(lines, ["pipeline", *(f"seed {x}" for x in shown), "seeds", "mean R@20", "mean N@20"], [row],
             "MGCN after 5 epochs, per seed (test R@20 / N@20)",
             "The `mgcn-5ep` row above is one random draw (initial weights, shuffles, negatives) at MGCN's "
             "take-off epoch; the mean over seeds is the figure to set beside MMRec's single seed-999 run.")


def cold_table(lines, folder):
    """Cold-start items (``benchmarks/cold_items.py``): each held-out draw's file, the mean over draws."""
    files = [json.loads(p.read_text()) for p in sorted(folder.glob("cold-items*.json"))]
    if not files:
        return
    names = ["random", "popularity-oracle", "content-centroid"] + [m for m in files[0]["models"]]

    def cell(f, name, metric):
        r = f["models"][name]["cold"] if name in f["models"] else f.get(name) or {}
        return r.get(metric)
    rows = []
    for name in names:
        row = [name]
        for metric in ("recall@20", "ndcg@20"):
            row.append(pm([cell(f, name, metric) for f in files]))
        warm = [f["models"][name]["warm_test"].get("recall@20") for f in files if name in f["models"]]
        row += [pm(warm) if warm else "—", " / ".join(fmt(cell(f, name, "recall@20")) for f in files)]
        rows.append(row)
    f0 = files[0]
    md_table(lines, ["ranking", "cold R@20", "cold N@20", "warm test R@20 (same run)", "cold R@20 per draw"], rows,
             "Cold-start items: the held-out items ranked from their features alone",
             f"`benchmarks/cold_items.py`: {f0['share']:.0%} of the items ({f0['cold_items']}) held out of every split "
             f"and ranked, among themselves, for the {f0['users']} users who interacted with them; "
             f"{len(files)} held-out draw(s), mean ± sd over draws. `random` is the expected value, "
             "`popularity-oracle` orders the cold items by their true (held-out) counts: a yardstick, not a method. "
             "N@20 of `random` is not computed.")


# ---- real-data folders (a ``published.json`` beside the runs): seed means, both protocols ----------
SEED_SUFFIX = "-seed"


def run_groups(results: dict) -> dict[str, list[dict]]:
    """Runs grouped by name without the ``-seedN`` suffix (``run.py`` names seed 999 plainly)."""
    groups: dict[str, list[dict]] = {}
    for name, r in results.items():
        base, sep, tail = name.rpartition(SEED_SUFFIX)
        key = base if sep and tail.isdigit() else name
        groups.setdefault(key, []).append(r)
    return groups


def mean_std(values) -> tuple[float | None, float | None]:
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    m = sum(values) / len(values)
    sd = (sum((v - m) ** 2 for v in values) / (len(values) - 1)) ** 0.5 if len(values) > 1 else None
    return m, sd


def pm(values, nd=4) -> str:
    m, sd = mean_std(values)
    if m is None:
        return "—"
    return f"{m:.{nd}f} ± {sd:.{nd}f}" if sd is not None else f"{m:.{nd}f}"


def protocol_values(runs: list[dict], protocol: str, metric: str) -> list:
    """Per-seed ``metric`` under the field's protocol (test at the best-valid epoch) or DiffMM's
    (the best test epoch of the same run, ``best_test_epoch`` in the JSON)."""
    if protocol == "field":
        return [r["test"].get(metric) for r in runs]
    return [(r.get("best_test_epoch") or {}).get(metric) for r in runs]


def host_of(name: str) -> str:
    """The bare host run of a plug-in run: the part before the first ``+`` (``vbpr.std+erl`` -> ``vbpr.std``)."""
    return name.split("+", 1)[0]


def ref_key(name: str, runs: list[dict], ref: dict) -> str | None:
    """The published row a run sits beside: its own name, or its model's for a settings variant
    of a bare model (``vbpr.std`` -> ``vbpr``); plug-in runs have none."""
    if name in ref:
        return name
    model = runs[0]["model"]
    return model if name.startswith(model + ".") and "+" not in name and model in ref else None


def real_main(dataset: str, folder: Path, published: dict) -> Path:
    results = {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))
               if p.name != "published.json" and "test" in json.loads(p.read_text())}
    groups = run_groups(results)
    lines = [f"# Results on {dataset} (real data)", "",
             f"Generated by `python benchmarks/table.py {dataset}` from the JSON files in this folder (each written by "
             "`benchmarks/run.py`; its `command` field reproduces it; `-seedN` files are the same run with another "
             "seed, seed 999 has no suffix) and `published.json` (the published numbers and where they come from). "
             "Every run trains to early stopping (patience 20 on valid Recall@20).", "",
             "- **Field's protocol** (the default, MMRec's): the test metrics at the epoch of the best *valid* "
             "Recall@20.",
             "- **DiffMM's protocol — optimistic**: the best *test* Recall@20 over the epochs of the same run "
             "(the trainer evaluates test every epoch). It selects on the test set, so it is an upper bound "
             "shown only to sit beside papers that report it; never use it to choose a model.", "",
             f"Values are the mean ± standard deviation over the seeds (`seeds` column). {published.get('note', '')}",
             ""]
    field_ref, opt_ref = published.get("field", {}), published.get("optimistic", {})

    def ref_cells(ref: dict, key: str, runs: list[dict], protocol: str) -> list[str]:
        r = ref.get(key, {}) if key else {}
        out = []
        for metric in ("recall@20", "ndcg@20"):
            m, _ = mean_std(protocol_values(runs, protocol, metric))
            out += [pm(protocol_values(runs, protocol, metric)), fmt(r.get(metric)), ratio(m, r.get(metric))]
        return out

    def mean_of(runs: list[dict], value) -> float | None:
        return mean_std([value(r) for r in runs])[0]

    published_cols = ["test R@20", "published R@20", "ratio", "test N@20", "published N@20", "ratio"]
    rows = [[name, str(len(runs)), fmt(mean_of(runs, lambda r: r["epochs"]), 0),
             fmt(mean_of(runs, lambda r: r["best_epoch"]), 0),
             *ref_cells(field_ref, ref_key(name, runs, field_ref), runs, "field"),
             f"{fmt(mean_of(runs, lambda r: r.get('sec_per_epoch')), 2)} ({runs[0].get('threads', '?')})",
             fmt(mean_of(runs, lambda r: (r.get("load_avg") or [None])[0]), 1)] for name, runs in groups.items()]
    md_table(lines, ["run", "seeds", "epochs", "best valid epoch", *published_cols, "s/epoch (threads)", "load"], rows,
             f"Field's protocol (test at the best-valid epoch); published: {field_ref.get('source', '—')}")
    if opt_ref and any(r.get("best_test_epoch") for r in results.values()):  # only beside papers that use it
        rows = [[name, str(len(runs)), fmt(mean_of(runs, lambda r: (r.get("best_test_epoch") or {}).get("epoch")), 0),
                 *ref_cells(opt_ref, ref_key(name, runs, opt_ref), runs, "optimistic"),
                 pm(protocol_values(runs, "field", "recall@20"))] for name, runs in groups.items()]
        md_table(lines, ["run", "seeds", "best test epoch", *published_cols, "field's R@20 (for contrast)"], rows,
                 f"DiffMM's protocol (best test epoch, optimistic); published: {opt_ref.get('source', '—')}")
    pairs = [(n, host_of(n)) for n in groups if "+" in n and host_of(n) in groups]
    if pairs:
        rows = []
        for name, host in pairs:
            row = [name, host, f"{len(groups[host])} / {len(groups[name])}"]
            for metric in ("recall@20", "ndcg@20"):
                h, w = (protocol_values(groups[n], "field", metric) for n in (host, name))
                row += [pm(h), pm(w), delta(mean_std(w)[0], mean_std(h)[0])]
            rows.append(row)
        md_table(lines, ["run", "host", "seeds (host / with)", "host R@20", "with R@20", "Δ R@20", "host N@20",
                         "with N@20", "Δ N@20"], rows, "Plug-ins: with vs without (field's protocol; seed means)",
                 "Each plug-in run beside its bare host with the same settings, seeds and stopping rule. "
                 "Δ is the change of the seed means; set it against the hosts' seed standard deviation.")
    cold_table(lines, folder)
    if published.get("others"):
        lines.extend([published["others"], ""])
    return write_readme(folder, lines)


def main(dataset: str = "baby-like") -> Path:
    folder = HERE / "results" / dataset
    if (folder / "published.json").is_file():  # a real-data folder: seed means, both protocols
        return real_main(dataset, folder, json.loads((folder / "published.json").read_text()))
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
        cells = []
        for name, r in rows:
            model = r["model"]
            ref = peers.get(ref_key, {}).get(model, {}) if not r.get("plugins") else {}
            if "epochs" in ref and ref["epochs"] != r["epochs"]:
                ref = {}  # MMRec's fixed-epoch numbers compare only at their own epoch count
            sp = speed.get(model, {})
            mm_best = min([v for v in (sp.get("sec_per_epoch_1t"), sp.get("sec_per_epoch_2t")) if v] or [None]) \
                if sp else None
            t = r["test"]
            cells.append([
                name, fmt(r["epochs"]), fmt(r["best_epoch"]), fmt(t.get("recall@20")), fmt(ref.get("recall@20")),
                ratio(t.get("recall@20"), ref.get("recall@20")), fmt(t.get("ndcg@20")), fmt(ref.get("ndcg@20")),
                ratio(t.get("ndcg@20"), ref.get("ndcg@20")),
                f"{fmt(r['sec_per_epoch'], 2)} ({r.get('threads', '?')})", fmt(r.get("cpu_sec_per_epoch"), 2),
                fmt(mm_best, 1),
                fmt(sp.get("target_sec_per_epoch"), 1), fmt(r.get("eval_seconds"), 3), fmt(r.get("peak_rss_mb"), 0),
                fmt((r.get("load_avg") or [None])[0], 1)])
        md_table(lines, ["run", "epochs", "best epoch", "test R@20", "MMRec R@20", "ratio", "test N@20", "MMRec N@20",
                         "ratio", "s/epoch (threads)", "CPU s/epoch", "MMRec s/epoch (best)", "target", "eval s",
                         "peak RSS MB", "load"], cells, title)

    fixed = [(n, r) for n, r in results.items() if "ep" in n.split("-")[-1] and n.split("-")[-1][:-2].isdigit()]
    conv = [(n, r) for n, r in results.items() if (n, r) not in fixed and "ddp" not in n]
    other = [(n, r) for n, r in results.items() if "ddp" in n]
    section("Fixed epoch count (MMRec's settings of peers.md)", fixed, "5ep")
    section("Trained to early stopping (patience 20 on valid Recall@20)", conv, "converged")
    section("Other runs", other, "converged")
    seed_table(lines, folder)
    cold_table(lines, folder)
    plugin_table(lines, results)
    cp_table(lines, results)
    pop = peers.get("popularity")
    if pop:
        lines.append(f"Most-popular baseline (MMRec/Cornac): R@20 {pop['recall@20']}, N@20 {pop['ndcg@20']}. "
                     f"Evaluation target: one full ranking of all users in ≤ {peers.get('eval_target_seconds')} s.")
    lines.append("")  # a blank line before the notes, and the file's closing newline
    return write_readme(folder, lines)


if __name__ == "__main__":
    print(main(*sys.argv[1:]))
