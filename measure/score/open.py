"""Open answers scored: each open prediction joined to each judge's verdict (yes/no, 0-5),
with whether the verdict counts. An empty reply is the model's failure: "no" / 0, valid; a
failed or missing verdict is not valid (VALID leaves it out, ALL counts it as no / 0)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict

import numpy as np
import pandas as pd

from core.records import OPEN, Judgement, Prediction


def verdicts(predictions: Iterable[Prediction], judgements: Iterable[Judgement]) -> pd.DataFrame:
    """One row per open prediction (errors left out) x judge: yes (1/0, NaN when the verdict
    failed or is missing), score, and whether the verdict is valid."""
    preds = pd.DataFrame([vars(p) for p in predictions if p.type == OPEN and p.status != "error"])
    js = pd.DataFrame([asdict(j) for j in judgements])
    if preds.empty or js.empty:
        return pd.DataFrame()
    keys = ["question_id", "model", "variant"]
    rows = []
    for judge in sorted(js["judge"].unique()):
        j = js[js["judge"] == judge][[*keys, "status", "pred", "score"]].rename(columns={"status": "judge_status"})
        m = preds[[*keys, "video_id", "category", "subset", "status"]].merge(j, on=keys, how="left").assign(judge=judge)
        empty = m["status"] == "invalid"
        m["valid"] = empty | (m["judge_status"] == "ok")
        m["yes"] = np.where(empty, 0.0, np.where(m["judge_status"] == "ok", (m["pred"] == "yes").astype(float), np.nan))
        m["score"] = np.where(empty, 0.0, np.where(m["judge_status"] == "ok", m["score"], np.nan)).astype(float)
        rows.append(m)
    out = pd.concat(rows, ignore_index=True)
    out["category"] = out["category"].replace("", "unknown")
    return out
