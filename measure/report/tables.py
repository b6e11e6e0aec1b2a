"""Report tables, each a function of scored predictions (the whole report: `measure.report.build`;
rendering and files: `measure.report.render`).

Sections: one verdict line per comparison; the reference table; cued − plain and adapter −
base on the same questions (`measure.report.stats`: CIs resample videos, p_video flips per-video
differences, p_mcnemar tests questions, p_holm corrects p_video over every test of the
report, mde at 80 % power); largest per-template gains and losses; answer-position bias.
Errors are left out of every denominator and counted apart.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from math import isfinite

import numpy as np
import pandas as pd

from core.prompt import LETTERS
from core.records import PROBE, TEXT_PROBES, Prediction
from core.variants import AUDIT_CONTROLS, BLIND, CUED, INTERVENTIONS, PLAIN, REVERSED, SHUFFLED
from measure.report import stats

TABLE_COLUMNS = ["object_acc", "verb_acc", "overall_acc", "n", "invalid", "errors"]
TYPES = ("object", "verb", PROBE, "all")
AUDIT_MARGIN = 5.0  # points: blind this close to plain means the type does not measure vision
PAIR_COLUMNS = (
    "n videos videos_changed acc_a acc_b delta ci_low ci_high only_a only_b p_mcnemar p_video p_holm survives_holm "
    "mde deff family".split()
)
# Holm corrects within a family, each row says which: `primary` is what a study declares
# (cued vs plain, adapter vs base on plain clips); `secondary` the rest of the accuracy tests
# (the adapter on other clips, the controls and their audit, interventions, open questions);
# `attention` where the model looked (means over layers); `layers` the same per layer; `causal`
# what a region's tokens do when removed inside the model.
PRIMARY, SECONDARY, ATTENTION, LAYERS = "primary", "secondary", "attention", "layers"
# What a region does: its tokens removed inside the model (`interpret --effects`). `causal` holds
# the contrasts declared before looking (per model: the object's tokens vs random ones on plain
# object questions; each cue's tokens vs random ones on its clips), `causal-exploratory` the rest.
CAUSAL_FAMILY, EXPLORATORY = "causal", "causal-exploratory"
FAMILIES = (PRIMARY, SECONDARY, ATTENTION, LAYERS, CAUSAL_FAMILY, EXPLORATORY)


def to_frame(predictions: Iterable[Prediction]) -> pd.DataFrame:
    df = pd.DataFrame([vars(p) for p in predictions])  # shallow: asdict's deep copies dominate a report
    if df.empty:
        return pd.DataFrame(columns=[f for f in Prediction.__dataclass_fields__])
    df["correct"] = df["correct"].astype(bool)
    df["answer_pos"] = [c.index(a) if a in c else -1 for c, a in zip(df["choices"], df["answer"])]
    df["pred_pos"] = [c.index(r) if r in c else -1 for c, r in zip(df["choices"], df["reply"])]
    return df


def accuracy_table(df: pd.DataFrame) -> pd.DataFrame:
    """model x variant -> accuracy (%) per question type and overall; `n` counts scored rows
    (errors excluded), invalid replies count as wrong and are counted apart too."""
    rows = []
    for (model, variant), g in df.groupby(["model", "variant"], sort=True):
        scored = g[g["status"] != "error"]
        row = {"model": model, "variant": variant}
        for qtype in ("object", "verb"):
            s = scored[scored["type"] == qtype]
            row[f"{qtype}_acc"] = 100 * s["correct"].mean() if len(s) else float("nan")
        row["overall_acc"] = 100 * scored["correct"].mean() if len(scored) else float("nan")
        row["n"] = len(scored)
        row["invalid"] = int((g["status"] == "invalid").sum())
        row["errors"] = int((g["status"] == "error").sum())
        rows.append(row)
    return pd.DataFrame(rows, columns=["model", "variant", *TABLE_COLUMNS]).set_index(["model", "variant"])


def _scored(df: pd.DataFrame, model: str, variant: str) -> pd.DataFrame:
    g = df[(df["model"] == model) & (df["variant"] == variant) & (df["status"] != "error")]
    return g.set_index("question_id")


def _pairs(df: pd.DataFrame, a: tuple[str, str], b: tuple[str, str]) -> pd.DataFrame:
    """Rows scored on both sides, joined on question: columns correct_a, correct_b, video_id,
    type, template, verb."""
    left, right = _scored(df, *a), _scored(df, *b)
    return (
        left[["correct", "video_id", "type", "template", "verb"]]
        .rename(columns={"correct": "correct_a"})
        .join(right[["correct"]].rename(columns={"correct": "correct_b"}), how="inner")
    )


@dataclass(frozen=True)
class Pairing:
    """One paired comparison before its statistics: side `a` vs side `b` (model, variant) on
    the questions of `frame` both scored, labelled as its report rows are."""

    table: str  # the report table its rows go to
    labels: dict
    a: tuple[str, str]
    b: tuple[str, str]
    frame: pd.DataFrame = field(repr=False)

    def by_type(self) -> Iterator[tuple[str, pd.DataFrame]]:
        """(type, its joined pairs) for every question type with pairs, and all types."""
        joined = _pairs(self.frame, self.a, self.b)
        for qtype in TYPES:
            j = joined if qtype == "all" else joined[joined["type"] == qtype]
            if len(j):
                yield qtype, j

    def seed(self, qtype: str) -> int:
        return stats.seed_for(*sorted(self.labels.items()), qtype)

    def parts(self) -> Iterator[tuple[str, pd.DataFrame, int]]:
        """(question type, its joined pairs, its seed) per type with pairs, and all types."""
        for qtype, j in self.by_type():
            yield qtype, j, self.seed(qtype)


def _compare(pairing: Pairing) -> list[dict]:
    return [
        pairing.labels
        | {"type": qtype}
        | stats.paired(j["correct_a"], j["correct_b"], j["video_id"], seed=pairing.seed(qtype)).as_dict()
        for qtype, j in pairing.by_type()
    ]


def _rows(pairings: list[Pairing]) -> list[dict]:
    return [row for p in pairings for row in _compare(p)]


def cued_pairings(df: pd.DataFrame) -> list[Pairing]:
    return _against_plain(df, CUED, PRIMARY, "cued_vs_plain")


def adapter_pairings(df: pd.DataFrame, parents: dict[str, str | None]) -> list[Pairing]:
    """Each adapter vs its base, per variant both were asked (primary on plain clips)."""
    present = set(zip(df["model"], df["variant"]))
    return [
        Pairing(
            "adapter_vs_base",
            {
                "adapter": model,
                "base": parents[model],
                "variant": variant,
                "family": PRIMARY if variant == PLAIN else SECONDARY,
            },
            (parents[model], variant),
            (model, variant),
            df,
        )
        for model, variant in sorted(present)
        if parents.get(model) and (parents[model], variant) in present
    ]


def comparisons(df: pd.DataFrame, parents: dict[str, str | None]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(cued − plain per model, variant, type), (adapter − base per variant, type)."""
    return (
        pd.DataFrame(_rows(cued_pairings(df)), columns=["model", "variant", "type", *PAIR_COLUMNS]),
        pd.DataFrame(
            _rows(adapter_pairings(df, parents)), columns=["adapter", "base", "variant", "type", *PAIR_COLUMNS]
        ),
    )


