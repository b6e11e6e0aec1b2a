"""Where the model looked (`interpret`'s records, in the run folder): the mass of attention on
each region, the paired answers to the reference study's questions, and whether the rebuilt
input was the run's.

Comparisons (B − A, in points of attention mass, paired by question, CIs resampling videos,
the sign-flip test on per-video differences), per model and cue, of the language model's
answer position (mean of layers: the `attention` family; each layer: `layers`) and of the
vision encoder:

- `object`: mass on the asked object's interior, plain (a) vs cued (b): does the cue pull
  attention away from the object?
- `cue`: mass on the stroke's pixels (on plain: where the stroke would be);
- `edge-interior`: attention density (mass / area) on the box edges (b) vs the interior (a),
  on each variant: are the boundaries what is attended (hypothesis 3)?
- `agreement`: the rank correlation of the language and vision maps, plain vs cued
  (hypothesis 2: do they disagree, and does the cue change that?);
- and each of these, adapter (b) vs base (a) on plain clips.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from core.records import AttentionRecord
from core.variants import CUED, PLAIN
from measure.report import stats
from measure.report.tables import ATTENTION, CAUSAL_FAMILY, EXPLORATORY, LAYERS, caveat, holm_words, p_text, points

KEYS = ["question_id", "video_id", "model", "variant", "cue_of", "source", "layer"]
PAIR = [
    "n",
    "videos",
    "videos_changed",
    "mean_a",
    "mean_b",
    "delta",
    "ci_low",
    "ci_high",
    "p_video",
    "p_holm",
    "survives_holm",
    "family",
]
COLUMNS = ["measure", "source", "layer", "model", "base", "cue", "a", "b", *PAIR]


def frame(records: Iterable[AttentionRecord]) -> pd.DataFrame:
    """One row per record x region row."""
    rows = [
        {"question_id": r.question_id, "video_id": r.video_id, "model": r.model, "variant": r.variant} | row
        for r in records
        for row in r.rows
    ]
    return pd.DataFrame(rows)


def regions(df: pd.DataFrame) -> pd.DataFrame:
    """Mean mass (raw and normalised by the generic question), area and video share per model
    x variant x cue x source x region, over the mean of layers."""
    m = df[(df["layer"] == "mean") & (df["source"] != "agreement")]
    cols = ["model", "variant", "cue_of", "source", "region"]
    out = m.groupby(cols, sort=True).agg(
        n=("mass", "size"),
        mass=("mass", "mean"),
        mass_norm=("mass_norm", "mean"),
        area=("area", "mean"),
        video_share=("video_share", "mean"),
    )
    return out.assign(
        mass=100 * out["mass"],
        mass_norm=100 * out["mass_norm"],
        area=100 * out["area"],
        video_share=100 * out["video_share"],
    ).reset_index()


def mass_table(table: pd.DataFrame) -> pd.DataFrame:
    """`regions` as one row per model x variant x cue x source: the mass on each region (pts)."""
    if table.empty:
        return table
    wide = table.pivot_table(
        index=["model", "variant", "cue_of", "source"], columns="region", values="mass", aggfunc="first"
    )
    return wide.rename(columns=lambda c: f"{c} (pts)").reset_index().rename_axis(columns=None)


def areas_line(table: pd.DataFrame) -> str:
    """Each region's mean share of pixels, over the rows of `regions`."""
    if table.empty:
        return "n/a"
    areas = table.groupby("region", sort=True)["area"].mean()
    return ", ".join(f"{region} {area:.1f}" for region, area in areas.items())


def inputs_line(table: pd.DataFrame) -> str:
    """How many rebuilt inputs were the run's (prompt tokens) and gave its reply, over `inputs`."""
    if table.empty:
        return "no rebuilt inputs"
    n = int(table["n"].sum())
    same = float((table["same_input"] * table["n"]).sum() / n)
    agree = float((table["agrees"] * table["n"]).sum() / n)
    return (
        f"rebuilt inputs: {same:.1f} % with the run's prompt tokens, {agree:.1f} % gave the run's reply "
        f"({n} predictions)"
    )


