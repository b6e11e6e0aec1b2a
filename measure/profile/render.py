"""profile.md and its plots, from profile.json alone: the answer per model first, then the
targets, then each measure's table."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from core.files import atomic_write  # noqa: E402
from core.layout import ProfileLayout  # noqa: E402
from core.runfiles import ProfiledModel, ProfileRecord  # noqa: E402
from measure.profile import figures as fig  # noqa: E402
from measure.report.render import markdown  # noqa: E402

GIB = fig.GIB


def _n(x: float | None, unit: str = "", digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}{unit}"


def name(m: ProfiledModel) -> str:
    return Path(m.model).name or m.model


def headline(m: ProfiledModel) -> str:
    """One line: what a person asks of the profile first."""
    f = fig.figures(m)
    kinds = [r["kind"] for r in m.latency if r["dtype"] == m.dtypes[0]]
    warm = ", ".join(f"{k} {_n(f[f'latency_warm_s.{k}'], ' s', 3)}" for k in kinds)
    best = max(m.throughput, key=lambda r: r["requests"] / r["seconds"], default=None)
    parts = [
        f"**{name(m)}** ({m.family}, {m.dtypes[0]}): ready in {_n(f['ready_s'], ' s', 1)}",
        f"warm latency {warm}",
        f"peak memory {_n(f['peak_rss_gib'], ' GiB')}",
    ]
    if best is not None:
        parts.append(f"{best['requests'] / best['seconds']:.1f} requests/s at {best['in_flight']} in flight")
    if "session_growth_pct" in f:
        s = m.session
        parts.append(f"memory {f['session_growth_pct']:+.1f} % from {s['n']} to {10 * s['n']} requests")
    if m.edges:
        alive = sum(e["alive"] for e in m.edges)
        parts.append(f"server alive after {alive} of {len(m.edges)} edge inputs")
    for d in m.dtypes[1:]:
        same, pairs = fig.agreement(m, d)
        parts.append(f"{d}: {same}/{pairs} answers as in {m.dtypes[0]}")
    return "- " + "; ".join(parts)


def targets_table(r: ProfileRecord) -> pd.DataFrame:
    rows = []
    for m in r.models:
        f = fig.figures(m)
        for t in r.targets:
            value = f.get(t["figure"])
            rows.append(
                {
                    "model": name(m),
                    "figure": t["figure"],
                    "value": "n/a" if value is None else f"{value:.3g}",
                    "target": fig.bounds(t),
                    "verdict": fig.verdict(value, t),
                    "source": t["source"],
                }
            )
    return pd.DataFrame(rows)


def ready_table(r: ProfileRecord) -> pd.DataFrame:
    rows = []
    for m in r.models:
        for dtype in m.dtypes:
            x = m.ready[dtype]
            times = x.get("times") or {}
            rows.append(
                {
                    "model": name(m),
                    "dtype": dtype,
                    "vllm": x.get("vllm"),
                    "ready_s": x["ready_s"],
                    "weights_load_s": times.get("weights_load_s"),
                    "model_load_s": times.get("model_load_s"),
                    "engine_init_s": times.get("engine_init_s"),
                    "rss_ready_gib": (x.get("rss_ready_bytes") or 0) / GIB or None,
                }
            )
    return pd.DataFrame(rows).dropna(axis=1, how="all")


def latency_table(r: ProfileRecord) -> pd.DataFrame:
    rows = []
    for m in r.models:
        for row in m.latency:
            k = fig.kind_figures(row)
            rows.append(
                {
                    "model": name(m),
                    "dtype": row["dtype"],
                    "kind": row["kind"],
                    "prompt_tokens": k["prompt_tokens"],
                    "cold_s": k["cold_s"],
                    "warm_s": k["warm_s"],
                    "warm_n": len(fig.answered(row)) - (row["replies"][0] is not None),
                    "peak_rss_gib": k["peak_rss_gib"],
                    "errors": "; ".join(sorted(set(row["errors"]))) or "",
                }
            )
    return pd.DataFrame(rows)


def throughput_table(r: ProfileRecord) -> pd.DataFrame:
    rows = []
    for m in r.models:
        for row in m.throughput:
            lat = pd.Series(row["latencies"])
            rows.append(
                {
                    "model": name(m),
                    "in_flight": row["in_flight"],
                    "requests": row["requests"],
                    "requests_per_s": row["requests"] / row["seconds"],
                    "p50_s": lat.quantile(0.5),
                    "p95_s": lat.quantile(0.95),
                    "errors": row["errors"],
                }
            )
    return pd.DataFrame(rows)


def session_table(r: ProfileRecord) -> pd.DataFrame:
    rows = []
    for m in r.models:
        s = m.session
        gib = {
            k: (s.get(k) or 0) / GIB or None for k in ("rss_before_bytes", "rss_after_n_bytes", "rss_after_10n_bytes")
        }
        rows.append(
            {
                "model": name(m),
                "n": s["n"],
                "rss_before_gib": gib["rss_before_bytes"],
                "rss_after_n_gib": gib["rss_after_n_bytes"],
                "rss_after_10n_gib": gib["rss_after_10n_bytes"],
                "growth_pct": fig.figures(m).get("session_growth_pct"),
                "errors": s["errors"],
            }
        )
    return pd.DataFrame(rows)


def dtype_table(r: ProfileRecord) -> pd.DataFrame:
    rows = []
    for m in r.models:
        by = {(x["dtype"], x["kind"]): fig.kind_figures(x)["warm_s"] for x in m.latency}
        for d in m.dtypes[1:]:
            same, pairs = fig.agreement(m, d)
            for kind in [x["kind"] for x in m.latency if x["dtype"] == m.dtypes[0]]:
                a, b = by.get((m.dtypes[0], kind)), by.get((d, kind))
                rows.append(
                    {
                        "model": name(m),
                        "kind": kind,
                        f"warm_s ({m.dtypes[0]})": a,
                        "warm_s (other)": b,
                        "other": d,
                        "other / first": b / a if a and b else None,
                        "same answers (all kinds)": f"{same}/{pairs}",
                    }
                )
    return pd.DataFrame(rows)


def repeats_table(r: ProfileRecord) -> pd.DataFrame:
    rows = []
    for m in r.models:
        for setting, replies in sorted(m.repeats.items()):
            counts = pd.Series(replies).value_counts()
            rows.append(
                {
                    "model": name(m),
                    "setting": setting,
                    "requests": len(replies),
                    "distinct replies": len(counts),
                    "most common": f"{counts.index[0]!r} x{counts.iloc[0]}" if len(counts) else "",
                }
            )
    return pd.DataFrame(rows)


def _short(text: str, most: int = 110) -> str:
    """An outcome up to its first sentence's end, at most `most` characters (profile.json keeps it whole)."""
    first = text.split(". ")[0]
    return first if len(first) <= most else first[: most - 1] + "…"