def audit_pairings(df: pd.DataFrame) -> list[Pairing]:
    """Plain vs each audit control (blind, single-frame), per model."""
    present = set(zip(df["model"], df["variant"]))
    return [
        Pairing(
            "audit", {"model": model, "control": control, "family": SECONDARY}, (model, PLAIN), (model, control), df
        )
        for model in sorted(df["model"].unique())
        for control in AUDIT_CONTROLS
        if {(model, PLAIN), (model, control)} <= present
    ]


def audit(df: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Shortcut audit per model x type: plain vs blind and vs single-frame on the same
    questions, and a warning wherever blind accuracy is within AUDIT_MARGIN of plain."""
    rows, warnings = [], []
    for pairing in audit_pairings(df):
        model, control = pairing.labels["model"], pairing.labels["control"]
        for r in _compare(pairing):
            r["text_solvable"] = control == BLIND and r["acc_b"] >= r["acc_a"] - AUDIT_MARGIN
            rows.append(r)
            if r["text_solvable"] and r["type"] != "all":
                warnings.append(
                    f"WARNING: {model}, {r['type']} questions: blind {r['acc_b']:.1f} % vs plain "
                    f"{r['acc_a']:.1f} % (n={r['n']}): within {AUDIT_MARGIN:g} points, so this question type "
                    "does not measure vision."
                )
    cols = ["model", "control", "type", *PAIR_COLUMNS, "text_solvable"]
    return pd.DataFrame(rows, columns=cols), warnings


def blind_wrong_pairings(df: pd.DataFrame) -> list[Pairing]:
    """Cued vs plain on the questions the blind control (same model) gets wrong."""
    present = set(zip(df["model"], df["variant"]))
    out = []
    for model, variant in sorted(present):
        if variant not in CUED or not {(model, PLAIN), (model, BLIND)} <= present:
            continue
        blind = _scored(df, model, BLIND)
        sub = df[df["question_id"].isin(set(blind.index[~blind["correct"]]))]
        out.append(
            Pairing(
                "cued_where_blind_fails",
                {"model": model, "variant": variant, "family": SECONDARY},
                (model, PLAIN),
                (model, variant),
                sub,
            )
        )
    return out


def cued_where_blind_fails(df: pd.DataFrame) -> pd.DataFrame:
    """Cued − plain restricted to the questions the blind control (same model) gets wrong."""
    return pd.DataFrame(_rows(blind_wrong_pairings(df)), columns=["model", "variant", "type", *PAIR_COLUMNS])


def intervention_pairings(df: pd.DataFrame) -> list[Pairing]:
    return _against_plain(df, INTERVENTIONS, SECONDARY, "interventions")


def interventions(df: pd.DataFrame) -> pd.DataFrame:
    """Plain (a) vs each intervention (b: objects masked, context masked, the cue alone) per
    model and type, on the same questions: where the evidence for the answer is."""
    return pd.DataFrame(_rows(intervention_pairings(df)), columns=["model", "variant", "type", *PAIR_COLUMNS])


def _against_plain(df: pd.DataFrame, variants: Sequence[str], family: str, table: str) -> list[Pairing]:
    """Plain (a) vs each of `variants` (b), per model, where both were asked."""
    present = set(zip(df["model"], df["variant"]))
    return [
        Pairing(table, {"model": model, "variant": variant, "family": family}, (model, PLAIN), (model, variant), df)
        for model, variant in sorted(present)
        if variant in variants and (model, PLAIN) in present
    ]


def accuracy_pairings(df: pd.DataFrame, parents: dict[str, str | None]) -> list[Pairing]:
    """Every paired accuracy comparison of the report (closed questions), as the report makes them."""
    return (
        cued_pairings(df)
        + adapter_pairings(df, parents)
        + audit_pairings(df)
        + blind_wrong_pairings(df)
        + intervention_pairings(df)
    )


def arrow_of_time(df: pd.DataFrame) -> pd.DataFrame:
    """Forward/backward accuracy and F1 per category against chance (50 %), and the temporal
    divergence: mean KL between a video's answer distributions on its forward and reversed
    clip (needs per-choice probabilities: --answer-format letters)."""
    a = df[(df["type"] == "arrow") & (df["status"] != "error")].copy()
    if a.empty:
        return pd.DataFrame()
    a["category"] = a["category"].replace("", "unknown")
    a["source"] = a["question_id"].str.rsplit("-", n=1).str[0]
    rows = []
    for (model, variant), g in a.groupby(["model", "variant"], sort=True):
        for cat in ["all", *sorted(g["category"].unique())]:
            c = g if cat == "all" else g[g["category"] == cat]
            truth, pred = list(c["answer"]), [r if r in ("forward", "backward") else None for r in c["reply"]]
            kls = []
            for _, pair in c.groupby("source"):
                probs = dict(zip(pair["answer"], pair["probs"]))
                if isinstance(probs.get("forward"), dict) and isinstance(probs.get("backward"), dict):
                    kls.append(stats.kl(probs["forward"], probs["backward"]))
            rows.append(
                {
                    "model": model,
                    "variant": variant,
                    "category": cat,
                    "n": len(c),
                    "accuracy": 100 * c["correct"].mean(),
                    "chance": 50.0,
                    "forward_f1": 100 * stats.f1(truth, pred, "forward"),
                    "backward_f1": 100 * stats.f1(truth, pred, "backward"),
                    "temporal_kl": sum(kls) / len(kls) if kls else float("nan"),
                    "kl_pairs": len(kls),
                }
            )
    return pd.DataFrame(rows)


FLIPPING_PROBES = ("order", "direction", "change")  # kinds whose answer time reversal changes (count: it does not)


def temporal_probes(df: pd.DataFrame) -> pd.DataFrame:
    """Per model x probe kind: accuracy on plain clips against chance; on reversed clips,
    accuracy as scored, against the reversed clip's own answer (`reversed_answer`: first/last,
    left/right, up/down and start/end swap, a count stays), the share still given the forward answer, and
    how often the reply changed from plain's (expected: all for kinds that flip, none for
    count); on shuffled clips, accuracy (expected: chance for order, direction and count); the
    textual probes (`prepare probes --text`, subset "text": the clip told as a story, no video)."""
    p = df[(df["type"] == PROBE) & (df["status"] != "error")]
    rows = []
    for (model, kind), g in p.groupby(["model", "category"], sort=True):
        plain = g[g["variant"] == PLAIN].set_index("question_id")
        row = {
            "model": model,
            "kind": kind,
            "n": g["question_id"].nunique(),
            "chance": 100 * float(np.mean([1 / len(c) for c in g["choices"]])),
            "plain_acc": 100 * plain["correct"].mean() if len(plain) else float("nan"),
        }
        rev = g[g["variant"] == REVERSED].set_index("question_id")
        if len(rev):
            row["expected_reversed"] = "flips" if kind in FLIPPING_PROBES else "same"
            row["reversed_acc"] = 100 * rev["correct"].mean()
            row["reversed_as_forward"] = 100 * (rev["reply"] == rev["answer"]).mean()
            both = plain[["reply"]].join(rev[["reply"]].rename(columns={"reply": "reply_rev"}), how="inner")
            row["answer_flips"] = 100 * (both["reply"] != both["reply_rev"]).mean() if len(both) else float("nan")
        shuffled = g[g["variant"] == SHUFFLED]
        if len(shuffled):
            row["shuffled_acc"] = 100 * shuffled["correct"].mean()
        text = g[(g["variant"] == BLIND) & (g["subset"] == TEXT_PROBES)]
        if len(text):
            row["text_acc"] = 100 * text["correct"].mean()
        rows.append(row)
    cols = [
        "model",
        "kind",
        "n",
        "chance",
        "plain_acc",
        "reversed_acc",
        "reversed_as_forward",
        "answer_flips",
        "expected_reversed",
        "shuffled_acc",
        "text_acc",
    ]
    return pd.DataFrame(rows).reindex(columns=cols).dropna(axis=1, how="all") if rows else pd.DataFrame()


def per_template(df: pd.DataFrame) -> pd.DataFrame:
    """Accuracy per model x variant x template (and its verb)."""
    scored = df[df["status"] != "error"]
    g = scored.groupby(["model", "variant", "template", "verb"])["correct"]
    return pd.DataFrame({"n": g.size(), "acc": 100 * g.mean()}).reset_index()


def template_moves(df: pd.DataFrame, parents: dict[str, str | None], top: int = 5) -> pd.DataFrame:
    """The largest gains and losses per template and per verb, from cues (vs plain) and
    from adapters (vs base), on the same questions."""
    present = set(zip(df["model"], df["variant"]))
    pairs = [
        (f"{m}: {v} − plain", (m, PLAIN), (m, v)) for m, v in sorted(present) if v in CUED and (m, PLAIN) in present
    ]
    pairs += [
        (f"{m} − {parents[m]} ({v})", (parents[m], v), (m, v))
        for m, v in sorted(present)
        if parents.get(m) and (parents[m], v) in present
    ]
    rows = []
    for label, a, b in pairs:
        j = _pairs(df, a, b)
        for level in ("template", "verb"):
            for key, t in j.groupby(level):
                rows.append(
                    {
                        "level": level,
                        "comparison": label,
                        "group": key,
                        "n": len(t),
                        "delta": 100 * (t["correct_b"].mean() - t["correct_a"].mean()),
                    }
                )
    cols = ["kind", "level", "comparison", "group", "n", "delta"]
    moves = pd.DataFrame(rows, columns=cols[1:])
    if moves.empty:
        return pd.DataFrame(columns=cols)
    out = []
    for _, m in moves.groupby("level", sort=True):
        ranked = m.sort_values(["delta", "n", "comparison", "group"], ascending=[False, False, True, True])
        gains = ranked.head(top).assign(kind="gain")
        losses = ranked.tail(top).iloc[::-1].assign(kind="loss")
        out += [gains[gains["delta"] > 0], losses[losses["delta"] < 0]]
    return pd.concat(out)[cols].drop_duplicates()


def positions(df: pd.DataFrame) -> pd.DataFrame:
    """Per model x variant: accuracy by answer position and the share of each predicted position."""
    scored = df[df["status"] != "error"]
    rows = []
    for (model, variant), g in scored.groupby(["model", "variant"], sort=True):
        row = {"model": model, "variant": variant}
        slots = range(int(g["choices"].map(len).max()))
        for k in slots:
            at = g[g["answer_pos"] == k]
            row[f"acc_when_answer_{LETTERS[k]}"] = 100 * at["correct"].mean() if len(at) else float("nan")
        for k in slots:
            row[f"predicted_{LETTERS[k]}"] = 100 * (g["pred_pos"] == k).mean()
        rows.append(row)
    return pd.DataFrame(rows)


def holm_adjust(tables: list[pd.DataFrame]) -> list[pd.DataFrame]:
    """The tables with p_holm (p_video Holm-adjusted over every test of its `family`, across
    all the tables) and survives_holm (p_holm < ALPHA); a table without tests stays as it is."""
    tested = [t for t in tables if "p_video" in t and len(t)]
    p = np.concatenate([t["p_video"].to_numpy(dtype=float) for t in tested]) if tested else np.array([])
    family = np.concatenate([t["family"].to_numpy(dtype=object) for t in tested]) if tested else np.array([])
    adjusted = np.empty(len(p))
    for name in set(family):
        adjusted[family == name] = stats.holm(p[family == name])
    out, start = [], 0
    for t in tables:
        if t is not None and "p_video" in t and len(t):
            part = adjusted[start : start + len(t)]
            t = t.assign(p_holm=part, survives_holm=part < stats.ALPHA)
            start += len(t)
        out.append(t)
    return out


def family_sizes(tables: list[pd.DataFrame]) -> dict[str, int]:
    """How many tests each Holm family holds."""
    counts = {name: 0 for name in FAMILIES}
    for t in tables:
        if "family" in t and len(t):
            for name, n in t["family"].value_counts().items():
                counts[name] = counts.get(name, 0) + int(n)
    return {k: v for k, v in counts.items() if v}


def p_text(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"= {p:.2g}" if p < 0.1 else f"= {p:.2f}"


def points(x: float, sign: bool = False, digits: int = 1) -> str:
    return (f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}").replace("-", "−")


def holm_words(row: Mapping, sizes: Mapping[str, int], alpha: float) -> str:
    """Whether a comparison survives Holm, and in which family of how many tests."""
    family = row.get("family")
    within = f" in the {family} family of {sizes[family]}" if family in sizes else ""
    if row["p_holm"] < alpha:
        return f"significant after Holm{within} (p {p_text(row['p_holm'])})"
    if row["p_video"] < alpha:
        return (
            f"significant before correction (p {p_text(row['p_video'])}) but not after Holm{within} "
            f"(p {p_text(row['p_holm'])})"
        )
    return f"not significant after Holm{within} (p {p_text(row['p_holm'])})"


def verdict(label: str, row: Mapping, sizes: Mapping[str, int] = {}, alpha: float = stats.ALPHA) -> str:
    """One comparison in words, every word backed by a number of the row: the delta and
    its cluster CI, whether it survives Holm at `alpha` (in its family), and the effect it
    could have found."""
    test = holm_words(row, sizes, alpha)
    changed = row["only_a"] + row["only_b"]
    note = caveat(row)
    if isfinite(row["mde"]):
        mde = f", MDE {points(row['mde'])} pts"
    elif note:
        mde = ""  # the caveat says why there is none
    else:
        mde = f", MDE n/a: {f'only {changed} of' if changed else 'none of the'} {row['n']} answers changed"
    return (
        f"{label}: {points(row['delta'], sign=True)} pts [{points(row['ci_low'])}, {points(row['ci_high'])}], "
        f"{test}{mde}; {row['n']} questions, {row['videos']} videos{note}"
    )


def caveat(row: Mapping, alpha: float = stats.ALPHA) -> str:
    """What a reader must know when the interval cannot be trusted or says otherwise than
    the test: too few videos changed, or one excludes 0 while the other does not reject."""
    k = row.get("videos_changed")
    if k is not None and k < stats.MIN_CHANGED:
        return (
            f" (only {k} videos changed: too few for the interval to be trusted, and no test reaches "
            f"p < {alpha:g} with fewer than {stats.MIN_CHANGED})"
        )
    excludes = row["ci_low"] > 0 or row["ci_high"] < 0
    if excludes and row["p_video"] >= alpha:
        return (
            " (the interval excludes 0 but the test does not reject: the resampled interval is approximate "
            "at its edge, the sign-flip test exact; trust the test)"
        )
    if not excludes and row["p_video"] < alpha:
        return " (the test rejects but the interval holds 0: the resampled interval is approximate at its edge)"
    if excludes and row["p_holm"] >= alpha:
        return " (the interval is not corrected for the family's other tests; Holm is)"
    return ""


def against_plain_label(r: Mapping) -> str:
    """A variant (cued, an intervention) against plain, in the words of its verdict and ledger row."""
    return f"{r['variant']} vs plain, {r['type']}, {r['model']}"


def adapter_label(r: Mapping) -> str:
    return f"{r['adapter']} vs {r['base']}, {r['variant']}, {r['type']}"


def open_adapter_label(r: Mapping) -> str:
    return f"{r['adapter']} vs {r['base']}, {r['variant']}, open {r['category']}, judge {r['judge']}"


def verdicts(
    cued: pd.DataFrame,
    adapters: pd.DataFrame,
    open_adapters: pd.DataFrame,
    masked: pd.DataFrame,
    sizes: Mapping[str, int],
) -> list[tuple[str, str]]:
    """One line per cued − plain, adapter − base and intervention − plain comparison (open
    questions: per judge), the primary family's first."""
    lines = (
        [(r, against_plain_label(r)) for r in cued.to_dict("records")]
        + [(r, adapter_label(r)) for r in adapters.to_dict("records")]
        + [(r, open_adapter_label(r)) for r in open_adapters.to_dict("records")]
        + [(r, against_plain_label(r)) for r in masked.to_dict("records")]
    )
    order = {name: i for i, name in enumerate(FAMILIES)}
    lines.sort(key=lambda pair: order.get(pair[0].get("family"), len(order)))
    return [(row.get("family", SECONDARY), verdict(label, row, sizes)) for row, label in lines]


