"""The report's "Run health" section, from the predictions and run.json alone: requests and
rates overall and per server, attempts and retries, prefix reuse, memory (what `serve run`
and the session's sampler recorded: `measure.ask.health`), latency percentiles."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from core.records import Prediction
from core.runfiles import RunRecord

GIB = 2**30


def _gib(n: float | None) -> float | None:
    return None if n is None else round(n / GIB, 3)


def _rate(n: float, seconds: float) -> float | None:
    return round(n / seconds, 2) if seconds else None


def cached_share(preds: list[Prediction]) -> float | None:
    """% of prompt tokens the engine served from its prefix cache (None: none counted)."""
    counted = [p for p in preds if p.cached_tokens is not None and p.prompt_tokens]
    total = sum(p.prompt_tokens or 0 for p in counted)
    return round(100 * sum(p.cached_tokens or 0 for p in counted) / total, 1) if total else None


def prefills_per_clip(preds: list[Prediction]) -> float | None:
    """Video prefills per (clip x model), the ideal being 1: a request counts as one when less
    than half its prompt came from cache (the video tokens are most of a prompt)."""
    counted = [p for p in preds if p.cached_tokens is not None and p.prompt_tokens and p.frame_indices]
    clips = {(p.video_id, p.variant, p.model) for p in counted}
    prefills = sum(2 * (p.cached_tokens or 0) < (p.prompt_tokens or 0) for p in counted)
    return round(prefills / len(clips), 3) if clips else None


def tables(predictions: Iterable[Prediction], run: RunRecord) -> dict[str, pd.DataFrame]:
    """The "Run health" tables: `overall` (requests, rates, attempts, retries, client memory),
    `servers` (per base URL: vLLM version, start-up times, memory, requests, rates) and
    `latency` (p50/p95/p99 per model x variant). Rates are over the sessions' sending time."""
    asked = [p for p in predictions if p.server is not None or p.latency_s is not None]
    send_s = sum(s.send_s or 0.0 for s in run.sessions)
    healths = [s.health for s in run.sessions if s.health]
    tokens = sum(p.prompt_tokens or 0 for p in asked)
    attempts = sum(p.attempts for p in asked)
    overall = pd.DataFrame(
        [
            {
                "requests": len(asked),
                "send_s": round(send_s, 2),
                "req_per_s": _rate(len(asked), send_s),
                "prompt_tok_per_s": _rate(tokens, send_s),
                "cached_pct": cached_share(asked),
                "prefills_per_clip_model": prefills_per_clip(asked),
                "attempts": attempts,
                "retries": attempts - len(asked),
                "errors": sum(p.status == "error" for p in asked),
                "sessions": len(run.sessions),
                "client_peak_rss_gib": _gib(max((h.client_peak_rss_bytes for h in healths), default=None)),
            }
        ]
    )
    rows = []
    for s in run.servers:
        url, serve = s.url, s.serve
        mine = [p for p in asked if p.server == url]
        peaks = [h.servers[url] for h in healths if url in h.servers]
        peak = max((x.peak_rss_bytes for x in peaks if x.peak_rss_bytes is not None), default=None)
        rows.append(
            {
                "server": url,
                "vllm": s.version,
                "ready_s": serve.ready_s if serve else None,
                **(serve.times if serve else {}),
                "rss_ready_gib": _gib(serve.rss_ready_bytes if serve else None),
                "peak_rss_gib": _gib(peak),
                "rss_source": peaks[-1].source if peaks else None,
                "requests": len(mine),
                "req_per_s": _rate(len(mine), send_s),
                "prompt_tok_per_s": _rate(sum(p.prompt_tokens or 0 for p in mine), send_s),
                "cached_pct": cached_share(mine),
            }
        )
    lat = pd.DataFrame(
        [(p.model, p.variant, p.latency_s) for p in asked if p.latency_s is not None],
        columns=["model", "variant", "latency_s"],
    )
    latency = (
        (
            lat.groupby(["model", "variant"])["latency_s"]
            .agg(
                n="size",
                p50=lambda x: np.percentile(x, 50),
                p95=lambda x: np.percentile(x, 95),
                p99=lambda x: np.percentile(x, 99),
            )
            .round(3)
            .reset_index()
        )
        if not lat.empty
        else lat
    )
    return {"overall": overall, "servers": pd.DataFrame(rows), "latency": latency}