def inputs(records: list[AttentionRecord]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per model x variant: how many rebuilt inputs had the run's prompt length, and how many
    gave the run's reply), and every disagreement, listed."""
    df = pd.DataFrame(
        [{"model": r.model, "variant": r.variant, "same_input": r.same_input, "agrees": r.agrees} for r in records]
    )
    if df.empty:
        return df, df
    table = df.groupby(["model", "variant"]).agg(
        n=("agrees", "size"), same_input=("same_input", "mean"), agrees=("agrees", "mean")
    )
    table[["same_input", "agrees"]] *= 100
    off = [
        {
            "question_id": r.question_id,
            "model": r.model,
            "variant": r.variant,
            "prompt_tokens": r.prompt_tokens,
            "run_prompt_tokens": r.run_prompt_tokens,
            "picked": r.picked,
            "reply": r.reply,
            "margin": r.margin,
        }
        for r in records
        if not (r.same_input and r.agrees)
    ]
    return table.reset_index(), pd.DataFrame(off)


def _values(df: pd.DataFrame, region: str, density: bool = False) -> pd.Series:
    """One value per (question, video, model, variant, cue, source, layer): a region's mass in
    points of attention, or its density (mass share / area share, 1 = uniform)."""
    r = df[df["region"] == region].set_index(KEYS)
    return r["mass"] / r["area"].where(r["area"] > 0) if density else 100 * r["mass"]


def _pair(a: pd.Series, b: pd.Series, labels: dict) -> dict | None:
    if a.empty or b.empty:
        return None
    both = pd.concat([a.rename("a"), b.rename("b")], axis=1, join="inner").dropna()
    if both.empty:
        return None
    videos = both.index.get_level_values("video_id")
    return (
        labels | stats.paired_mean(both["a"], both["b"], videos, seed=stats.seed_for(*sorted(labels.items()))).as_dict()
    )


def _side(values: pd.Series, **where: str) -> pd.Series:
    """The values of one model/variant/cue/source/layer, indexed by question and video."""
    sel = values
    for name, value in where.items():
        if value not in sel.index.get_level_values(name):
            return sel.iloc[:0]  # not asked (a run of plain clips alone has no cued side)
        sel = sel.xs(value, level=name)
    return sel


def comparisons(df: pd.DataFrame, parents: dict[str, str | None]) -> pd.DataFrame:
    """Every paired comparison of the module docstring, one row each."""
    rows = []
    measures = {"object": _values(df, "object"), "cue": _values(df, "cue")}
    agree = 100 * df[df["source"] == "agreement"].set_index(KEYS)["mass"]  # rho, in points
    combos = df[["model", "variant", "cue_of", "source", "layer"]].drop_duplicates().itertuples(index=False)
    for model, variant, cue, source, layer in combos:
        if variant != cue or source == "agreement":
            continue
        family = ATTENTION if layer == "mean" else LAYERS
        labels = {"source": source, "layer": layer, "model": model, "base": None, "cue": cue, "family": family}
        at = dict(model=model, cue_of=cue, source=source, layer=layer)
        for name, values in measures.items():
            row = _pair(
                _side(values, variant=PLAIN, **at),
                _side(values, variant=cue, **at),
                labels | {"measure": name, "a": PLAIN, "b": cue},
            )
            rows += [row] if row else []
    rows += _edges(df, parents) + _agreements(agree) + _adapters(measures, agree, parents)
    out = pd.DataFrame(rows).reindex(columns=COLUMNS)
    return out.sort_values(["family", "measure", "source", "model", "cue", "layer"], kind="stable")


def _edges(df: pd.DataFrame, parents: dict[str, str | None]) -> list[dict]:
    """Edge density (b) vs interior density (a), every model, variant, cue and source."""
    edge, inner = _values(df, "edge", density=True), _values(df, "object", density=True)
    rows = []
    combos = df[df["source"] != "agreement"][["model", "variant", "cue_of", "source", "layer"]].drop_duplicates()
    for model, variant, cue, source, layer in combos.itertuples(index=False):
        if variant not in (PLAIN, cue):
            continue
        at = dict(model=model, variant=variant, cue_of=cue, source=source, layer=layer)
        labels = {
            "measure": "edge-interior",
            "source": source,
            "layer": layer,
            "model": model,
            "base": None,
            "cue": cue,
            "a": f"{variant}: interior",
            "b": f"{variant}: edge",
            "family": ATTENTION if layer == "mean" else LAYERS,
        }
        row = _pair(_side(inner, **at), _side(edge, **at), labels)
        rows += [row] if row else []
    return rows


def _agreements(agree: pd.Series) -> list[dict]:
    """Language-vs-vision rank agreement, plain (a) vs cued (b)."""
    rows = []
    for model, cue in {
        (m, c) for m, c in zip(agree.index.get_level_values("model"), agree.index.get_level_values("cue_of"))
    }:
        at = dict(model=model, cue_of=cue, source="agreement", layer="mean")
        labels = {
            "measure": "agreement",
            "source": "llm-vs-vision",
            "layer": "mean",
            "model": model,
            "base": None,
            "cue": cue,
            "a": PLAIN,
            "b": cue,
            "family": ATTENTION,
        }
        row = _pair(_side(agree, variant=PLAIN, **at), _side(agree, variant=cue, **at), labels)
        rows += [row] if row else []
    return rows


def _adapters(measures: dict[str, pd.Series], agree: pd.Series, parents: dict[str, str | None]) -> list[dict]:
    """Adapter (b) vs its base (a) on plain clips: object and cue mass (mean of layers), agreement."""
    rows = []
    series = {**{name: v for name, v in measures.items()}, "agreement": agree}
    for name, values in series.items():
        idx = values.index
        present = set(
            zip(
                idx.get_level_values("model"),
                idx.get_level_values("cue_of"),
                idx.get_level_values("source"),
                idx.get_level_values("variant"),
                idx.get_level_values("layer"),
            )
        )
        for model, cue, source, variant, layer in sorted(present):
            base = parents.get(model)
            if not base or variant != PLAIN or layer != "mean" or (base, cue, source, variant, layer) not in present:
                continue
            at = dict(variant=PLAIN, cue_of=cue, source=source, layer="mean")
            labels = {
                "measure": name,
                "source": "llm-vs-vision" if name == "agreement" else source,
                "layer": "mean",
                "model": model,
                "base": base,
                "cue": cue,
                "a": f"{base} on plain",
                "b": f"{model} on plain",
                "family": ATTENTION,
            }
            row = _pair(_side(values, model=base, **at), _side(values, model=model, **at), labels)
            rows += [row] if row else []
    return rows


CAUSAL = [
    "model",
    "variant",
    "type",
    "cue",
    "region",
    "method",
    "window",
    "baseline",
    "tokens",
    "region_effect",
    "region_low",
    "region_high",
    "baseline_effect",
    "baseline_low",
    "baseline_high",
    "baseline_spread",
    *PAIR,
]


def declared(labels: dict, baseline: str) -> bool:
    """Whether a causal contrast is one declared before looking: token ablation against random
    tokens, of the object on plain clips' object questions, or of a cue on its own clips."""
    if labels["method"] != "ablation" or labels["window"] != "all" or baseline != "random":
        return False
    if labels["region"] == "object":
        return labels["variant"] == PLAIN and labels["type"] == "object"
    return labels["region"] == "cue" and labels["variant"] == labels["cue_of"] and labels["variant"] in CUED


def causal(records: list[AttentionRecord]) -> pd.DataFrame:
    """`interpret --effects`: per model, variant, question type, region, method and window, the
    change in the right answer's log-probability when the region's tokens are removed (b) vs
    when as many random or highest-norm tokens are (a), paired by question, clustered by video;
    the declared contrasts in the `causal` Holm family, the rest in `causal-exploratory`."""
    df = pd.DataFrame([row for r in records for row in r.effects])
    if df.empty:
        return pd.DataFrame(columns=CAUSAL)
    keys = ["model", "variant", "type", "cue_of", "region", "method", "window"]
    rows = []
    for key, g in df.groupby(keys, sort=True):
        wide = g.pivot_table(index=["question_id", "video_id"], columns="target", values="d_right", aggfunc="first")
        for baseline in ("random", "norm"):
            if {"region", baseline} <= set(wide.columns):
                rows.append(_causal_row(dict(zip(keys, key)), baseline, wide[["region", baseline]].dropna(), g))
    return pd.DataFrame(rows).rename(columns={"cue_of": "cue"}).reindex(columns=CAUSAL)


def _causal_row(labels: dict, baseline: str, both: pd.DataFrame, g: pd.DataFrame) -> dict:
    videos = both.index.get_level_values("video_id")
    seed = stats.seed_for("causal", *sorted(labels.items()), baseline)
    t = stats.paired_mean(both[baseline], both["region"], videos, seed=seed)
    region_ci = stats.bootstrap_ci(both["region"].to_numpy(), videos, seed=seed)
    base_ci = stats.bootstrap_ci(both[baseline].to_numpy(), videos, seed=seed)
    spread = g[g["target"] == baseline]["spread"] if "spread" in g else pd.Series(dtype=float)
    return (
        labels
        | {
            "baseline": baseline,
            "tokens": float(g[g["target"] == "region"]["tokens"].mean()),
            "region_effect": t.mean_b,
            "region_low": region_ci[0],
            "region_high": region_ci[1],
            "baseline_effect": t.mean_a,
            "baseline_low": base_ci[0],
            "baseline_high": base_ci[1],
            "baseline_spread": float(spread.mean()) if len(spread.dropna()) else float("nan"),
            "family": CAUSAL_FAMILY if declared(labels, baseline) else EXPLORATORY,
        }
        | t.as_dict()
    )


def causal_verdicts(table: pd.DataFrame, sizes: dict[str, int]) -> list[str]:
    """One line per declared contrast (the `causal` family); the exploratory ones stay in the table."""
    rows = table.to_dict("records") if not table.empty else []
    return [causal_line(r, sizes) for r in rows if r["family"] == CAUSAL_FAMILY]


def causal_line(r: dict, sizes: dict[str, int]) -> str:
    """A region's removal in words: its effect, the baseline's, and their difference."""
    how = "ablated" if r["method"] == "ablation" else "knocked out (all layers)"
    nats = lambda x: points(x, sign=True, digits=2)  # noqa: E731
    return (
        f"{r['region']} tokens {how}, {r['model']} on {r['variant']} ({r['cue']} regions), {r['type']} questions: "
        f"right answer {nats(r['region_effect'])} nats [{nats(r['region_low'])}, {nats(r['region_high'])}] vs "
        f"{r['baseline']} tokens of the same count from outside it {nats(r['baseline_effect'])} "
        f"[{nats(r['baseline_low'])}, {nats(r['baseline_high'])}]{_spread(r)}: "
        f"difference {nats(r['delta'])} [{nats(r['ci_low'])}, {nats(r['ci_high'])}], "
        f"{holm_words(r, sizes, stats.ALPHA)}; {r['n']} questions, {r['videos']} videos{caveat(r)}"
    )


def _spread(r: dict) -> str:
    spread = r.get("baseline_spread")
    return "" if spread is None or spread != spread else f" (draws spread {spread:.2f} nats)"


SANITY = ["model", "n", "videos", "videos_changed", "redrawn", "trained", "delta", "ci_low", "ci_high", "p_video"]


def _object_density(records: list[AttentionRecord], field: str) -> pd.Series:
    """Object mass / area (1: uniform) of the language model, mean of layers, per question,
    video, variant and cue, from each record's `field` rows."""
    rows = [
        {"question_id": r.question_id, "video_id": r.video_id, "variant": r.variant, "cue_of": x["cue_of"]}
        | {"density": x["mass"] / x["area"] if x["area"] > 0 else float("nan")}
        for r in records
        for x in getattr(r, field)
        if x["source"] == "llm" and x["layer"] == "mean" and x["region"] == "object"
    ]
    return pd.DataFrame(rows).set_index(["question_id", "video_id", "variant", "cue_of"])["density"]


def sanity(records: list[AttentionRecord]) -> pd.DataFrame:
    """The model-randomisation test (Adebayo et al. 2018), per model with a redrawn twin: object
    density on object questions with its weights (b) vs with them redrawn (a), same inputs,
    paired by question, variant and cue, clustered by video."""
    rows = []
    for model in sorted({r.model for r in records if r.redrawn}):
        mine = [r for r in records if r.model == model and r.redrawn]
        both = pd.concat(
            [_object_density(mine, "redrawn").rename("a"), _object_density(mine, "rows").rename("b")],
            axis=1,
            join="inner",
        ).dropna()
        if both.empty:
            continue
        videos = both.index.get_level_values("video_id")
        t = stats.paired_mean(both["a"], both["b"], videos, seed=stats.seed_for("sanity", model))
        rows.append({"model": model, "redrawn": t.mean_a, "trained": t.mean_b} | t.as_dict())
    return pd.DataFrame(rows).reindex(columns=SANITY)


def sanity_lines(table: pd.DataFrame) -> list[str]:
    """Each model's sanity check in words."""
    lines = []
    for r in table.to_dict("records"):
        passed = r["p_video"] < stats.ALPHA
        lines.append(
            f"sanity (model randomisation, Adebayo et al. 2018), {r['model']}: object density (attention mass / "
            f"area on the asked object, object questions, language model, mean of layers; 1 = uniform) "
            f"{r['trained']:.2f} with its weights vs {r['redrawn']:.2f} redrawn: "
            f"{points(r['delta'], sign=True, digits=2)} [{points(r['ci_low'], digits=2)}, "
            f"{points(r['ci_high'], digits=2)}], p {p_text(r['p_video'])}; "
            + (
                "the maps depend on the weights"
                if passed
                else "NOT shown to depend on the weights: these maps may not explain this model"
            )
            + f"; {r['n']} maps, {r['videos']} videos{caveat(r | {'p_holm': r['p_video']})}"
        )
    return lines


def sanity_summary(table: pd.DataFrame) -> list[str]:
    """The sanity checks in one sentence: which models' maps depend on their weights."""
    if table.empty:
        return []
    passed = table["p_video"] < stats.ALPHA
    said = []
    if passed.any():
        said.append(f"depend on the weights for {', '.join(table[passed]['model'])}")
    if (~passed).any():
        said.append(f"are NOT shown to for {', '.join(table[~passed]['model'])} (they may not explain it)")
    return [f"Attention maps (sanity check, weights vs redrawn): they {' and '.join(said)}."]


def agreement(records: list[AttentionRecord]) -> tuple[str, str]:
    """("k/n (p %)" of rebuilt inputs with the run's prompt length, the same for the run's reply)."""

    def rate(k: int) -> str:
        return f"{k}/{len(records)} ({100 * k / max(len(records), 1):.1f} %)"

    return rate(sum(r.same_input for r in records)), rate(sum(r.agrees for r in records))


WHAT = {
    "object": "attention on the object",
    "cue": "attention on the cue's pixels",
    "edge-interior": "edge vs interior density",
    "agreement": "language-vision agreement (rho x 100)",
}
UNITS = {
    "object": "pts of attention",  # points of the answer's attention to the video
    "cue": "pts of attention",
    "edge-interior": "density (1 = uniform)",  # mass share / area share
    "agreement": "rho x 100",
}


def verdicts(pairs: pd.DataFrame, sizes: dict[str, int]) -> list[str]:
    """Verdict lines of the attention family's language-model and agreement rows (the vision
    encoder's stay in the table)."""
    rows = pairs.to_dict("records") if not pairs.empty else []
    return [verdict(r, sizes) for r in rows if r["family"] == ATTENTION and r["source"] != "vision"]


def verdict(row: dict, sizes: dict[str, int]) -> str:
    """One attention comparison in words, backed by the numbers of its row."""
    what = WHAT
    side = "" if isinstance(row["base"], str) else f"{row['model']}, "
    cue = row["cue"]
    partition = "" if cue in (row["a"], row["b"]) else f" (regions of the {cue} cue)"
    return (
        f"{what[row['measure']]}, {row['b']} vs {row['a']}{partition}, {side}{row['source']}: "
        f"{points(row['delta'], sign=True, digits=2)} {UNITS[row['measure']]} [{points(row['ci_low'], digits=2)}, "
        f"{points(row['ci_high'], digits=2)}], "
        f"{holm_words(row, sizes, stats.ALPHA)}; {row['n']} questions, {row['videos']} videos{caveat(row)}"
    )
