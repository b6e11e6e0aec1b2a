"""A Report rendered: markdown for the terminal, and the run's report files (report.md,
report.csv, report.json, deltas.csv, templates.csv and the plots), each written atomically."""

from __future__ import annotations

import json

import pandas as pd

from core import runfiles
from core.files import atomic_write
from core.layout import RunLayout
from core.runfiles import CalibrationRecord, ReportRecord
from measure.report import attention, stats
from measure.report.build import Report
from measure.report.ledger import compact
from measure.report.tables import CAUSAL_FAMILY, PRIMARY


def markdown(table: pd.DataFrame) -> str:
    """A table as markdown, numbers to 2 decimals (p-values to 4); a table of text (`compact`'s)
    as it is written."""
    if table.empty:
        return "(none)"
    if not any(pd.api.types.is_numeric_dtype(t) for t in table.dtypes):
        return table.to_markdown(index=False, disable_numparse=True)
    t = table.reset_index() if table.index.names != [None] else table
    t = t.copy()
    for col in t.columns:
        if str(col).startswith("p_"):
            t[col] = t[col].map(lambda p: f"{p:.4f}")
        elif pd.api.types.is_float_dtype(t[col]):
            t[col] = t[col].round(2)
    return t.to_markdown(index=False)


def methods(r: Report) -> dict[str, str | int | float]:
    """How every CI and p-value of the report was computed (report.json's `statistics`)."""
    return {
        "ci": f"95 % expanded percentile CI (Hesterberg 2015) of a paired cluster bootstrap: {stats.N_BOOT} "
        "resamples of videos, percentiles taken at the tail whose normal quantile is sqrt(k/(k-1)) times t "
        "with k-1 degrees of freedom (k videos), as wide as a t interval with few videos and the plain "
        "percentile CI with many; seeded per comparison by a hash of its name (SHA-256); every statistic "
        "takes the pairs in one order whatever order they arrived in; with fewer than "
        f"{stats.MIN_CHANGED} videos changed it is flagged as not to be trusted (`measure calibrate` "
        "measures its coverage on runs simulated like this one)",
        "p_mcnemar": "exact McNemar test on questions (ignores that a video's questions share a clip)",
        "p_video": "paired sign-flip permutation test on per-video summed differences: exact (for 0/1 outcomes, "
        f"a convolution of binomials; for measured values up to {stats.EXACT_PERM} videos that differ, else "
        f"{stats.N_PERM} draws, seeded as the CI)",
        "p_holm": "p_video Holm-adjusted within its family (column `family`): "
        + "; ".join(f"{name} {n} tests ({FAMILY_WORDS[name]})" for name, n in r.families.items()),
        "mde": f"minimum detectable effect (pts) at power {stats.POWER:g}, two-sided alpha {stats.ALPHA:g}: "
        "Connor's paired-binomial formula at the observed discordance, times sqrt(design effect of videos)",
        "tests": r.tests,
        "families": dict(r.families),
        "alpha": stats.ALPHA,
        "power": stats.POWER,
        "frames": r.frames,
        "serving": r.serving or "unknown (no run.json)",
    }


FAMILY_WORDS = {
    "primary": "what a study declares: cued vs plain, adapter vs base on plain clips",
    "secondary": "the adapter on other clips, controls and their audit, interventions, open questions",
    "attention": "where the model looked, means over layers",
    "layers": "where the model looked, per layer",
    "causal": "what a region does, the contrasts declared before looking: per model, the object's tokens ablated "
    "on plain object questions and each cue's tokens on its clips, against as many random tokens from outside them",
    "causal-exploratory": "what a region does, every other region, method, window and baseline",
    "compare": "one run against another",
}


def attention_markdown(r: Report) -> str:
    """Where the model looked: the sanity checks, whether the rebuilt inputs were the run's, the
    mean mass per region; what each region does (its declared contrasts are in the summary,
    every paired test in the family tables)."""
    if r.attention_pairs.empty and r.attention_regions.empty:
        return "No attention records: run `python -m interpret RUN`.\n"
    parts = [
        "## Where the model looked (interpret)\n\nMass per region: the share of the answer position's attention "
        "to the video on it (pts of attention; each row sums to 100); area: the region's share of pixels (mass = "
        "area: uniform). Attention is not explanation: the interventions and the region removals are the causal "
        "checks. Paired tests: the attention and layers families above; every region row in report.json.\n\n",
        *(f"- {c}\n" for c in attention.sanity_lines(r.attention_sanity)),
        f"- {attention.inputs_line(r.attention_inputs)}\n",
        f"- area (% of pixels): {attention.areas_line(r.attention_regions)}\n\n",
        markdown(attention.mass_table(r.attention_regions)),
        "\n",
    ]
    if not r.causal.empty:
        parts += [
            "\n## What each region does (interpret --effects)\n\nThe change in the right answer's log-probability "
            "(nats) when a region's visual tokens are removed inside the model (ablation: replaced by the clip's "
            "mean token; knockout: hidden from the answer in a window of layers), against as many random or "
            "highest-norm tokens from outside the region; paired by question, CIs resample videos. Holm "
            f"within the declared contrasts (causal, {r.families.get('causal', 0)} tests: in the summary) "
            f"and apart within the rest (causal-exploratory, {r.families.get('causal-exploratory', 0)} tests: "
            "above); both sides of every contrast in causal.csv.\n"
        ]
    if not r.attention_off.empty:
        parts += [
            "\nRebuilt inputs that were not the run's, or gave another reply:\n\n",
            markdown(r.attention_off),
            "\n",
        ]
    return "".join(parts)


