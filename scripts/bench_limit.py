"""Benchmark measure against the engine's own ceiling, printing a ratio measured in one run.

The same items (a synthetic dataset of its own: the frames measure sends, its prompts,
sampling parameters, choice constraints and LoRA adapters) go
(a) through vLLM's offline engine in this process: an `LLM` built from the server's own
    command line and environment (`serve run` records them) with the server's batch limits
    (tokens and sequences a step, as vLLM resolves them for a server), but not its OpenMP wait
    policy: OpenMP reads it when torch loads, before the server's environment is applied here,
    so the offline engine waits as this process was started (OpenMP's own default, spinning a
    while, unless OMP_WAIT_POLICY is set: its fastest alone), each conversation rendered
    with its per-request media settings and multimodal uuids, every request added at once,
    no HTTP, no client, no JSON; timed from the first rendering to the last reply;
(b) through `python -m measure` against that server (its default concurrency): its sending phase,
    from run.json, its clips' frames put in its frame store first, as (a)'s requests are built
    before its clock starts.
The replies and prompt token counts must be identical (asserted). Both sides run --repeats
times, each on a dataset of a fresh seed (no cache holds its clips), the side that runs first
alternating from repeat to repeat; the last line reads
`measure/offline throughput ratio: R`, the median of the repeats' ratios (goal >= 0.9 on the
embedded default), the line before it each repeat's. At the default size each side works for
about 24 s at 100 requests a second. Then where the time goes: one more measure run on fresh
clips, sampled (`stages`): measure's CPU per request by stage, the server's API process and
engine core by stage.

Usage: .venv/bin/python scripts/bench_limit.py [--videos 720] [--repeats 3] [--base-url URL]
(the server must be a `serve run` on this machine: its settings build the offline engine)
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_measure import SPLIT, STARTED, fresh_seeds, make_dataset, run_measure, running_server, stored, where_it_goes  # noqa: E402

from core import cli, runs, serverinfo  # noqa: E402
from core.ask import AskConfig  # noqa: E402
from core.cli import command, group, option  # noqa: E402
from core.groups import Server  # noqa: E402
from core.layout import DataLayout  # noqa: E402
from core.records import Key  # noqa: E402
from core.variants import PLAIN  # noqa: E402
from measure.ask import media  # noqa: E402
from measure.ask.client import build, self_test  # noqa: E402
from measure.ask.plan import ask_config, plan  # noqa: E402
from serve import launch  # noqa: E402
from serve.command import build_env, vllm_args  # noqa: E402


def engine(argv: list[str]):
    """vLLM's offline `LLM` with the engine settings and environment of the server started
    with `argv` (`serve.launch serve MODEL ...`), its batch limits as the server resolves them
    (vLLM's defaults for an `LLM` are larger: on a CPU twice the tokens and sequences a step)."""
    launch.ready()
    from vllm import LLM
    from vllm.engine.arg_utils import AsyncEngineArgs, EngineArgs
    from vllm.usage.usage_lib import UsageContext

    args = vllm_args(argv)
    args.model = args.model_tag
    uni = args.distributed_executor_backend == "uni"  # as serve run set it up (`--executor`)
    os.environ.update(build_env(dict(os.environ), args.model, gpu=False, uni=uni))
    settings = AsyncEngineArgs.from_cli_args(args)
    served = copy.deepcopy(settings).create_engine_config(UsageContext.OPENAI_API_SERVER).scheduler_config
    settings.max_num_batched_tokens, settings.max_num_seqs = served.max_num_batched_tokens, served.max_num_seqs
    return LLM(**{f.name: getattr(settings, f.name) for f in dataclasses.fields(EngineArgs)})


def sampling(llm, request: dict):
    """A request's sampling parameters as the server makes them: the model's defaults, then
    what the request says."""
    from vllm import SamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    choice = request["extra_body"].get("structured_outputs", {}).get("choice")
    return SamplingParams(
        **llm.model_config.get_diff_sampling_param()
        | dict(
            temperature=request["temperature"],
            max_tokens=request["max_tokens"],
            logprobs=request["top_logprobs"] if request["logprobs"] else None,
            structured_outputs=StructuredOutputsParams(choice=choice) if choice else None,
        )
    )


def offline(llm, requests: list[dict], loras: dict) -> tuple[float, float, float, list]:
    """(seconds, of which rendering, CPU seconds of this process, outputs in request order):
    every request rendered as the server renders a chat completion (its `media_io_kwargs`
    included), then all added to the engine at once, as `LLM.chat` does."""
    from vllm import RequestOutput
    from vllm.renderers import ChatParams

    renderer = llm.renderer
    tokens = renderer.default_chat_tok_params.with_kwargs(add_special_tokens=False)
    template = dict(add_generation_prompt=True, continue_final_message=False, tools=None, tokenize=False)
    start, cpu = time.perf_counter(), time.process_time()
    inputs = []
    for r in requests:
        media_io = r["extra_body"].get("media_io_kwargs")
        chat = ChatParams(llm.chat_template, chat_template_kwargs=template, media_io_kwargs=media_io)
        inputs += renderer.render_chat([r["messages"]], chat, tokens)[1]
    rendered = time.perf_counter() - start
    llm._render_and_add_requests(  # LLM.chat, with the per-request media settings it cannot take
        inputs, [sampling(llm, r) for r in requests], lora_requests=[loras.get(r["model"]) for r in requests]
    )
    outputs = llm._run_engine(use_tqdm=False, output_type=RequestOutput)  # in the order added
    assert len(outputs) == len(requests)
    return time.perf_counter() - start, rendered, time.process_time() - cpu, outputs


def adapters(listed: list[dict]) -> dict:
    """Served adapter name -> its LoRARequest, as the server loaded it."""
    from vllm.lora.request import LoRARequest

    served = [m for m in listed if m.get("parent")]
    return {m["id"]: LoRARequest(m["id"], i, m["root"]) for i, m in enumerate(served, start=1)}


def answers(run: Path) -> dict[Key, tuple[str | None, int | None]]:
    """What the run's server said and counted, per item (read as every report reads a run)."""
    return {p.key: (p.text, p.prompt_tokens) for p in runs.load(run).predictions}


@dataclass
class Bench:
    videos: int = option(720, "Synthetic videos (a dataset of its own per repeat): about 2,400 requests.")
    repeats: int = option(3, "Times both sides run (each on fresh clips): the ratio is their median.")
    server: Server = group(Server, shown={"base_url": STARTED})


app = cli.app(__doc__)


def one_repeat(url, listed, cfg, llm, loras, pool, root: Path, seed: int, videos: int, measure_first: bool) -> dict:
    """Both sides on one fresh dataset, one after the other (`measure_first` or not: alternate
    repeats swap the order, so a machine growing faster or slower during the bench tilts no
    ratio one way): their rates, the offline engine's rendering time, and how many replies (and
    prompt token counts) are identical."""
    models = [m["id"] for m in listed]
    data = stored(make_dataset(root, seed, videos), models, cfg, pool)
    items = plan(DataLayout(data), models, [PLAIN], SPLIT, None)
    requests = [build(i, cfg) for i in items]
    if not measure_first:
        seconds, rendering, cpu, outputs = offline(llm, requests, loras)
    session, _, _ = run_measure(url, data, root / "runs", f"limit-{seed}", "--variants", PLAIN)
    measured = answers(root / "runs" / f"limit-{seed}")
    if measure_first:
        seconds, rendering, cpu, outputs = offline(llm, requests, loras)
    same = sum(measured[i.key] == (o.outputs[0].text, len(o.prompt_token_ids)) for i, o in zip(items, outputs))
    assert same == len(items) == len(measured), f"{same} of {len(items)} replies identical"
    return {
        "items": len(items),
        "measure": session["answered"] / session["send_s"],
        "sending": session["send_s"],
        "offline": len(items) / seconds,
        "seconds": seconds,
        "rendering": rendering,
        "cpu_ms": cpu / len(items) * 1000,
        "same": same,
        "concurrency": json.loads((root / "runs" / f"limit-{seed}" / "run.json").read_text())["concurrency"],
    }


@command(app, Bench)
def bench(args: Bench) -> None:
    """measure against serve vs vLLM's offline engine with the server's own settings."""
    policy = os.environ.get("OMP_WAIT_POLICY", "OpenMP default")  # as OpenMP read it: engine() sets it too late
    with running_server(args.server.base_url) as (url, listed), tempfile.TemporaryDirectory() as d:
        info = serverinfo.lookup(url)
        if info is None:
            cli.fail(f"{url} was not started by `serve run` on this machine: its engine settings are unknown")
        models = [m["id"] for m in listed]
        cfg = ask_config(AskConfig(), listed, models)
        seeds = fresh_seeds()
        assert asyncio.run(self_test(url, None, models[0])) is None
        llm, loras = engine(info.argv), adapters(listed)
        warm = plan(DataLayout(make_dataset(Path(d), next(seeds), 2)), models, [PLAIN], SPLIT, None)[:4]
        offline(llm, [build(i, cfg) for i in warm], loras)  # as measure's self-test: the first requests are slow
        with media.Workers(cfg.media_workers, cfg.processors.values()) as pool:
            done = [
                one_repeat(url, listed, cfg, llm, loras, pool, Path(d), next(seeds), args.videos, k % 2 == 0)
                for k in range(args.repeats)
            ]
            data = stored(make_dataset(Path(d), next(seeds), args.videos), models, cfg, pool)
        _, _, _, where = where_it_goes(url, data, Path(d) / "runs")
    ratios = [r["measure"] / r["offline"] for r in done]
    last = done[-1]
    print(
        f"items: {last['items']} per repeat ({len(models)} models, split {SPLIT}, plain); "
        f"measure at concurrency {last['concurrency']} (its default)"
    )
    print(
        f"offline engine (LLM in-process, the server's settings; OpenMP wait policy "
        f"{policy}): {statistics.median(r['offline'] for r in done):.1f} "
        f"req/s median ({last['seconds']:.1f} s the last repeat, of which {last['rendering']:.1f} s rendering: media "
        "decoded, processor, chat template)"
    )
    print(f"measure against serve: {statistics.median(r['measure'] for r in done):.1f} req/s median (sending phase)")
    print(f"replies and prompt token counts identical: {sum(r['same'] for r in done)}/{sum(r['items'] for r in done)}")
    print(f"measure sent for {last['sending']:.1f} s the last repeat")
    for line in where:
        print(line)
    print(
        f"where: offline engine: {statistics.median(r['cpu_ms'] for r in done):.2f} ms CPU per request, median "
        "(this process, every thread: rendering and the engine; on a machine the client, the API process and the "
        "engine share, the served path's extra CPU a request is what its throughput gives up)"
    )
    print(f"each repeat's ratio: {', '.join(f'{x:.2f}' for x in ratios)}")
    print(f"measure/offline throughput ratio: {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")  # stdout: the figures alone
    cli.main(app)
