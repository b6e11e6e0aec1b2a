"""Every paired test of a report as one row of one table (the ledger): what was compared, in
which unit, the difference with its interval, Holm's verdict within the family, and the one
reason (if any) not to take the interval at its word. The report's family tables, its counts
and comparisons.csv are all read from it, so they cannot disagree."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pandas as pd

from measure.report import stats
from measure.report.attention import UNITS, WHAT
from measure.report.tables import FAMILIES, adapter_label, against_plain_label, open_adapter_label, points

COLUMNS = [
    "family",
    "comparison",
    "unit",
    "delta",
    "ci_low",
    "ci_high",
    "p_video",
    "p_holm",
    "significant",
    "n",
    "videos",
    "videos_changed",
    "caution",
]
POINTS = "pts"  # points of accuracy (percentage points)
NATS = "nats"  # of the right answer's log-probability


def _audit(r: Mapping) -> str:
    return f"{r['control']} vs plain, {r['type']}, {r['model']}"


def _blind_wrong(r: Mapping) -> str:
    return f"{r['variant']} vs plain where blind is wrong, {r['type']}, {r['model']}"


def _open_audit(r: Mapping) -> str:
    return f"{r['control']} vs plain, open {r['category']}, {r['model']}, judge {r['judge']}"


def attention_label(r: Mapping) -> str:
    """An attention comparison in a few words (the same words as its verdict line)."""
    side = "" if isinstance(r["base"], str) else f", {r['model']}"
    partition = "" if r["cue"] in (r["a"], r["b"]) else f" ({r['cue']} regions)"
    layer = "" if r["layer"] == "mean" else f", layer {r['layer']}"
    sides = f"on {r['a'].split(':')[0]}" if r["measure"] == "edge-interior" else f"{r['b']} vs {r['a']}"
    return f"{WHAT[r['measure']]}, {sides}{partition}{side}, {r['source']}{layer}"


def causal_label(r: Mapping) -> str:
    """A region's removal in a few words."""
    how = "ablated" if r["method"] == "ablation" else f"knocked out ({r['window']})"
    return (
        f"{r['region']} tokens {how} vs {r['baseline']} tokens, {r['model']} on {r['variant']} "
        f"({r['cue']} regions), {r['type']}"
    )


KINDS: dict[str, tuple[Callable[[Mapping], str], Callable[[Mapping], str]]] = {
    "cued": (against_plain_label, lambda r: POINTS),
    "adapters": (adapter_label, lambda r: POINTS),
    "audit": (_audit, lambda r: POINTS),
    "blind_wrong": (_blind_wrong, lambda r: POINTS),
    "open_adapters": (open_adapter_label, lambda r: POINTS),
    "open_audit": (_open_audit, lambda r: POINTS),
    "interventions": (against_plain_label, lambda r: POINTS),
    "attention": (attention_label, lambda r: UNITS[r["measure"]]),
    "causal": (causal_label, lambda r: NATS),
}


def caution(r: Mapping, alpha: float = stats.ALPHA) -> str:
    """The one reason not to take a row's interval at its word, in a few words ('' if none)."""
    k = r.get("videos_changed")
    if k is not None and k == k and k < stats.MIN_CHANGED:
        return f"{'none' if k == 0 else int(k)} of {r['videos']} videos changed: too few for a test or an interval"
    excludes = r["ci_low"] > 0 or r["ci_high"] < 0
    if excludes and r["p_video"] >= alpha:
        return "interval excludes 0, exact test does not: trust the test"
    if not excludes and r["p_video"] < alpha:
        return "test rejects, interval holds 0 (approximate at its edge)"
    if r["p_video"] < alpha <= r["p_holm"]:
        return "significant before Holm only"
    return ""


def ledger(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per test of the `tables` (named as in KINDS), families in report order, each
    family sorted by evidence (Holm's p, then the size of the difference)."""
    rows = []
    for kind, table in tables.items():
        if table.empty or "p_holm" not in table:
            continue
        label, unit = KINDS[kind]
        for r in table.to_dict("records"):
            rows.append(
                {
                    "family": r["family"],
                    "comparison": label(r),
                    "unit": unit(r),
                    **{k: r[k] for k in ("delta", "ci_low", "ci_high", "p_video", "p_holm", "n", "videos")},
                    "videos_changed": r.get("videos_changed"),
                    "significant": bool(r["survives_holm"]),
                    "caution": caution(r),
                }
            )
    if not rows:
        return pd.DataFrame(columns=COLUMNS)
    t = pd.DataFrame(rows, columns=COLUMNS)
    order = {name: i for i, name in enumerate(FAMILIES)}
    t = t.assign(_f=t["family"].map(lambda f: order.get(f, len(order))), _size=-t["delta"].abs())
    t = t.sort_values(["_f", "p_holm", "_size", "comparison"], kind="stable")
    return t.drop(columns=["_f", "_size"]).reset_index(drop=True)


def counts(t: pd.DataFrame) -> dict[str, tuple[int, int]]:
    """Per family: (tests significant after Holm, tests)."""
    return {str(family): (int(g["significant"].sum()), len(g)) for family, g in t.groupby("family", sort=False)}


DIGITS = {POINTS: 1, "rho x 100": 1}  # decimals per unit (nats, attention and density: 2)


def p_cell(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"{p:.3f}" if p < 0.1 else f"{p:.2f}"


def compact(t: pd.DataFrame) -> pd.DataFrame:
    """Ledger rows as a report prints them: the difference and its interval in the row's unit
    (named in the header when the rows share one), Holm's p, and the reason to be careful."""
    if t.empty:
        return pd.DataFrame()
    units = list(dict.fromkeys(t["unit"]))
    digits = [DIGITS.get(u, 2) for u in t["unit"]]
    one = len(units) == 1
    return pd.DataFrame(
        {
            "comparison": list(t["comparison"]),
            f"difference ({units[0]})" if one else "difference": [
                points(d, sign=True, digits=k) for d, k in zip(t["delta"], digits)
            ],
            "95 % CI": [
                f"[{points(a, digits=k)}, {points(b, digits=k)}]" for a, b, k in zip(t["ci_low"], t["ci_high"], digits)
            ],
            **({} if one else {"unit": list(t["unit"])}),
            "p (Holm)": [p_cell(p) for p in t["p_holm"]],
            "significant": ["yes" if x else "no" for x in t["significant"]],
            "caution": list(t["caution"]),
        }
    )