def calibration_table(c: CalibrationRecord) -> pd.DataFrame:
    cols = [
        "comparison",
        "family",
        "videos",
        "videos_changed",
        "null_rejection",
        "weak_rejection",
        "null_coverage",
        "weak_coverage",
        "planted",
        "power",
        "predicted_power",
        "coverage",
    ]
    return pd.DataFrame(c.comparisons).reindex(columns=cols)


def calibration_lines(c: CalibrationRecord) -> list[str]:
    """The calibration in words (`measure.report.calibrate.summary`)."""
    from measure.report.calibrate import summary

    return summary(c)


def calibration_markdown(r: Report) -> str:
    """The report's Calibration section (empty without calibration.json)."""
    c = r.calibration
    if c is None:
        return ""
    return (
        "## Calibration (measure calibrate)\n\nWhether the tests and intervals keep their promises on runs "
        "simulated like this one (percentages of simulations; planted: points).\n\n"
        + "".join(f"- {x}\n" for x in calibration_lines(c))
        + "\n"
        + markdown(calibration_table(c))
        + "\n"
    )


TOP = 8  # rows of each family table in report.md, the strongest evidence first (all in comparisons.csv)


def summary_markdown(r: Report) -> str:
    """The report's first section, and what the commands print: what was asked, the primary
    table, the declared causal contrasts, and at most ten sentences."""
    parts = ["## Summary\n\n", f"{r.summary[0]}\n\n"]
    for family, title in (
        (PRIMARY, "Primary comparisons (what the study declares; Holm within them)"),
        (CAUSAL_FAMILY, "Declared causal contrasts (on the model organism, its known effects; Holm within them)"),
    ):
        rows = r.ledger[r.ledger["family"] == family]
        if not rows.empty:
            parts += [f"{title}:\n\n", markdown(compact(rows)), "\n\n"]
    return "".join(parts + [f"- {x}\n" for x in r.summary[1:]])


def families_markdown(r: Report) -> str:
    """Every other Holm family as one compact table: its strongest evidence first."""
    parts = []
    for family, rows in r.ledger.groupby("family", sort=False):
        if family in (PRIMARY, CAUSAL_FAMILY):
            continue
        parts += [
            f"### {family}: {int(rows['significant'].sum())} of {len(rows)} significant "
            f"({FAMILY_WORDS.get(str(family), family)})\n\n",
            markdown(compact(rows.head(TOP))),
            "\n",
            f"\n{len(rows) - TOP} more in comparisons.csv.\n" if len(rows) > TOP else "",
            "\n",
        ]
    if not parts:
        return ""
    return (
        "## Tests by family\n\nHolm within each family; rows sorted by evidence (Holm's p, then size); "
        "caution: the one reason not to take a row's interval at its word.\n\n" + "".join(parts)
    )


