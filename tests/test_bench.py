"""Every benchmark runs here in a small setting, as documented, so a change cannot break one
unseen; each ends with its figure, read back as a number (a goal that holds even at this
size is compared)."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core import cli
from core.ask import AskConfig
from tests.conftest import REPO, needs_sample


def _load(name: str):
    if str(REPO / "scripts") not in sys.path:
        sys.path.insert(0, str(REPO / "scripts"))  # where a script finds its sibling benchmarks
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # a dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


def test_bench_measure_sends_what_measure_sends(server, synthetic):
    """Regression: it once passed a data URL where a list of parts belongs, so every character
    became a content part."""
    bench = _load("bench_measure")
    reqs = bench.requests(synthetic, [server.base_model], AskConfig())
    assert reqs and all([p["type"] for p in r["messages"][0]["content"]] == ["video_url", "text"] for r in reqs)
    assert all(r["extra_body"]["structured_outputs"]["choice"] for r in reqs)


def test_a_server_a_benchmark_starts_says_why_it_exited():
    """A `serve run` started by a benchmark that exits before it is ready: the error carries
    what it said (the server's output is not thrown away)."""
    with pytest.raises(RuntimeError, match=r"exited with code 2 before it was ready: .*'broken': expected name=path"):
        with _load("bench_measure").started(["--adapters", "broken"]):
            pass


def _bench(command: str, process: bool = False) -> list[str]:
    """A benchmark script's command line as documented (`python scripts/bench_X.py ...`), run
    in this process through its own command line (in a process of its own for one that starts
    an engine in-process); its output lines."""
    if process:
        r = subprocess.run([sys.executable, *shlex.split(command)], cwd=REPO, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-3000:]
        return r.stdout.strip().splitlines()
    script, *argv = shlex.split(command)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.run(_load(Path(script).stem).app, argv, prog=f"python {script}")
    assert code == 0, err.getvalue()[-3000:]
    return out.getvalue().strip().splitlines()


def _ratio(line: str, prefix: str) -> float:
    m = re.fullmatch(re.escape(prefix) + r" (\d+\.\d+).*", line)
    assert m, line
    return float(m.group(1))


@pytest.mark.alone
def test_bench_measure_runs_small(server):
    """measure keeps up with the best bare client (goal >= 0.95 at the default size: the client
    is never the bottleneck), and says where the time goes, by process and stage. Here the bare
    client sends 4 at a time against measure's default 64: a sender that lost its concurrency
    or gained a per-request cost falls under the floor."""
    lines = _bench(f"scripts/bench_measure.py --videos 16 --sweep 4 --repeats 1 --base-url {server.base_url}")
    assert _ratio(next(x for x in lines if x.startswith("measure / best")), "measure / best bare client (c=4):") >= 0.9
    assert any(x.startswith("measure client CPU per request:") for x in lines)
    where = [x for x in lines if x.startswith("where: ")]
    assert [x.split(":")[1].strip() for x in where] == ["measure", "server API process", "server engine core"]
    if any("(not sampled: py-spy: " in x for x in where):  # said on the line, so the test says it too
        pytest.skip(f"py-spy could not sample here (ptrace not allowed?): {where}")
    assert all(re.search(r": \d+\.\d+ ms CPU per request \(.*outside the GIL \d+\.\d+\)$", x) for x in where), where
    assert "JSON, HTTP" in where[1] and "scheduling" in where[2], where


@pytest.mark.alone
@needs_sample
@pytest.mark.slow
def test_bench_prepare_runs_small():
    lines = _bench("scripts/bench_prepare.py --box-mb 1 --videos 8")
    assert _ratio(lines[0], "cue-render cost / plain decode+encode cost:") <= 1.3  # its goal
    assert any("streamed peak RSS" in x for x in lines)


@pytest.mark.alone
@needs_sample  # its clips are the shared sample's real SSV2 videos
def test_bench_media_runs_small(server):
    lines = _bench(
        f"scripts/bench_media.py --clips 12 --questions 3 --concurrency 16 --rss-questions 8,16 "
        f"--base-url {server.base_url}"
    )
    # Its goal, what sending frames was built for. Fault guarded: the frames path lost (clips
    # sent whole, or decoded again for every question) reads about 1. Measured at this size:
    # 3.07-3.35 in three runs alone on its own server.
    assert _ratio(lines[-1], "frames/data capacity ratio:") >= 2.0
    assert any(line.startswith("cache effect: frames with uuid / without:") for line in lines)
    second = next(x for x in lines if x.startswith("second run:"))
    m = re.fullmatch(r"second run: clips decoded (\d+), client CPU per request x(\d+\.\d+)", second)
    assert m and int(m.group(1)) == 0 and float(m.group(2)) <= 0.2, second  # the store's goal


def test_bench_report_runs_small():
    lines = _bench("scripts/bench_report.py --videos 200")
    assert lines[0].startswith("report.build: ") and "36 paired tests" in lines[0]
    same = re.search(r"relative difference (\S+)$", lines[1])
    assert same and float(same.group(1)) < 1e-9, lines[1]  # log space gives the whole-number answer


@pytest.mark.alone
@pytest.mark.slow
def test_bench_scale_runs_small(tmp_path):
    """Two servers on a core each do the work of nearly two, each takes a fair share, clip
    affinity keeps the prefix reuse of one server; least-in-flight beats round robin with one
    server slowed (the issue's figures); vLLM's data parallel behind one URL is measured too."""
    lines = _bench(f"scripts/bench_scale.py --videos 16 --delay 0.5 --concurrency 8 --save {tmp_path}")
    said = {x.split(":")[0]: x for x in lines}
    # The simulator's service model, checked on this real run: its item order replayed over two
    # simulated servers at the speeds the real ones answered at gives the real split.
    replay = _bench(f"scripts/bench_router.py --check {tmp_path}")[-1]
    sim = re.search(r"simulated split (\d+)/(\d+), real split (\d+)/(\d+)", replay)
    assert sim and abs(int(sim[1]) - int(sim[3])) <= max(4, (int(sim[3]) + int(sim[4])) // 10), replay
    # The raw ratio, as measured (goal 1.6x): at this size, side by side on this machine's two
    # cores, 1.08x-1.58x over the runs recorded, so no floor can tell a routing fault from the
    # machine's hour here; the fault is caught by the share and prefill lines below, and this
    # floor catches two servers slower than one.
    assert _ratio(said["two servers / one"], "two servers / one:") >= 0.95, lines
    assert said["diagnosis"].startswith("diagnosis: server CPU per request "), lines
    sender = re.findall(r"sender (\d+) % of a core, servers (\d+) ms CPU per request", said["one server"])
    assert len(sender) == 2 and all(0 < int(c) < 50 and int(ms) > 0 for c, ms in sender), lines
    # The goal is none below 40 %. At this size (52 items, a clip's questions kept together) a
    # share moves in steps of 2 to 4 points, and the server whose core the sender also uses takes
    # fewer: 36.5 % on CI's machine. A routing fault (one server starved, affinity lost) is far below.
    assert _ratio(said["smallest server share"], "smallest server share:") >= 30, lines
    assert _ratio(said["round robin / least-in-flight time"], "round robin / least-in-flight time:") > 1
    assert said["prefills per clip x model"].startswith("prefills per clip x model: one server 1.0, two servers 1.0 ")
    m = re.fullmatch(r"cached prompt-token share: one server (\d+\.\d) %, two servers (\d+\.\d) % .*", lines[-1])
    assert m and float(m.group(1)) > 0 and abs(float(m.group(1)) - float(m.group(2))) <= 5, lines
    dp = re.search(r"items per engine (\d+)/(\d+);", said["data parallel, 2 engines behind one URL"])
    assert dp and min(int(dp[1]), int(dp[2])) > 0, lines
    # each clip pinned to an engine (X-data-parallel-rank): prefilled once, as over two URLs
    assert " 1.0 prefills/clip" in said["data parallel, 2 engines behind one URL"], lines


@pytest.mark.slow
def test_bench_router_runs_small():
    """measure's own router, at 2, 8 and 64 simulated servers of speeds 30 % apart: every clip x
    model prefilled once, near the ideal throughput and every server near its fair share; round
    robin and a load-only balancer (vLLM data parallel's rule), the same check on rules that lack
    affinity or load, fail it (the check can fail)."""
    lines = _bench("scripts/bench_router.py --servers 2,8,64 --clips 20")
    rows = {}
    for line in lines[2:]:
        n, rule, *figures = line.split(" | ")
        rows[int(n), rule] = tuple(map(float, figures))
    for n in (2, 8, 64):
        efficiency, prefills, share = rows[n, "measure"]
        # Seeded, so no spread: at this size 0.922 of ideal at 64 servers (0.988 at the default
        # 100 clips a server: the rest is the run's tail, the last clips' servers busy alone),
        # the smallest share 0.911 of fair (8 servers). Guarded: affinity lost (prefills > 1),
        # least-in-flight lost (a slow server's queue: the share falls), servers left idle.
        assert prefills == 1.0 and efficiency >= 0.9 and share >= 0.85, (n, rows[n, "measure"])
        assert rows[n, "load only (vLLM DP)"][1] > 1.2 and rows[n, "round robin"][1] > 1.2
        assert efficiency > max(rows[n, "round robin"][0], rows[n, "load only (vLLM DP)"][0])
    assert rows[64, "round robin"][2] < 0.85  # without least-in-flight the slow servers fall behind


@pytest.mark.alone
def test_bench_limit_runs_small(server):
    """The offline engine built from the server's own settings gives the replies measure gets,
    and measure keeps most of its throughput."""
    lines = _bench(f"scripts/bench_limit.py --videos 12 --repeats 3 --base-url {server.base_url}", process=True)
    said = next(x for x in lines if x.startswith("replies and prompt"))  # stdout: figures only
    same = re.fullmatch(r"replies and prompt token counts identical: (\d+)/(\d+)", said)
    assert same and same.group(1) == same.group(2) != "0", lines
    # Fault guarded: a sender that lost its concurrency or gained a per-request cost (half the
    # throughput or worse). The goal is >= 0.9 at the default size; at 12 videos a repeat sends
    # for about a second and one repeat's ratio spreads widely (0.64-0.81 in 6 repeats); their
    # median of 3 read 0.66, 0.73 and 0.67 in three runs, so a halving (about 0.35) falls under 0.4.
    assert _ratio(lines[-1], "measure/offline throughput ratio:") >= 0.4, lines


@pytest.mark.alone  # its last line orders times: ablation vs drawn differ by a third, less than a busy neighbour
@pytest.mark.slow
def test_bench_interpret_runs_small(tiny):
    """What the capture keeps grows with the prompt, what eager attention keeps with its square;
    the occlusion map's memory is printed against its token count."""
    lines = _bench(f"scripts/bench_interpret.py --model {tiny.model} --sizes 64,128 --samples 3")
    assert len(lines) == 5 and all("samples/s" in x for x in lines[:2])
    m = re.fullmatch(r"prompt x(\d+\.\d+) .*capture x(\d+\.\d+), eager x(\d+\.\d+); peak RSS: .*", lines[2])
    assert m, lines[2]
    # The figure is printed, not held: what an occlusion map adds to the peak RSS moves by tens of
    # MiB between runs of one size (the allocator's caching); test_interpret holds the cause (at
    # most one batch of ablated inputs alive) instead.
    assert re.fullmatch(r"occlusion map: video tokens x\S+ \(.*\); peak RSS it adds: \S+ -> \S+ MiB .*", lines[3])
    cost = re.fullmatch(
        r"one prediction at 64 px: .* s; interpret .* \(x(\S+)\); with --effects ablation .* \(x(\S+)\), "
        r"drawn \(its occlusion map too\) .* \(x(\S+)\)",
        lines[4],
    )
    assert cost and 1 < float(cost[1]) < float(cost[2]) < float(cost[3]), lines[4]
    prompt, ours, eager = map(float, m.groups())
    assert prompt > 1 and ours == pytest.approx(prompt, rel=0.02) and eager == pytest.approx(prompt**2, rel=0.05)


@pytest.mark.slow
def test_bench_calibrate_runs_small():
    """On a demo-shaped run of 40 videos the report's statistics keep their promises; on a run
    whose videos matter each broken procedure is flagged and the report's is not, in seconds."""
    lines = _bench("scripts/bench_calibrate.py --videos 40 --sims 300")
    assert len(lines) == 7 and re.fullmatch(r"40 videos, 63 comparisons, 300 simulations: [\d.]+ s .*", lines[0])
    assert lines[2].endswith("keeps its promises on data like this run's: no test or interval fails its check")
    verdicts = dict(x.split(": ", 1) for x in lines[3:])
    assert "keeps its promises" in verdicts["clustered run, report"]
    for procedure in ("questions-bootstrap", "unpaired", "no-holm"):
        assert f"`{procedure}` FAILS on data like this run's" in verdicts[f"clustered run, {procedure}"], procedure


def test_a_sample_goes_to_the_stage_of_its_leaf_most_matching_frame():
    """`stages`: py-spy's raw lines (its process frame holds the command line, `;` included)
    are split into frames; the leaf-most frame a rule matches names the stage; what no sample
    holds is CPU outside the GIL."""
    from collections import Counter

    stages = _load("stages")
    decode = (
        'process 7:"python -c from x import main; main(1)";run (uvicorn/server.py:1);'
        "create (vllm/entrypoints/openai/chat.py:3);load_base64 (vllm/multimodal/media/image.py:9)"
    )
    parse = 'process 7:"python -m serve";run (uvicorn/server.py:1);validate (pydantic/main.py:5)'
    assert stages.stage_of(decode, stages.API) == "media decode (base64, JPEG)"
    assert stages.stage_of(parse, stages.API) == "JSON, HTTP"
    assert stages.stage_of('process 7:"python -m measure"', stages.MEASURE) == "native, holding the GIL"
    sample = {"stacks": Counter({decode: 30, parse: 20}), "cpu_s": 1.0}
    assert stages.breakdown("where: api", sample, stages.API, 100) == (
        "where: api: 10.00 ms CPU per request (media decode (base64, JPEG) 3.00; JSON, HTTP 2.00; outside the GIL 5.00)"
    )


def test_a_process_py_spy_cannot_sample_is_said_not_sampled():
    """Where py-spy cannot sample (here: a process that is not Python; elsewhere: no ptrace),
    the line says so and why, instead of putting all the CPU outside the GIL."""
    stages = _load("stages")
    sleeper = subprocess.Popen(["sleep", "5"])
    try:
        with stages.sampled(sleeper.pid) as sample:
            time.sleep(0.5)
    finally:
        sleeper.kill()
        sleeper.wait()
    line = stages.breakdown("where: sleep", sample, stages.API, 10)
    assert sample["error"] and line.startswith("where: sleep: 0.00 ms CPU per request (not sampled: py-spy: "), line
