"""Run health while a session sends: `Sampler` watches resident memory (the SmolVLM2 test
plan's measurements, taken on every run). The report's "Run health" section is computed
from what it records: `measure.report.health`."""

from __future__ import annotations

import re
import threading

import httpx
import psutil

from core import serverinfo
from core.runfiles import ServerPeak, SessionHealth
from core.urls import ServerUrl

_RSS_METRIC = re.compile(r"^process_resident_memory_bytes\s+(\S+)", re.M)


class Sampler:
    """Peak resident memory while it runs, sampled every `interval_s`: this client with its
    media workers, and each server: a server `serve run` started on this machine as its
    whole process group (/proc), any other through its /metrics (the API server process's
    `process_resident_memory_bytes`: a lower bound, engines excluded)."""

    def __init__(self, urls: list[ServerUrl], interval_s: float = 0.5) -> None:
        self.interval_s = interval_s
        self.groups = {u: info.pid for u in urls if (info := serverinfo.lookup(u)) is not None}
        self.peaks: dict[ServerUrl, int | None] = {u: None for u in urls}
        self.client_peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._http = httpx.Client(timeout=2.0)

    def __enter__(self) -> Sampler:
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

    def _server_rss(self, url: ServerUrl) -> int | None:
        if url in self.groups:
            return serverinfo.group_rss(self.groups[url]) or None
        try:
            m = _RSS_METRIC.search(self._http.get(url.metrics).text)
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

    def result(self) -> SessionHealth:
        return SessionHealth(
            self.client_peak,
            {
                str(u): ServerPeak(
                    peak, "process group (/proc)" if u in self.groups else "/metrics (API server process)"
                )
                for u, peak in self.peaks.items()
            },
        )
