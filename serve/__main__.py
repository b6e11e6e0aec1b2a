"""`python -m serve`: start a vLLM OpenAI-compatible server with a base VLM and its LoRA adapters."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO

import httpx
import typer

from core import cli, serverinfo
from core.cli import command, fail, group, main, option
from core.defaults import ADAPTERS_DIR, TINY_MODEL, TINY_SMOLVLM, TINY_THINKING, default_model
from core.groups import Server
from core.procs import die_with_parent, wait_group_gone
from core.serverinfo import ServerInfo
from core.urls import ServerUrl
from serve import command as server
from serve.command import Settings

app = cli.app(__doc__, no_args_is_help=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def poll_ready(
    url: ServerUrl,
    timeout: float,
    api_key: str | None = None,
    proc: subprocess.Popen | None = None,
    pid: int | None = None,
) -> list[dict]:
    """Wait until `/v1/models` answers; return its model list. Raises TimeoutError, or
    RuntimeError if the server process (`proc` or `pid`) exits first."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"vLLM exited with code {proc.returncode} before it was ready")
        if pid is not None and not _alive(pid):
            raise RuntimeError(f"server process {pid} exited before it was ready")
        try:
            r = httpx.get(url.models, headers=headers, timeout=5)
            if r.status_code == 200:
                return r.json()["data"]
            if r.status_code == 401:
                raise RuntimeError(f"{url} is up but refuses the API key (HTTP 401): pass --api-key / VLLM_API_KEY")
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise TimeoutError(f"{url} not ready after {timeout:.0f} s")


def _describe(models: list[dict]) -> str:
    return ", ".join(m["id"] + (f" (adapter of {m['parent']})" if m.get("parent") else "") for m in models)


def tower_lora(adapters: dict[str, Path], model: str, extra: list[str]) -> list[str]:
    """vLLM's arguments with its tower/connector LoRA on when an adapter holds LoRA weights on
    the vision merger or tower (the study's recipe trains the merger); one error line when
    vLLM cannot apply them to this model (it would drop them with only a warning)."""
    vision = [name for name, path in adapters.items() if server.vision_modules(path)]
    if not vision:
        return extra
    supported, arch = server.tower_lora_support(model)
    if supported is False:
        fail(
            f"adapter(s) {', '.join(vision)} hold LoRA on the vision merger/tower, which vLLM cannot apply to "
            f"{model} ({arch}): retrain on the language model only"
        )
    if server.TOWER_LORA in extra:
        return extra
    said = "" if supported else f" (whether vLLM supports it on {arch} could not be read here)"
    typer.echo(
        f"serve: {', '.join(vision)} hold(s) LoRA on the vision merger/tower: vLLM's tower/connector LoRA "
        f"on ({server.TOWER_LORA}){said}",
        err=True,
    )
    return [*extra, server.TOWER_LORA]


def command_for(settings: Settings, gpus: int, extra: list[str], base: dict[str, str]) -> tuple:
    """(settings resolved, argv, environment) of what `serve run` starts with `gpus` GPUs visible
    here: the model (its default, the embedded tiny models built when missing), its adapters
    (discovered, checked, tower/connector LoRA on when they need it), vLLM's `extra` arguments,
    and the environment on top of `base`. Nothing is started."""
    model = settings.model or default_model(gpus > 0)
    embedded = {str(d) for d in (TINY_MODEL, TINY_SMOLVLM, TINY_THINKING)}
    if model.rstrip("/") in embedded and not (Path(model) / "config.json").is_file():
        typer.echo(f"serve: {model} is missing; building the embedded tiny models (offline, seeded)", err=True)
        build_tiny(Tiny())
    adapters = settings.adapters if settings.adapters is not None else server.discover_adapters(model)
    server.check_adapters(adapters, model, tower_lora=True)  # all but the vision LoRA, which is checked next
    settings = replace(settings, model=model, adapters=adapters, extra=tower_lora(adapters, model, extra))
    argv = server.build_argv(settings, gpus=gpus)
    pinned = server.cores(settings.cpus) if settings.cpus else None
    bind = server.omp_bind(pinned, settings.data_parallel_size) if pinned else None
    uni = server.executor(settings, gpus) == "uni"
    env = server.build_env(base, model, gpus > 0, settings.runtime_adapters, bind, settings.batch_invariant, uni=uni)
    return settings, argv, env