PRIMARY_COLUMNS = ["comparison", "type", "delta", "ci_low", "ci_high", "p_holm", "significant", "n", "videos"]


def primary_table(cued: pd.DataFrame, adapters: pd.DataFrame) -> pd.DataFrame:
    """The primary family (what a study declares) as one short table."""
    rows = [
        {"comparison": f"{r['variant']} vs plain, {r['model']}"} | r
        for r in cued.to_dict("records")
        if r.get("family") == PRIMARY
    ] + [
        {"comparison": f"{r['adapter']} vs {r['base']}, {r['variant']}"} | r
        for r in adapters.to_dict("records")
        if r.get("family") == PRIMARY
    ]
    t = pd.DataFrame(rows)
    if t.empty:
        return pd.DataFrame(columns=PRIMARY_COLUMNS)
    return t.assign(significant=t["survives_holm"].map({True: "yes", False: "no"}))[PRIMARY_COLUMNS]


def cell_ci(df: pd.DataFrame) -> dict[tuple[str, str], tuple[float, float]]:
    """Bootstrap 95 % CI of overall accuracy (%) per model x variant, resampling videos."""
    out = {}
    for key, g in df[df["status"] != "error"].groupby(["model", "variant"]):
        low, high = stats.bootstrap_ci(g["correct"].to_numpy(dtype=float), g["video_id"], seed=stats.seed_for(*key))
        out[key] = (100 * low, 100 * high)
    return out


