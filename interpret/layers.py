"""Where information is lost between the frames and the answer (`interpret RUN --layer-probes`):
linear probes (scikit-learn's logistic regression) of each question attribute, fitted on the
vision encoder's output and on every language-model layer, held-out accuracy with intervals.

- An attribute: the questions of one kind (a probe's kind, else the question type: verb,
  object, ...), its label the right answer for the clip asked (a reversed probe's own).
- Features, on the exact input the server saw (`interpret.inputs`): the vision encoder's
  output (the merger's tokens), averaged within each frame group and the groups laid side by
  side, so time order survives; and each language layer's hidden state at the answer position
  (layer 0: the embeddings).
- Cross-validated by video (scikit-learn's `GroupKFold`, seeded, 5 folds: no video on both
  sides), each prediction scored by the probe that never saw its video; 95 % CI resampling
  videos. Chance: the largest answer's share (the best constant guess, knowing the answers).
  A control that must fail: the probe refitted on labels shuffled across predictions (it
  reads about chance unless something leaks); beside them, how often the model answered right.

Read it as: where the vision encoder decodes an attribute and the last layers do not, the
language model lost it; where the encoder already does not, the vision side did.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from core import progress
from core.files import atomic_write
from core.layout import DataLayout
from core.records import PROBE, Prediction
from core.runs import Run
from interpret import inputs
from interpret.attention import model_inputs, video_features
from measure.report import stats

FOLDS = 5
COLUMNS = [
    "model",
    "attribute",
    "source",
    "layer",
    "classes",
    "videos",
    "n",
    "accuracy",
    "ci_low",
    "ci_high",
    "chance",
    "shuffled",
    "model_right",
]


def attribute(pred: Prediction) -> str:
    """The kind of question a prediction answers: a probe's kind, else its type."""
    return pred.category if pred.type == PROBE and pred.category else pred.type


def features(run: Run, model, processor, pred: Prediction) -> dict[tuple[str, int], np.ndarray]:
    """(source, layer) -> the features of one prediction's input: ("vision", 0) the encoder's
    tokens averaged per frame group, ("llm", k) layer k's hidden state at the answer position."""
    import torch

    assert run.data is not None and run.record is not None
    sent = inputs.sent(pred, DataLayout(run.data).clip(pred.variant, pred.video_id), run.record.ask)
    enc = inputs.encode(processor, run.questions[pred.question_id], sent, run.record.ask.answer_format)
    vis = video_features(model, enc)
    tokens = vis.pooler_output[0].float()
    groups = int(enc["video_grid_thw"][0][0])
    pooled = tokens.reshape(groups, -1, tokens.shape[-1]).mean(dim=1).reshape(-1)
    with torch.no_grad():
        out = model(**model_inputs(model, enc, vis), output_hidden_states=True)
    found = {("vision", 0): pooled.numpy()}
    for k, h in enumerate(out.hidden_states):
        found["llm", k] = h[0, -1].float().numpy()
    return found


def held_out(x: np.ndarray, y: np.ndarray, videos: np.ndarray, seed: int) -> dict:
    """A logistic-regression probe's accuracy, cross-validated by video; with chance and the
    probe refitted on shuffled labels."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    n_videos = len(set(videos))
    if n_videos < 3 or len(set(y)) < 2:
        return {}
    folds = GroupKFold(n_splits=min(FOLDS, n_videos), shuffle=True, random_state=seed)
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))

    def hits(labels: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():  # few examples per class: sklearn's size and convergence notes
            warnings.simplefilter("ignore")
            return (cross_val_predict(probe, x, labels, groups=videos, cv=folds) == labels).astype(float)

    right = hits(y)
    low, high = stats.bootstrap_ci(right, videos, seed=seed)
    shuffled = np.random.default_rng(seed).permutation(y)
    return {
        "classes": len(set(y)),
        "videos": n_videos,
        "n": len(y),
        "accuracy": 100 * right.mean(),
        "ci_low": 100 * low,
        "ci_high": 100 * high,
        "chance": 100 * pd.Series(y).value_counts(normalize=True).max(),
        "shuffled": 100 * hits(shuffled).mean(),
    }


def probe_layers(run: Run, preds: Sequence[Prediction], device: str = "cpu") -> pd.DataFrame:
    """Every attribute of `preds` probed at every source and layer, per model."""
    from interpret.stage import loaded

    rows = []
    with progress.bar("probing layers", len(preds), "predictions") as advance:
        for name in sorted({p.model for p in preds}):
            mine = [p for p in preds if p.model == name]
            feats = []
            with loaded(run, name, device) as (model, processor):
                for p in mine:
                    feats.append(features(run, model, processor, p))
                    advance()
            for att in sorted({attribute(p) for p in mine}):
                keep = [i for i, p in enumerate(mine) if attribute(p) == att]
                y = np.array([mine[i].expected for i in keep])
                videos = np.array([mine[i].video_id for i in keep])
                for source, layer in sorted(feats[0]):
                    x = np.stack([feats[i][source, layer] for i in keep])
                    fit = held_out(x, y, videos, stats.seed_for("layers", name, att) % 2**32)
                    right = 100 * np.mean([bool(mine[i].correct) for i in keep])
                    if fit:
                        row = {"model": name, "attribute": att, "source": source, "layer": layer}
                        rows.append(row | fit | {"model_right": right})
    return pd.DataFrame(rows, columns=COLUMNS)


def summary(table: pd.DataFrame) -> list[str]:
    """Per model and attribute, in words: what the encoder decodes, the best and the last layer."""
    lines = []
    for (model, att), g in table.groupby(["model", "attribute"], sort=True):
        vis = g[g["source"] == "vision"].iloc[0] if (g["source"] == "vision").any() else None
        llm = g[g["source"] == "llm"]
        best, last = llm.loc[llm["accuracy"].idxmax()], llm.loc[llm["layer"].idxmax()]

        def said(r) -> str:
            return f"{r['accuracy']:.1f} % [{r['ci_low']:.1f}, {r['ci_high']:.1f}]"

        where = "the vision encoder" if vis is not None and vis["ci_low"] > vis["chance"] else None
        lost = last["ci_high"] < (vis["ci_low"] if vis is not None else 0)
        lines.append(
            f"{model}, {att} ({int(g['classes'].iloc[0])} answers, chance {g['chance'].iloc[0]:.0f} %, the model "
            f"answers {g['model_right'].iloc[0]:.0f} %): vision encoder "
            f"{said(vis) if vis is not None else 'n/a'}; best language layer {int(best['layer'])} {said(best)}; last "
            f"layer {int(last['layer'])} {said(last)}"
            + ("; the language model loses what the encoder had" if lost else "")
            + ("" if where else "; the encoder does not decode it above chance")
            + f" (labels shuffled, at most {g['shuffled'].max():.0f} %)"
        )
    return lines


def write(layout, table: pd.DataFrame) -> Path:
    """interpret/layers.csv and interpret/layers.md (the summary, then the table)."""
    from measure.report.render import markdown

    atomic_write(layout.interpret / "layers.csv", table.to_csv(index=False))
    md = (
        "# Linear probes: where each attribute can be read (held-out accuracy %, 95 % CI resampling videos)\n\n"
        + "".join(f"- {x}\n" for x in summary(table))
        + "\n"
        + markdown(table)
        + "\n"
    )
    path = layout.interpret / "layers.md"
    atomic_write(path, md)
    return path