@command(app, Settings, pass_on=True, context_settings={"allow_extra_args": True})
def run(settings: Settings, ctx: typer.Context) -> None:
    """Start vLLM with the model and its adapters; arguments after `--` go to `vllm serve`
    unchanged. Prints the vLLM command, then the URL once ready. Settings are these options
    only (VLLM_API_KEY is read as vLLM reads it); scripts/serve.sh turns its environment
    (MODEL, ADAPTERS, HOST, PORT, FRAMES, MAX_MODEL_LEN, DP, TP) into them."""
    if ctx.args:
        fail(f"unexpected argument(s) {' '.join(ctx.args)}: arguments for vLLM go after --, e.g. serve run -- --seed 3")
    gpus = server.gpu_count()
    gpu = gpus > 0
    if settings.batch_invariant and not gpu:
        fail(
            "--batch-invariant: vLLM's batch invariance (VLLM_BATCH_INVARIANT=1) runs on NVIDIA GPUs of compute "
            "capability 8.0+, AMD Instinct GPUs and Intel XPUs, not on the CPU backend"
        )
    settings, argv, env = command_for(settings, gpus, cli.passed_on(ctx), dict(os.environ))
    host, port, api_key = settings.host, settings.port, settings.api_key
    local = server.loopback(host)  # an unknown host name: one error line, before anything else
    shown = [a if a != api_key else "***" for a in argv]
    typer.echo(f"serve: {shlex.join(shown)}", err=True)
    if not local:
        typer.secho(f"warning: binding {host}: the server is reachable from other machines", fg="yellow", err=True)
    if server.port_in_use(host, port):
        fail(f"{host}:{port} is already in use (another server?); choose --port")
    typer.echo(
        f"serve: {settings.data_parallel_size} engine(s) x TP {settings.tensor_parallel_size} behind one endpoint "
        f"({settings.data_parallel_backend}; {gpus or 'no'} GPU(s) visible here)",
        err=True,
    )
    # vLLM and the engine processes it spawns get a process group of their own, stopped as
    # one when this process is told to stop (SIGTERM, Ctrl-C) or exits; killed outright
    # (SIGKILL, the OOM killer), it takes vLLM with it: vLLM is sent SIGTERM and stops its engines.
    me = os.getpid()
    started, t0 = dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), time.monotonic()
    pinned = server.cores(settings.cpus) if settings.cpus else None

    def child() -> None:
        die_with_parent(me)
        if pinned:  # vLLM's processes inherit it
            os.sched_setaffinity(0, pinned)

    proc = subprocess.Popen(
        argv, env=env, start_new_session=True, preexec_fn=child, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    times: dict[str, float] = {}
    relay = threading.Thread(target=_relay, args=(proc.stdout, times), daemon=True)
    relay.start()

    def stop(_signum: int, _frame) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):  # a second signal must not cut the cleanup short
            signal.signal(sig, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    problem = None
    info = ServerInfo(port=port, pid=proc.pid, argv=shown, started=started, batch_invariant=settings.batch_invariant)
    info_file = serverinfo.write(info)  # before its port can answer: a client that sees it answer finds this
    try:
        models = poll_ready(settings.url, settings.ready_timeout, api_key, proc)
        info = replace(
            info,
            ready_s=round(time.monotonic() - t0, 2),
            rss_ready_bytes=serverinfo.group_rss(proc.pid),
            times=dict(times),
        )
        serverinfo.write(info)
        typer.echo(f"ready: {settings.url}  models: {_describe(models)}", err=True)
        typer.echo(
            f"serve: ready in {info.ready_s:.1f} s ({_times(info.times)}); resident memory "
            f"{info.rss_ready_bytes / 2**30:.2f} GiB (vLLM's process group)",
            err=True,
        )
        code = proc.wait()
    except (RuntimeError, TimeoutError) as e:
        problem = str(e)
    except KeyboardInterrupt:
        code = 0
    finally:
        _stop_group(proc)
        relay.join(5)
        info_file.unlink(missing_ok=True)
    if problem:
        fail(problem)
    sys.exit(code)


def _relay(stream: IO[bytes], times: dict[str, float]) -> None:
    """Copy vLLM's output to stderr line by line, noting the start-up times it logs."""
    for line in iter(stream.readline, b""):
        with contextlib.suppress(OSError, ValueError):  # a closed stderr must not stall vLLM on a full pipe
            sys.stderr.buffer.write(line)
            sys.stderr.flush()
        times.update(serverinfo.log_times(line.decode("utf-8", "replace")))


def _times(times: dict[str, float]) -> str:
    names = {"model_load_s": "model load", "weights_load_s": "weights load", "engine_init_s": "engine init"}
    return ", ".join(f"{names[k]} {v:.2f} s" for k, v in times.items()) or "vLLM logged no load times"


def _stop_group(proc: subprocess.Popen, grace: float = 15) -> None:
    """SIGTERM vLLM's process group; after `grace` s, or once the leader is gone, SIGKILL
    whatever is left; return once none of it is (so whoever stops `serve run` finds nothing
    of it running when it has exited)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(grace)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    wait_group_gone(proc.pid)


@dataclass
class Wait:
    server: Server = group(Server)
    timeout: float = option(Settings.ready_timeout, "Seconds to wait.")
    pid: int | None = option(None, "Give up as soon as this server process exits.", shown="none")


@command(app, Wait)
def wait(o: Wait) -> None:
    """Block until a server answers /v1/models; print what it serves."""
    try:
        models = poll_ready(o.server.url, o.timeout, o.server.api_key, pid=o.pid)
    except (TimeoutError, RuntimeError) as e:
        fail(str(e))
    serverinfo.lookup(o.server.url)  # a local server's record says ready too: a run started next records it
    typer.echo(f"ready: {o.server.url}  models: {_describe(models)}")


@dataclass
class Tiny:
    model_dir: Path = option(TINY_MODEL, "Where the tiny model goes.")
    adapter_dir: Path = option(ADAPTERS_DIR / "tiny-cued", "Where its LoRA adapter goes.")
    smolvlm_dir: Path = option(TINY_SMOLVLM, "Where the tiny Idefics3 (SmolVLM family) model goes.")
    thinking_dir: Path = option(
        TINY_THINKING, "Where the tiny reasoning model goes (its chat template opens a think block)."
    )
    seed: int = option(0, "Weight seed.")


@command(app, Tiny, name="build-tiny")
def build_tiny(o: Tiny) -> None:
    """Build the embedded default offline: a tiny random-weight Qwen3-VL, a non-zero LoRA for
    it, a tiny Idefics3 (SmolVLM's architecture, served with frames as images) and a tiny
    reasoning Qwen3-VL (its chat template opens a think block: served with vLLM's qwen3 reasoning
    parser, its thinking kept apart by measure)."""
    from serve import tiny

    tiny.build_model(o.model_dir, seed=o.seed, name=o.model_dir.name)
    tiny.build_adapter(o.model_dir, o.adapter_dir, seed=o.seed + 1, base_name=o.model_dir.name)
    tiny.build_idefics3(o.smolvlm_dir, seed=o.seed)
    tiny.build_model(o.thinking_dir, seed=o.seed, name=o.thinking_dir.name, thinking=True)
    typer.echo(f"built {o.model_dir}, {o.adapter_dir}, {o.smolvlm_dir} and {o.thinking_dir}")


if __name__ == "__main__":
    main(app)
