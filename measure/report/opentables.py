"""Report tables of open questions, from their scored verdicts (`measure.score.open`).

Per judge x model x variant x the source's subset (EgoTextVQA's indoor / outdoor, each with its
own per-type rows, then all of them) x question type (category) and overall: accuracy (the judge's
"yes" rate) and mean score (0-5), each two ways as VLMEvalKit reports them — ALL (a failed
or missing verdict counts as "no" / 0, as peers silently do) and VALID (failed verdicts
left out) — with cluster-bootstrap CIs (videos resampled) and the failure count beside
them. An empty reply is the model's failure: "no" / 0 both ways. Deltas (adapter − base,
control − plain) pair the VALID verdicts of the same questions: `measure.report.stats.paired` on
yes/no, a cluster bootstrap on the score difference. Judges are compared by agreement and
Cohen's kappa on the predictions both judged.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field

import pandas as pd

from core.records import Judgement
from core.variants import AUDIT_CONTROLS, PLAIN
from measure.report import stats
from measure.report.tables import PAIR_COLUMNS

ACC_COLUMNS = ["n", "judged", "judge_failed", "invalid"] + [
    f"{what}_{side}{bound}" for what in ("acc", "score") for side in ("all", "valid") for bound in ("", "_low", "_high")
]
DELTA_COLUMNS = [*PAIR_COLUMNS, "score_a", "score_b", "score_delta", "score_ci_low", "score_ci_high"]


def _mean_ci(values: pd.Series, videos: pd.Series, name: tuple) -> tuple[float, float, float]:
    if not len(values):
        return (float("nan"),) * 3
    low, high = stats.bootstrap_ci(values.to_numpy(dtype=float), videos.to_numpy(), seed=stats.seed_for(*name))
    return stats.mean(values), low, high


def accuracy(f: pd.DataFrame) -> pd.DataFrame:
    """Per judge x model x variant x subset (each of the source's, then all) x category (and
    "all"): ALL and VALID accuracy (%) and mean score with 95 % CIs, and the counts behind them."""
    rows = []
    subsets = sorted(x for x in f["subset"].unique() if x)
    for (judge, model, variant), g in f.groupby(["judge", "model", "variant"], sort=True):
        for subset, part in [*((x, g[g["subset"] == x]) for x in subsets), ("all", g)]:
            for cat in [*sorted(part["category"].unique()), "all"]:
                c = part if cat == "all" else part[part["category"] == cat]
                if len(c):
                    rows.append(_accuracy_row(c, (judge, model, variant, subset, cat)))
    return pd.DataFrame(rows, columns=["judge", "model", "variant", "subset", "category", *ACC_COLUMNS])


def _accuracy_row(c: pd.DataFrame, name: tuple[str, str, str, str, str]) -> dict:
    judge, model, variant, subset, cat = name
    valid = c[c["valid"]]
    row = {
        "judge": judge,
        "model": model,
        "variant": variant,
        "subset": subset,
        "category": cat,
        "n": len(c),
        "judged": len(valid),
        "judge_failed": int((~c["valid"]).sum()),
        "invalid": int((c["status"] == "invalid").sum()),
    }
    seed_name = (judge, model, variant, cat) if subset == "all" else name
    for what, values, scale in (
        ("acc_all", c["yes"].fillna(0), 100),
        ("acc_valid", valid["yes"], 100),
        ("score_all", c["score"].fillna(0), 1),
        ("score_valid", valid["score"], 1),
    ):
        vids = c["video_id"] if what.endswith("_all") else valid["video_id"]
        mean, low, high = _mean_ci(values, vids, (*seed_name, what))
        row |= {what: scale * mean, f"{what}_low": scale * low, f"{what}_high": scale * high}
    return row


@dataclass(frozen=True)
class OpenPairing:
    """One open-question comparison before its statistics: side a vs side b (model, variant)
    of one judge, on the questions both have a valid verdict for; its parts are its categories
    and all of them (as `tables.Pairing`'s are its question types)."""

    table: str  # open_adapter_vs_base or open_audit
    labels: dict
    joined: pd.DataFrame = field(repr=False)  # question_id, video_id, category, yes_a/_b, score_a/_b

    def parts(self) -> Iterator[tuple[str, pd.DataFrame, int]]:
        """(category, its pairs as correct_a, correct_b, video_id, its seed) per category and all."""
        j = self.joined
        for cat in [*sorted(j["category"].unique()), "all"]:
            c = j if cat == "all" else j[j["category"] == cat]
            if len(c):
                pairs = c.assign(correct_a=c["yes_a"], correct_b=c["yes_b"])
                yield cat, pairs, stats.seed_for(*sorted(self.labels.items()), cat)


def pairings(f: pd.DataFrame, parents: dict[str, str | None]) -> list[OpenPairing]:
    """Adapter vs base per judge x variant, and control vs plain per judge x model (secondary)."""
    out = []
    for judge, g in f.groupby("judge", sort=True):
        present = set(zip(g["model"], g["variant"]))
        for model, variant in sorted(present):
            base = parents.get(model)
            if base and (base, variant) in present:
                labels = {"judge": judge, "adapter": model, "base": base, "variant": variant, "family": "secondary"}
                out.append(OpenPairing("open_adapter_vs_base", labels, _joined(g, (base, variant), (model, variant))))
            if variant in AUDIT_CONTROLS and (model, PLAIN) in present:
                labels = {"judge": judge, "model": model, "control": variant, "family": "secondary"}
                out.append(OpenPairing("open_audit", labels, _joined(g, (model, PLAIN), (model, variant))))
    return out


def _joined(f: pd.DataFrame, a: tuple[str, str], b: tuple[str, str]) -> pd.DataFrame:
    keys = ["question_id"]
    side = lambda m, v: f[(f["model"] == m) & (f["variant"] == v) & f["valid"]]  # noqa: E731
    return side(*a)[[*keys, "video_id", "category", "yes", "score"]].merge(
        side(*b)[[*keys, "yes", "score"]], on=keys, suffixes=("_a", "_b")
    )


def _delta(p: OpenPairing) -> list[dict]:
    rows = []
    for cat, c, seed in p.parts():
        r = stats.paired(c["yes_a"], c["yes_b"], c["video_id"], seed=seed).as_dict()
        low, high = stats.bootstrap_ci((c["score_b"] - c["score_a"]).to_numpy(), c["video_id"].to_numpy(), seed=seed)
        rows.append(
            p.labels
            | {"category": cat}
            | r
            | {
                "score_a": c["score_a"].mean(),
                "score_b": c["score_b"].mean(),
                "score_delta": (c["score_b"] - c["score_a"]).mean(),
                "score_ci_low": low,
                "score_ci_high": high,
            }
        )
    return rows


def deltas(f: pd.DataFrame, parents: dict[str, str | None]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(adapter − base per judge x variant x category, control − plain per judge x model x category)."""
    found = pairings(f, parents)
    adapters = [row for p in found if p.table == "open_adapter_vs_base" for row in _delta(p)]
    audit = [row for p in found if p.table == "open_audit" for row in _delta(p)]
    return (
        pd.DataFrame(adapters, columns=["judge", "adapter", "base", "variant", "category", *DELTA_COLUMNS]),
        pd.DataFrame(audit, columns=["judge", "model", "control", "category", *DELTA_COLUMNS]),
    )


def agreement(judgements: Iterable[Judgement]) -> pd.DataFrame:
    """Per pair of judges, on the predictions both judged: % agreement on yes/no and Cohen's kappa."""
    js = pd.DataFrame([asdict(j) for j in judgements if j.status == "ok"])
    if js.empty:
        return pd.DataFrame()
    wide = js.pivot_table(index=["question_id", "model", "variant"], columns="judge", values="pred", aggfunc="first")
    rows = []
    names = sorted(wide.columns)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            both = wide[[a, b]].dropna()
            if len(both):
                rows.append(
                    {
                        "judge_a": a,
                        "judge_b": b,
                        "n": len(both),
                        "agreement": 100 * float((both[a] == both[b]).mean()),
                        "kappa": cohen_kappa(list(both[a]), list(both[b])),
                    }
                )
    return pd.DataFrame(rows, columns=["judge_a", "judge_b", "n", "agreement", "kappa"])


def cohen_kappa(a: list[str], b: list[str]) -> float:
    """(p_o − p_e) / (1 − p_e) over the labels seen; 1.0 when both raters use one label only."""
    labels = sorted(set(a) | set(b))
    n = len(a)
    observed = sum(x == y for x, y in zip(a, b)) / n
    expected = sum((a.count(k) / n) * (b.count(k) / n) for k in labels)
    return 1.0 if expected == 1 else (observed - expected) / (1 - expected)
