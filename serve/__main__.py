"""`python -m serve`: start a vLLM OpenAI-compatible server with a base VLM and its LoRA adapters."""
from __future__ import annotations

import contextlib
import ipaddress
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import httpx
import typer

from serve import command
from serve.command import Settings, SettingsError

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def poll_ready(base_url: str, timeout: float, api_key: str | None = None, proc: subprocess.Popen | None = None,
               pid: int | None = None) -> list[dict]:
    """Wait until `{base_url}/models` answers; return its model list. Raises TimeoutError,
    or RuntimeError if the server process (`proc` or `pid`) exits first."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"vLLM exited with code {proc.returncode} before it was ready")
        if pid is not None and not _alive(pid):
            raise RuntimeError(f"server process {pid} exited before it was ready")
        try:
            r = httpx.get(f"{base_url}/models", headers=headers, timeout=5)
            if r.status_code == 200:
                return r.json()["data"]
            if r.status_code == 401:
                raise RuntimeError(f"{base_url} is up but refuses the API key (HTTP 401): pass --api-key / VLLM_API_KEY")
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise TimeoutError(f"{base_url} not ready after {timeout:.0f} s")


def _describe(models: list[dict]) -> str:
    return ", ".join(m["id"] + (f" (adapter of {m['parent']})" if m.get("parent") else "") for m in models)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def run(
    ctx: typer.Context,
    model: Annotated[Optional[str], typer.Option(envvar="MODEL", help="Model dir or hub id. Default: the tiny model on CPU, Qwen3-VL-2B on GPU.")] = None,
    adapters: Annotated[Optional[str], typer.Option(envvar="ADAPTERS", help="name=path,... Default: every adapter in data/adapters made for the model.")] = None,
    host: Annotated[str, typer.Option(envvar="HOST")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="PORT")] = 8000,
    frames: Annotated[int, typer.Option(envvar="FRAMES", help="Frames sampled per clip (server-wide).")] = 8,
    max_model_len: Annotated[Optional[int], typer.Option(envvar="MAX_MODEL_LEN")] = None,
    api_key: Annotated[Optional[str], typer.Option(envvar="VLLM_API_KEY", help="Require this key from clients.")] = None,
    trust_request_mm_kwargs: Annotated[bool, typer.Option(help="Let clients set frames per request.")] = False,
    allowed_media: Annotated[Optional[Path], typer.Option(envvar="ALLOWED_MEDIA", help="Data directory clients may read via file:// URLs (measure --media file).")] = None,
    ready_timeout: Annotated[float, typer.Option(help="Seconds to wait for readiness.")] = 900,
) -> None:
    """Start vLLM; extra arguments pass through to `vllm serve`. Prints the URL once ready."""
    gpu = command.has_gpu()
    model = model or command.default_model(gpu)
    if model == str(command.TINY_MODEL) and not (command.TINY_MODEL / "config.json").is_file():
        typer.echo(f"serve: {model} is missing; building the embedded tiny model (offline, seeded)", err=True)
        build_tiny(command.TINY_MODEL, command.ADAPTERS_DIR / "tiny-cued", command.TINY_SMOLVLM, seed=0)
    try:
        settings = Settings(
            model=model,
            adapters=command.parse_adapters(adapters) if adapters is not None else command.discover_adapters(model),
            host=host, port=port, frames=frames, max_model_len=max_model_len, api_key=api_key,
            trust_request_mm_kwargs=trust_request_mm_kwargs, allowed_media=allowed_media, extra=list(ctx.args),
        )
        argv = command.build_argv(settings)
    except SettingsError as e:
        typer.secho(f"error: {e}", fg="red", err=True)
        raise typer.Exit(2)
    if not ipaddress.ip_address(host if host != "localhost" else "127.0.0.1").is_loopback:
        typer.secho(f"warning: binding {host}: the server is reachable from other machines", fg="yellow", err=True)
    if command.port_in_use(host, port):
        typer.secho(f"error: {host}:{port} is already in use (another server?); choose --port", fg="red", err=True)
        raise typer.Exit(2)
    shown = [a if a != api_key else "***" for a in argv]
    typer.echo(f"serve: {shlex.join(shown)}", err=True)
    # vLLM and the engine processes it spawns get a process group of their own, stopped as
    # one when this process is told to stop (SIGTERM, Ctrl-C) or exits.
    proc = subprocess.Popen(argv, env=command.build_env(dict(os.environ), model, gpu), start_new_session=True)

    def stop(_signum: int, _frame) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):  # a second signal must not cut the cleanup short
            signal.signal(sig, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    code = 1
    try:
        models = poll_ready(settings.base_url, ready_timeout, api_key, proc)
        typer.echo(f"ready: {settings.base_url}  models: {_describe(models)}", err=True)
        code = proc.wait()
    except (RuntimeError, TimeoutError) as e:
        typer.secho(f"error: {e}", fg="red", err=True)
    except KeyboardInterrupt:
        code = 0
    finally:
        _stop_group(proc)
    sys.exit(code)


def _stop_group(proc: subprocess.Popen, grace: float = 15) -> None:
    """SIGTERM vLLM's process group; after `grace` s, or once the leader is gone, SIGKILL
    whatever is left."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(grace)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@app.command()
def wait(
    url: Annotated[str, typer.Option(help="Base URL of the server.")] = "http://127.0.0.1:8000/v1",
    timeout: Annotated[float, typer.Option(help="Seconds to wait.")] = 900,
    api_key: Annotated[Optional[str], typer.Option(envvar="VLLM_API_KEY")] = None,
    pid: Annotated[Optional[int], typer.Option(help="Give up as soon as this server process exits.")] = None,
) -> None:
    """Block until a server answers /v1/models; print what it serves."""
    try:
        models = poll_ready(url.rstrip("/"), timeout, api_key, pid=pid)
    except (TimeoutError, RuntimeError) as e:
        typer.secho(f"error: {e}", fg="red", err=True)
        raise typer.Exit(1)
    typer.echo(f"ready: {url}  models: {_describe(models)}")


@app.command("build-tiny")
def build_tiny(
    model_dir: Annotated[Path, typer.Option(help="Where the tiny model goes.")] = command.TINY_MODEL,
    adapter_dir: Annotated[Path, typer.Option(help="Where its LoRA adapter goes.")] = command.ADAPTERS_DIR / "tiny-cued",
    smolvlm_dir: Annotated[Path, typer.Option(help="Where the tiny Idefics3 (SmolVLM family) model goes.")] = command.TINY_SMOLVLM,
    seed: Annotated[int, typer.Option(help="Weight seed.")] = 0,
) -> None:
    """Build the embedded default offline: a tiny random-weight Qwen3-VL, a non-zero LoRA for
    it, and a tiny Idefics3 (SmolVLM's architecture, served with frames as images)."""
    from serve import tiny

    tiny.build_model(model_dir, seed=seed, name=model_dir.name)
    tiny.build_adapter(model_dir, adapter_dir, seed=seed + 1, base_name=model_dir.name)
    tiny.build_idefics3(smolvlm_dir, seed=seed)
    typer.echo(f"built {model_dir}, {adapter_dir} and {smolvlm_dir}")


if __name__ == "__main__":
    app()
