"""Run health: what a run cost and how its servers behaved (the SmolVLM2 test plan's
measurements, taken on every run). `Sampler` watches resident memory while a session sends;
`tables` computes the report's "Run health" section from the predictions and run.json."""
from __future__ import annotations

import re
import threading
from typing import Any, Iterable

import httpx
import numpy as np
import pandas as pd
import psutil

from core import serverinfo
from core.records import Prediction
from core.runfiles import RunRecord

GIB = 2**30
_RSS_METRIC = re.compile(r"^process_resident_memory_bytes\s+(\S+)", re.M)


class Sampler:
    """Peak resident memory while it runs, sampled every `interval_s`: this client with its
    media workers, and each server: a server `serve run` started on this machine as its
    whole process group (/proc), any other through its /metrics (the API server process's
    `process_resident_memory_bytes`: a lower bound, engines excluded)."""

    def __init__(self, urls: list[str], interval_s: float = 0.5) -> None:
        self.interval_s = interval_s
        self.groups = {u: info.pid for u in urls if (info := serverinfo.lookup(u)) is not None}
        self.peaks: dict[str, int | None] = {u: None for u in urls}
        self.client_peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._http = httpx.Client(timeout=2.0)

    def __enter__(self) -> "Sampler":
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._http.close()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def _server_rss(self, url: str) -> int | None:
        if url in self.groups:
            return serverinfo.group_rss(self.groups[url]) or None
        try:
            m = _RSS_METRIC.search(self._http.get(url.rstrip("/").removesuffix("/v1") + "/metrics").text)
        except httpx.HTTPError:
            return None
        return int(float(m.group(1))) if m else None

    def sample(self) -> None:
        me = psutil.Process()
        rss = 0
        for p in [me, *me.children(recursive=True)]:
            try:
                rss += p.memory_info().rss
            except psutil.Error:
                continue
        self.client_peak = max(self.client_peak, rss)
        for url in self.peaks:
            rss_s = self._server_rss(url)
            if rss_s is not None:
                self.peaks[url] = max(self.peaks[url] or 0, rss_s)

    def result(self) -> dict[str, Any]:
        return {"client_peak_rss_bytes": self.client_peak,
                "servers": {u: {"peak_rss_bytes": peak, "source": "process group (/proc)" if u in self.groups
                                else "/metrics (API server process)"} for u, peak in self.peaks.items()}}


def _gib(n: float | None) -> float | None:
    return None if n is None else round(n / GIB, 3)


def _rate(n: float, seconds: float) -> float | None:
    return round(n / seconds, 2) if seconds else None


def tables(predictions: Iterable[Prediction], run: RunRecord) -> dict[str, pd.DataFrame]:
    """The "Run health" tables: `overall` (requests, rates, attempts, retries, client memory),
    `servers` (per base URL: vLLM version, start-up times, memory, requests, rates) and
    `latency` (p50/p95/p99 per model x variant). Rates are over the sessions' sending time."""
    asked = [p for p in predictions if p.server is not None or p.latency_s is not None]
    send_s = sum(s.send_s or 0.0 for s in run.sessions)
    healths = [s.health for s in run.sessions if s.health]
    tokens = sum(p.prompt_tokens or 0 for p in asked)
    attempts = sum(p.attempts for p in asked)
    overall = pd.DataFrame([{
        "requests": len(asked), "send_s": round(send_s, 2), "req_per_s": _rate(len(asked), send_s),
        "prompt_tok_per_s": _rate(tokens, send_s), "attempts": attempts, "retries": attempts - len(asked),
        "errors": sum(p.status == "error" for p in asked), "sessions": len(run.sessions),
        "client_peak_rss_gib": _gib(max((h["client_peak_rss_bytes"] for h in healths), default=None)),
    }])
    rows = []
    for s in run.servers:
        url, serve = s["url"], s.get("serve") or {}
        mine = [p for p in asked if p.server == url]
        peaks = [h["servers"][url] for h in healths if url in h.get("servers", {})]
        peak = max((x["peak_rss_bytes"] for x in peaks if x["peak_rss_bytes"] is not None), default=None)
        rows.append({"server": url, "vllm": s.get("version"), "ready_s": serve.get("ready_s"),
                     **(serve.get("times") or {}),
                     "rss_ready_gib": _gib(serve.get("rss_ready_bytes")), "peak_rss_gib": _gib(peak),
                     "rss_source": peaks[-1]["source"] if peaks else None, "requests": len(mine),
                     "req_per_s": _rate(len(mine), send_s),
                     "prompt_tok_per_s": _rate(sum(p.prompt_tokens or 0 for p in mine), send_s)})
    lat = pd.DataFrame([(p.model, p.variant, p.latency_s) for p in asked if p.latency_s is not None],
                       columns=["model", "variant", "latency_s"])
    latency = (lat.groupby(["model", "variant"])["latency_s"]
               .agg(n="size", p50=lambda x: np.percentile(x, 50), p95=lambda x: np.percentile(x, 95),
                    p99=lambda x: np.percentile(x, 99)).round(3).reset_index()) if not lat.empty else lat
    return {"overall": overall, "servers": pd.DataFrame(rows), "latency": latency}