def render_markdown(r: Report) -> str:
    """report.md: the summary first, then the accuracy, each family of tests compactly, the
    sections a study needs, and how every number was computed."""
    parts = [summary_markdown(r), "\n## Accuracy (%)\n\n", markdown(r.table), "\n"]
    if r.warnings:
        parts += ["\n## Warnings\n\n", *(f"- {w}\n" for w in r.warnings)]
    parts += ["\n", families_markdown(r)]
    if not r.open_accuracy.empty:
        parts += [
            "\n## Open questions, per judge: accuracy (%, judge says yes) and mean score (0-5); ALL counts a failed or "
            "missing verdict as no / 0, VALID leaves it out (judge_failed); 95 % CIs resample videos\n",
            markdown(r.open_accuracy),
            "\n",
        ]
    if not r.judge_agreement.empty:
        parts += ["\n## Judges compared (predictions both judged)\n", markdown(r.judge_agreement), "\n"]
    if not r.arrow.empty:
        parts += [
            "\n## Arrow of time (chance 50 %; temporal_kl: mean KL(forward || reversed), nats)\n",
            markdown(r.arrow),
            "\n",
        ]
    if not r.reference.empty or r.reference_notes:
        parts += [
            "\n## Published numbers beside ours (%; our 95 % CI resamples videos; inside_ci: the published "
            f"number lies in it)\n\nOurs sent {r.frames or 'clips as run.json records'}. "
            + " ".join(r.reference_notes)
            + "\n\n",
            markdown(r.reference) if not r.reference.empty else "",
            "\n",
        ]
    if not r.probes.empty:
        parts += [
            "\n## Temporal probes (%; chance from the choices). Reversed clips are scored against their own "
            "answer (first/last, left/right, up/down, start/end swap; a count stays); reversed_as_forward: "
            "still the forward answer; answer_flips: reply changed from plain's; text_acc: the clip told as a "
            "story, no video (`prepare probes --text`)\n",
            markdown(r.probes),
            "\n",
        ]
    if not r.attention_pairs.empty or not r.attention_regions.empty:
        parts += ["\n", attention_markdown(r)]
    if not r.moves.empty:
        parts += ["\n## Largest gains and losses per template and per verb (pts)\n", markdown(r.moves), "\n"]
    if r.calibration is not None:
        parts += ["\n", calibration_markdown(r)]
    if r.health:
        parts += [
            "\n## Run health\n\nRates are over the sessions' sending time; memory is resident (GiB), peak "
            "while sending, start-up times (s) as `serve run` measured and vLLM logged them. `cached_pct`: "
            "the share of prompt tokens the engine served from its prefix cache; "
            "`prefills_per_clip_model`: requests that prefilled their clip's video (less than half "
            "their prompt cached) per clip x model, 1 at best.\n\n",
            markdown(r.health["overall"]),
            "\n\n",
            markdown(r.health["servers"]),
            "\n\nLatency per request (s), retries included:\n\n",
            markdown(r.health["latency"]),
            "\n",
        ]
    legend = "".join(
        f"- {k}: {v}\n"
        for k, v in methods(r).items()
        if k in ("ci", "p_mcnemar", "p_video", "p_holm", "mde", "serving")
    )
    parts += [
        "\n## How the numbers were computed\n\nEvery paired difference is b − a on the same questions "
        "(cued − plain, adapter − base, control − plain); every table of this report, with all its columns, "
        "is in report.json.\n\n",
        legend,
    ]
    return "".join(parts)


def _records(table: pd.DataFrame) -> list[dict]:
    return json.loads(table.to_json(orient="records"))


def record(r: Report) -> ReportRecord:
    """The report as report.json holds it: every table as a list of rows."""
    return ReportRecord(
        accuracy=_records(r.table.reset_index()),
        cued_vs_plain=_records(r.cued_vs_plain),
        adapter_vs_base=_records(r.adapter_vs_base),
        template_moves=_records(r.moves),
        positions=_records(r.positions),
        audit=_records(r.audit),
        cued_where_blind_fails=_records(r.cued_blind_wrong),
        arrow_of_time=_records(r.arrow),
        warnings=list(r.warnings),
        summary=list(r.summary),
        ledger=_records(r.ledger),
        verdicts=list(r.verdicts),
        primary=_records(r.primary),
        statistics=methods(r),
        open_accuracy=_records(r.open_accuracy),
        open_adapter_vs_base=_records(r.open_adapter_vs_base),
        open_audit=_records(r.open_audit),
        judge_agreement=_records(r.judge_agreement),
        probes=_records(r.probes),
        reference=_records(r.reference),
        reference_notes=r.reference_notes,
        health={name: _records(t) for name, t in r.health.items()},
        calibration=[] if r.calibration is None else calibration_lines(r.calibration),
        interventions=_records(r.interventions),
        attention={
            "inputs": _records(r.attention_inputs),
            "regions": _records(r.attention_regions),
            "pairs": _records(r.attention_pairs),
            "off": _records(r.attention_off),
            "sanity": _records(r.attention_sanity),
            "causal": _records(r.causal),
        },
    )


def write(layout: RunLayout, r: Report) -> None:
    """Every report file of a run, from the Report alone."""
    atomic_write(layout.report_md, render_markdown(r))
    atomic_write(layout.report_csv, r.table.to_csv())
    deltas = pd.concat(
        [r.cued_vs_plain.assign(comparison="cued-plain"), r.adapter_vs_base.assign(comparison="adapter-base")],
        ignore_index=True,
    )
    atomic_write(layout.deltas_csv, deltas.to_csv(index=False))
    atomic_write(layout.templates_csv, r.templates.to_csv(index=False))
    atomic_write(layout.comparisons_csv, r.ledger.to_csv(index=False))
    if not r.causal.empty:
        atomic_write(layout.causal_csv, r.causal.to_csv(index=False))
    runfiles.write(layout.report_json, record(r))
    if not r.table.empty:
        from measure.report import plots

        plots.accuracy_bars(layout.accuracy_png, r.table, r.cis)
        plots.forest(layout.deltas_png, r.cued_vs_plain, r.adapter_vs_base)
    if not r.attention_pairs.empty:
        from measure.report import plots

        plots.attention_summary(layout.attention_png, r.attention_pairs)