def edges_table(r: ProfileRecord) -> pd.DataFrame:
    rows = [
        {
            "model": name(m),
            "input": e["input"],
            "what happened": _short(e["outcome"]),
            "server still answers": e["alive"],
        }
        for m in r.models
        for e in m.edges
    ]
    return pd.DataFrame(rows)


def render(r: ProfileRecord) -> str:
    """profile.md."""
    s = r.settings
    parts = [
        f"# Serving profile: {', '.join(name(m) for m in r.models)}\n\n",
        *(headline(m) + "\n" for m in r.models),
        "\nEvery request was new to the server (a fresh media uuid and cache salt); latencies are "
        "one request at a time; memory is the server's whole process group (/proc).\n",
    ]
    if r.targets:
        parts += ["\n## Targets (met / NOT met)\n", markdown(targets_table(r)), "\n"]
    sections = [
        ("Time to ready (s; the phases as vLLM logged them)", ready_table(r), None),
        (
            f"Latency by input kind (s): cold is the first request of its kind, warm the median of the next "
            f"{s['warm']}, each on another clip; peak memory while the kind was sent",
            latency_table(r),
            "latency.png",
        ),
        (
            "Throughput against requests in flight (the video of "
            f"{s['throughput_frames']} frames; {s['least_requests']} requests or twice the level)",
            throughput_table(r),
            "throughput.png",
        ),
        (
            f"Memory over a long session (GiB): after n and after 10 n requests, {s['session_in_flight']} in flight",
            session_table(r),
            None,
        ),
        ("Precision: warm latency and answers in another dtype", dtype_table(r), None),
        ("Repeatability: the same free-form request, again and again", repeats_table(r), None),
        ("Edge inputs: what happened, and whether the server still answered", edges_table(r), None),
    ]
    for title, table, png in sections:
        if table.empty:
            continue
        parts += [f"\n## {title}\n", markdown(table), "\n"]
        parts += [f"\n![{title.split(' (')[0]}]({png})\n"] if png else []
    machine = ", ".join(f"{k} {v}" for k, v in sorted(r.machine.items()))
    settings = ", ".join(f"{k} {v}" for k, v in sorted(s.items()))
    parts += [f"\n## Settings\n\nStarted {r.started}; {machine}.\n\n{settings}.\n"]
    return "".join(parts)


def _save(figure, path: Path) -> None:
    buf = io.BytesIO()
    figure.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(figure)
    atomic_write(path, buf.getvalue())


def plots(r: ProfileRecord, layout: ProfileLayout) -> None:
    """latency.png (warm and cold by frames sent) and throughput.png (by requests in flight)."""
    lat = latency_table(r)
    figure, ax = plt.subplots(figsize=(5.5, 3.4))
    for (model, dtype), g in lat.groupby(["model", "dtype"], sort=True):
        videos = g[g["kind"].str.startswith("video-")]
        frames = videos["kind"].str.removeprefix("video-").astype(int)
        (line,) = ax.plot(frames, videos["warm_s"], marker="o", label=f"{model} {dtype} warm")
        ax.plot(
            frames, videos["cold_s"], marker="x", linestyle=":", color=line.get_color(), label=f"{model} {dtype} cold"
        )
    ax.set_xscale("log", base=2)
    ax.set_xlabel("frames sent")
    ax.set_ylabel("latency (s)")
    ax.legend(fontsize=7)
    _save(figure, layout.latency_png)
    tp = throughput_table(r)
    figure, ax = plt.subplots(figsize=(5.5, 3.4))
    for model, g in tp.groupby("model", sort=True):
        ax.plot(g["in_flight"], g["requests_per_s"], marker="o", label=model)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("requests in flight")
    ax.set_ylabel("requests / s")
    ax.legend(fontsize=7)
    _save(figure, layout.throughput_png)


def write(r: ProfileRecord, layout: ProfileLayout) -> Path:
    """profile.md and the plots, from the record."""
    plots(r, layout)
    atomic_write(layout.md, render(r))
    return layout.md