def compare_runs(a: Iterable[Prediction], b: Iterable[Prediction]) -> pd.DataFrame:
    """Run B − run A on the (question, model, variant) items both scored; p_holm over this table."""
    da, db = to_frame(a), to_frame(b)
    if da.empty or db.empty:
        return pd.DataFrame(columns=["model", "variant", "type", *PAIR_COLUMNS])
    keys = ["question_id", "model", "variant"]
    joined = da[da["status"] != "error"][[*keys, "video_id", "type", "correct"]].merge(
        db[db["status"] != "error"][[*keys, "correct"]], on=keys, suffixes=("_a", "_b")
    )
    rows = []
    for (model, variant), g in joined.groupby(["model", "variant"], sort=True):
        for qtype in TYPES:
            j = g if qtype == "all" else g[g["type"] == qtype]
            if len(j):
                rows.append(
                    {"model": model, "variant": variant, "type": qtype}
                    | stats.paired(
                        j["correct_a"],
                        j["correct_b"],
                        j["video_id"],
                        seed=stats.seed_for("compare", model, variant, qtype),
                    ).as_dict()
                )
    table = pd.DataFrame(rows, columns=["model", "variant", "type", *PAIR_COLUMNS]).assign(family="compare")
    return holm_adjust([table])[0]


def asked_questions(run_predictions: Iterable[Prediction]) -> set[str]:
    """The questions a run asked (whatever the answers)."""
    return {p.question_id for p in run_predictions}


