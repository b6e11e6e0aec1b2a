"""A profile's figures, computed from what was measured (`ProfiledModel`), and the targets
they are held to: a CSV the user passes (figure, at_most, at_least, source), the SmolVLM2
test plan's as the example (`measure/references/smolvlm2_test_plan_targets.csv`)."""

from __future__ import annotations

import csv
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

from core.errors import DataError
from core.runfiles import ProfiledModel

GIB = 1024**3
TARGET_COLUMNS = ("figure", "at_most", "at_least", "source")


def _median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def _mode_share(replies: list[str]) -> float | None:
    return 100 * Counter(replies).most_common(1)[0][1] / len(replies) if replies else None


def answered(row: dict[str, Any]) -> list[tuple[float, str]]:
    """(seconds, reply) of a latency row's requests that were answered."""
    return [(s, r) for s, r in zip(row["seconds"], row["replies"]) if r is not None]


def kind_figures(row: dict[str, Any]) -> dict[str, float | None]:
    """Cold: the first request of the kind (None if it failed); warm: the median of the others."""
    first = row["replies"][0] is not None
    warm = [s for s, r in zip(row["seconds"][1:], row["replies"][1:]) if r is not None]
    peak = row["peak_rss_bytes"]
    return {
        "cold_s": row["seconds"][0] if first else None,
        "warm_s": _median(warm),
        "peak_rss_gib": peak / GIB if peak else None,
        "prompt_tokens": _median([t for t in row["prompt_tokens"] if t is not None]),
    }


def agreement(m: ProfiledModel, dtype: str) -> tuple[int, int]:
    """(same replies, pairs): the first dtype's replies against `dtype`'s, request by request."""
    first = {(r["kind"], i): x for r in m.latency if r["dtype"] == m.dtypes[0] for i, x in enumerate(r["replies"])}
    other = {(r["kind"], i): x for r in m.latency if r["dtype"] == dtype for i, x in enumerate(r["replies"])}
    pairs = [(first[k], other[k]) for k in first if k in other and first[k] is not None and other[k] is not None]
    return sum(a == b for a, b in pairs), len(pairs)


def figures(m: ProfiledModel) -> dict[str, float | None]:
    """Every named figure of one model's profile (the names a targets file uses)."""
    main = m.dtypes[0]
    out: dict[str, float | None] = {"ready_s": m.ready[main]["ready_s"]}
    peaks = []
    for row in m.latency:
        if row["dtype"] != main:
            continue
        k = kind_figures(row)
        out[f"latency_cold_s.{row['kind']}"] = k["cold_s"]
        out[f"latency_warm_s.{row['kind']}"] = k["warm_s"]
        out[f"peak_rss_gib.{row['kind']}"] = k["peak_rss_gib"]
        peaks += [k["peak_rss_gib"]] if k["peak_rss_gib"] else []
    out["peak_rss_gib"] = max(peaks) if peaks else None
    for row in m.throughput:
        out[f"throughput_rps.{row['in_flight']}"] = row["requests"] / row["seconds"]
    out["throughput_rps"] = max((row["requests"] / row["seconds"] for row in m.throughput), default=None)
    s = m.session
    if s.get("rss_after_n_bytes") and s.get("rss_after_10n_bytes"):
        out["session_growth_pct"] = 100 * (s["rss_after_10n_bytes"] / s["rss_after_n_bytes"] - 1)
    for name, replies in m.repeats.items():
        key = "temperature0" if name == "temperature 0" else "seeded" if "seed " in name else "unseeded"
        out[f"{key}_identical_pct"] = _mode_share(replies)
    for dtype in m.dtypes[1:]:
        same, pairs = agreement(m, dtype)
        out[f"dtype_agreement_pct.{dtype}"] = 100 * same / pairs if pairs else None
    if m.edges:
        out["edges_server_alive_pct"] = 100 * sum(e["alive"] for e in m.edges) / len(m.edges)
    return out


def read_targets(path: Path) -> list[dict[str, Any]]:
    """A targets CSV's rows (figure, at_most, at_least, source; either bound may be empty);
    DataError naming the file and row of a bad one."""
    try:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in TARGET_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise DataError(f"{path}: no column {', '.join(missing)} (the columns: {', '.join(TARGET_COLUMNS)})")
            rows = []
            for i, row in enumerate(reader, start=2):
                bounds = {}
                for bound in ("at_most", "at_least"):
                    text = (row[bound] or "").strip()
                    try:
                        bounds[bound] = float(text) if text else None
                    except ValueError:
                        raise DataError(f"{path}, row {i}: {bound} {text!r} is not a number") from None
                if not (row["figure"] or "").strip() or bounds == {"at_most": None, "at_least": None}:
                    raise DataError(f"{path}, row {i}: a target names a figure and at least one bound")
                rows.append({"figure": row["figure"].strip(), **bounds, "source": (row["source"] or "").strip()})
            return rows
    except OSError as e:
        raise DataError(f"{path}: {e.strerror}") from None


def verdict(value: float | None, target: dict[str, Any]) -> str:
    """met / not met / not measured."""
    if value is None:
        return "not measured"
    low, high = target["at_least"], target["at_most"]
    return "met" if (low is None or value >= low) and (high is None or value <= high) else "NOT met"


def bounds(target: dict[str, Any]) -> str:
    low, high = target["at_least"], target["at_most"]
    return " and ".join(
        x for x in (f">= {low:g}" if low is not None else "", f"<= {high:g}" if high is not None else "") if x
    )
