"""Where a process's CPU goes, by stage, for the benchmarks: py-spy samples the threads that hold
the GIL (`--gil`, without pausing the process: `--nonblocking`), each sample is given to the
stage of the leaf-most frame a stage's rule matches, and a stage's time is its samples over the
sampling rate. What no sample holds (native code outside the GIL: torch kernels, cv2, zlib) is
the process's CPU time (from /proc) less the sampled total.

Used by bench_measure.py and bench_limit.py: `sampled(pid)` around the timed phase, then
`breakdown(...)` prints one line per process.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psutil

RATE = 100  # samples per second
ONCE = "start-up, report"  # paid once a run (in a run that sends nothing too): left out of a request's cost

# (stage, rule on a frame "function (file:line)"), tried on each frame from the leaf up
MEASURE = [
    (ONCE, r"<frozen importlib|forkserver|typer/|measure/report|matplotlib/|pandas/|core/runs\.py|psutil/"),
    ("frames (store read, decode)", r"measure/ask/(media|framestore)|core/frames|decord/|cv2|PIL/"),
    ("request built", r"^request \(.*measure/ask/client|core/prompt"),
    ("HTTP client (openai, aiohttp, JSON)", r"openai/|httpx2?/|httpcore/|anyio/|aiohttp/|multidict/|yarl/|json/"),
    ("reply scored, written", r"measure/score|core/(records|runfiles|runstore)|^(on_result|asked) "),
    ("routing, queue, event loop", r"measure/ask/(servers|client)|asyncio/"),
]
API = [
    ("media decode (base64, JPEG)", r"PIL/|vllm/multimodal/media/|base64|binascii"),
    ("hashing", r"vllm/multimodal/hasher|hashlib|blake3"),
    ("multimodal processor", r"vllm/multimodal/processing|transformers/(video|image)_processing|processing_utils"),
    ("chat template, tokens", r"jinja2/|transformers/tokenization|tokenizers|vllm/renderers/|vllm/tokenizers/"),
    ("JSON, HTTP", r"uvicorn/|starlette/|fastapi/|pydantic|json/|h11/|httptools|prometheus|vllm/entrypoints/"),
    ("engine client, outputs (IPC)", r"vllm/v1/engine/|vllm/v1/serial_utils|zmq/|msgpack"),
    ("event loop", r"asyncio/|uvloop/|concurrent/futures"),
]
ENGINE = [
    ("scheduling", r"vllm/v1/core/sched|vllm/v1/core/kv_cache|vllm/v1/structured_output"),
    ("model runner (Python side)", r"vllm/v1/worker/|vllm/model_executor/|vllm/lora/|vllm/v1/attention/|torch/"),
    ("IPC (inputs, outputs)", r"vllm/v1/serial_utils|vllm/v1/engine/|zmq/|msgpack"),
]


@contextlib.contextmanager
def sampled(pid: int, children: bool = False) -> Iterator[dict]:
    """Sample `pid` (and its children) while the block runs; the dict yielded is filled on exit
    with `stacks` (collapsed stack -> samples) and `cpu_s` (the processes' CPU over the block)."""
    spy = str(Path(sys.executable).parent / "py-spy")
    out: dict = {}
    with tempfile.TemporaryDirectory() as d:
        raw = Path(d) / "raw.txt"
        argv = [spy, "record", "--pid", str(pid), "-r", str(RATE), "--gil", "--nonblocking", "-f", "raw"]
        argv += ["-o", str(raw)] + (["--subprocesses"] if children else [])
        before = cpu_s(pid, children)
        said = Path(d) / "said.txt"
        with said.open("wb") as err:
            proc = subprocess.Popen(argv, stdout=err, stderr=err)
            try:
                yield out
            finally:
                out["cpu_s"] = cpu_s(pid, children) - before
                proc.send_signal(2)  # py-spy writes what it has on Ctrl-C
                proc.wait(60)
        out["stacks"] = Counter()
        for line in raw.read_text(errors="replace").splitlines() if raw.is_file() else []:
            if m := re.fullmatch(r"(.+) (\d+)", line):  # "frame;frame;... count" (a frame's text may hold odd bytes)
                out["stacks"][m[1]] += int(m[2])
        if not out["stacks"]:  # e.g. no ptrace here: said, not taken for "all outside the GIL"
            out["error"] = " ".join(said.read_text(errors="replace").split())[-300:] or "no samples"


def cpu_s(pid: int, children: bool = False) -> float:
    """CPU seconds so far of `pid` (and of its live children); 0 once it has ended (a caller
    that samples a process to its end measures its CPU another way)."""
    total = 0.0
    with contextlib.suppress(psutil.NoSuchProcess):
        procs = [psutil.Process(pid)]
        procs += procs[0].children(recursive=True) if children else []
        for p in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                t = p.cpu_times()
                total += t.user + t.system
    return total


def stage_of(stack: str, rules: list[tuple[str, str]]) -> str:
    """The stage of the leaf-most frame a rule matches ("process ..." frames are py-spy's own,
    one per process: a sample with nothing else held the GIL in native code)."""
    frames = [f for f in re.sub(r'process \d+:"[^"]*";?', "", stack).split(";") if f]
    for frame in reversed(frames):
        for name, rule in rules:
            if re.search(rule, frame):
                return name
    return "other Python" if frames else "native, holding the GIL"


def breakdown(name: str, sample: dict, rules: list[tuple[str, str]], requests: int, cpu_s: float | None = None) -> str:
    """One line: the process's CPU per request, then each stage's share of it (ms per request),
    start-up left out; `cpu_s` overrides the CPU the sample measured (e.g. without start-up)."""
    total = sample["cpu_s"] if cpu_s is None else cpu_s
    if "error" in sample:
        return f"{name}: {1000 * total / requests:.2f} ms CPU per request (not sampled: py-spy: {sample['error']})"
    per: Counter[str] = Counter()
    for stack, n in sample["stacks"].items():
        per[stage_of(stack, rules)] += n
    per.pop(ONCE, None)
    held = sum(per.values()) / RATE
    parts = [f"{stage} {1000 * n / RATE / requests:.2f}" for stage, n in per.most_common()]
    parts.append(f"outside the GIL {1000 * max(0.0, total - held) / requests:.2f}")
    return f"{name}: {1000 * total / requests:.2f} ms CPU per request ({'; '.join(parts)})"