def side_by_side(named: dict[str, tuple[list[Prediction], pd.DataFrame]]) -> pd.DataFrame:
    """Many runs' models in one table (the open-QA study's 6-model layout): a row per variant
    and question type (open questions: per subset and category, the judge's ALL accuracy), a
    column per run's model (and judge), each cell the accuracy in % with its 95 % CI
    (videos resampled) and n. `named`: run id -> (its predictions, its open accuracy table)."""
    cells: dict[tuple, dict[str, str]] = {}
    for rid, (preds, open_acc) in named.items():
        df = to_frame(p for p in preds if p.type != "open")
        scored = df[df["status"] != "error"]
        for (model, variant), g in scored.groupby(["model", "variant"], sort=True):
            for qtype in sorted(set(g["type"])) + ["all"]:
                part = g if qtype == "all" else g[g["type"] == qtype]
                hits = part["correct"].to_numpy(dtype=float)
                low, high = stats.bootstrap_ci(hits, part["video_id"], seed=stats.seed_for(rid, model, variant, qtype))
                row = (variant, "", qtype)
                cells.setdefault(row, {})[f"{rid}: {model}"] = _cell(
                    100 * hits.mean(), 100 * low, 100 * high, len(part)
                )
        for r in open_acc.to_dict("records") if not open_acc.empty else []:
            row = (r["variant"], r["subset"], r["category"])
            column = f"{rid}: {r['model']} (judge {r['judge']})"
            cells.setdefault(row, {})[column] = _cell(r["acc_all"], r["acc_all_low"], r["acc_all_high"], r["n"])
    columns = sorted({c for row in cells.values() for c in row})
    rows = [
        {"variant": v, "subset": s, "type": t} | {c: cells[(v, s, t)].get(c, "") for c in columns}
        for (v, s, t) in sorted(cells, key=lambda k: (k[0], k[1] == "all", k[1], k[2] == "all", k[2]))
    ]
    return pd.DataFrame(rows, columns=["variant", "subset", "type", *columns])


def _cell(acc: float, low: float, high: float, n: int) -> str:
    return f"{acc:.1f} [{low:.1f}, {high:.1f}] n={n}"
