"""Report plots (matplotlib, PNG, written atomically)."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from core.files import atomic_write  # noqa: E402
from core.variants import PLAIN  # noqa: E402


def _save(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    atomic_write(path, buf.getvalue())


def accuracy_bars(path: Path, table: pd.DataFrame, cis: dict[tuple[str, str], tuple[float, float]]) -> None:
    """Grouped bars: overall accuracy per variant (groups) and model (bars), 95 % CI whiskers."""
    t = table.reset_index()
    models = sorted(t["model"].unique())
    variants = sorted(dict.fromkeys(t["variant"]), key=lambda v: (v != PLAIN, v))
    width = 0.8 / max(1, len(models))
    fig, ax = plt.subplots(figsize=(1.5 + 1.2 * len(variants) * max(1, len(models)) / 2, 3.5))
    for i, model in enumerate(models):
        xs, accs, whiskers = [], [], ([], [])  # whiskers: (below, above) the accuracy
        for j, variant in enumerate(variants):
            row = t[(t["model"] == model) & (t["variant"] == variant)]
            if row.empty:
                continue
            acc = float(row["overall_acc"].iloc[0])
            low, high = cis.get((model, variant), (acc, acc))
            xs.append(j + (i - (len(models) - 1) / 2) * width)
            accs.append(acc)
            whiskers[0].append(max(0.0, acc - low))
            whiskers[1].append(max(0.0, high - acc))
        ax.bar(xs, accs, width, yerr=whiskers, capsize=3, label=model)
    ax.set_xticks(range(len(variants)), variants)
    ax.set_ylabel("overall accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8)
    _save(fig, path)


def forest(path: Path, cued: pd.DataFrame, adapters: pd.DataFrame) -> None:
    """Forest plot: every delta (type "all") with its 95 % CI; zero marked; filled where
    the delta survives Holm."""
    rows = []
    for _, r in cued[cued["type"] == "all"].iterrows() if not cued.empty else []:
        rows.append((f"{r['model']}: {r['variant']} − plain", r))
    for _, r in adapters[adapters["type"] == "all"].iterrows() if not adapters.empty else []:
        rows.append((f"{r['adapter']} − {r['base']} ({r['variant']})", r))
    fig, ax = plt.subplots(figsize=(6, 0.9 + 0.4 * max(1, len(rows))))
    for y, (_, r) in enumerate(rows):
        ax.errorbar(
            r["delta"],
            y,
            xerr=[[r["delta"] - r["ci_low"]], [r["ci_high"] - r["delta"]]],
            fmt="o",
            capsize=3,
            color="C0",
            markerfacecolor="C0" if r["survives_holm"] else "white",
        )
    ax.axvline(0, color="grey", lw=1)
    ax.set_yticks(range(len(rows)), [label for label, _ in rows])
    ax.set_xlabel("accuracy delta (points), 95 % CI resampling videos; filled: significant after Holm")
    if not rows:
        ax.text(0.5, 0.5, "no paired comparisons in this run", ha="center", transform=ax.transAxes)
    _save(fig, path)


def attention_summary(path: Path, pairs: pd.DataFrame) -> None:
    """Where the model looked, one line per comparison of the attention family (means over
    layers): b − a in points of attention mass with its 95 % CI; filled where it survives Holm."""
    rows = pairs[pairs["family"] == "attention"]
    fig, ax = plt.subplots(figsize=(7, 0.9 + 0.35 * max(1, len(rows))))
    for y, r in enumerate(rows.to_dict("records")):
        ax.errorbar(
            r["delta"],
            y,
            xerr=[[r["delta"] - r["ci_low"]], [r["ci_high"] - r["delta"]]],
            fmt="o",
            capsize=3,
            color="C1",
            markerfacecolor="C1" if r["survives_holm"] else "white",
        )
    labels = [
        f"{r['measure']} ({r['source']}), {r['model']}: {r['b']} − {r['a']}"
        + ("" if r["cue"] in (r["a"], r["b"]) else f" ({r['cue']} regions)")
        for r in rows.to_dict("records")
    ]
    ax.axvline(0, color="grey", lw=1)
    ax.set_yticks(range(len(rows)), labels, fontsize=7)
    ax.set_xlabel("attention mass delta (points), 95 % CI resampling videos; filled: significant after Holm")
    _save(fig, path)
