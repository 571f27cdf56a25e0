"""Matplotlib figures of the report, returned as PNG bytes (Agg backend: no display needed)."""
from __future__ import annotations

import io

import numpy as np

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f"]


def _plt():
    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    plt.rcParams.update({"font.size": 10, "axes.titlesize": 11, "axes.spines.top": False,
                         "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.3})
    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return buf.getvalue()


def _integer_epochs(ax) -> None:
    from matplotlib.ticker import MaxNLocator
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def training_curves(runs: list[dict], metric: str = "recall@20", references: dict[str, float] | None = None) -> bytes:
    """Loss per epoch, one panel per objective, and the validation metric per epoch of every run
    in a last panel (the best epoch marked, ``references`` as dashed horizontal lines).

    Args:
        runs: ``{"label", "epochs", "loss", "valid", "best_epoch", "objective"}`` per run; runs with
            the same ``objective`` (default: their label) share a loss panel.
        metric: the validation panel's label.
        references: ``{label: value}`` drawn across the validation panel (e.g. most popular).
    """
    plt = _plt()
    objectives = list(dict.fromkeys(r.get("objective", r["label"]) for r in runs))
    colour = {r["label"]: PALETTE[k % len(PALETTE)] for k, r in enumerate(runs)}
    n = len(objectives) + 1
    cols = min(n, 3)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.9 * cols if n > 2 else 5.5 * cols, 3.5 * rows), squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    for ax, obj in zip(flat, objectives):
        group = [r for r in runs if r.get("objective", r["label"]) == obj]
        losses = np.concatenate([np.asarray(r["loss"], dtype=float) for r in group])
        losses = losses[np.isfinite(losses)]
        for r in group:
            loss = np.asarray(r["loss"], dtype=float)
            if np.isfinite(loss).any():
                ax.plot(r["epochs"], loss, color=colour[r["label"]], label=r["label"], lw=1.6)
        if len(losses) and losses.min() > 0 and losses.max() / losses.min() > 20:  # several orders: log scale
            ax.set_yscale("log")
        if not len(losses):
            ax.text(0.5, 0.5, "no training loss (not trained)", ha="center", va="center", transform=ax.transAxes,
                    color="#5b6475")
        ax.set(title=f"training loss: {obj}", xlabel="epoch", ylabel="mean loss per batch")
        if len(group) > 1:
            ax.legend(fontsize=8, frameon=False)
        _integer_epochs(ax)
    b = flat[len(objectives)]
    for r in runs:
        c = colour[r["label"]]
        ep = list(r["epochs"])
        b.plot(ep, r["valid"], color=c, label=r["label"], lw=1.6, marker="o" if len(ep) == 1 else None)
        if r.get("best_epoch") is not None and r["best_epoch"] in ep:
            j = ep.index(r["best_epoch"])
            b.scatter([ep[j]], [r["valid"][j]], color=c, s=40, zorder=3, edgecolor="white")
    for name, value in (references or {}).items():
        b.axhline(value, color="#7f7f7f", ls="--", lw=1.2, label=f"{name} ({value:.4f})")
    b.set(title=f"validation {metric} (dot: best epoch)", xlabel="epoch", ylabel=metric)
    b.legend(loc="lower right", fontsize=8, frameon=False)
    _integer_epochs(b)
    fig.tight_layout()
    return _png(fig)


def modality_signal(label: str, epochs, signals: dict[str, list[float]], name: str) -> bytes:
    """Per-modality training signal (e.g. ERL's per-modality gradient or loss share) per epoch."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    for k, (m, v) in enumerate(signals.items()):
        ax.plot(epochs, v, label=m, color=PALETTE[k % len(PALETTE)], lw=1.6)
    ax.set(title=f"{label}: {name} per modality", xlabel="epoch", ylabel=name)
    _integer_epochs(ax)
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return _png(fig)


def modality_shares(label: str, summary: dict) -> bytes:
    """Bars: share of recommendations each part dominates, and mean |contribution| share."""
    plt = _plt()
    parts = list(summary["dominant_share"])
    x = np.arange(len(parts))
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    dom = [summary["dominant_share"][p] for p in parts]
    mas = [summary["mean_abs_share"][p] for p in parts]
    b1 = ax.bar(x - 0.2, dom, 0.4, label="recommendations dominated", color=PALETTE[0])
    b2 = ax.bar(x + 0.2, mas, 0.4, label="mean |contribution| share", color=PALETTE[3])
    for bars in (b1, b2):
        ax.bar_label(bars, fmt="%.2f", fontsize=8, padding=2)
    ax.set_xticks(x, parts)
    ax.set_ylim(0, 1.12)
    ax.set(title=f"{label}: modality attribution over {summary['users']} users' top-{summary['k']}",
           ylabel="fraction")
    ax.legend(frameon=False, fontsize=8, loc="upper right")
    fig.tight_layout()
    return _png(fig)


def feature_dimensions(label: str, attributions: dict[str, np.ndarray], top: int = 20) -> bytes:
    """Per modality, the ``top`` feature dimensions by mean |gradient × input| (signed mean as colour)."""
    plt = _plt()
    mods = list(attributions)
    fig, axes = plt.subplots(1, len(mods), figsize=(5.5 * len(mods), 3.6), squeeze=False)
    for ax, m in zip(axes[0], mods):
        a = attributions[m]
        mag = np.abs(a).mean(axis=0)
        order = np.argsort(-mag)[:top]
        sign = a.mean(axis=0)[order]
        ax.bar(np.arange(len(order)), mag[order], color=[PALETTE[0] if s >= 0 else PALETTE[1] for s in sign])
        ax.set_xticks(np.arange(len(order)), [str(j) for j in order], rotation=60, fontsize=7)
        share = mag[order].sum() / max(mag.sum(), 1e-12)
        ax.set(title=f"{m} ({a.shape[1]}-d): top {len(order)} dims = {share:.0%} of |attribution|",
               xlabel="feature dimension (blue: raises scores, red: lowers)", ylabel="mean |grad × input|")
    fig.suptitle(label, fontsize=10)
    fig.tight_layout()
    return _png(fig)
