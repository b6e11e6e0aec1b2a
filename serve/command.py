"""Server settings (one declaration: the `serve run` options) -> the vLLM argument list and
environment (pure: no side effects)."""

from __future__ import annotations

import importlib.util
import ipaddress
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from safetensors import safe_open

from core.cli import option
from core.defaults import ADAPTERS_DIR, HOST, PORT
from core.errors import UserError
from core.files import read_json
from core.frames import frames_option
from core.layout import AdapterLayout
from core.profiles import profile_for, served_name
from core.urls import ServerUrl
from serve import normalise

VISION_PARTS = {"visual", "vision_tower", "vision_model", "vision_encoder", "image_encoder"}  # module path parts
LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # what vLLM's --max-lora-rank accepts
TOWER_LORA = "--enable-tower-connector-lora"  # vLLM applies an adapter's vision-tower and merger LoRA only with it


class SettingsError(UserError, ValueError):
    """Bad server settings; the message says which one and why."""


def gpu_count() -> int:
    """NVIDIA GPUs visible on this node (0 without nvidia-smi: the test scripts/setup.sh uses)."""
    if not shutil.which("nvidia-smi"):
        return 0
    r = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
    return sum(line.startswith("GPU ") for line in r.stdout.splitlines()) if r.returncode == 0 else 0


def loopback(host: str) -> bool:
    """Whether `host` (an address, or a name this machine resolves) is this machine's loopback;
    SettingsError when it is neither an address nor a name that resolves."""
    try:
        return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
    except (OSError, UnicodeError):
        raise SettingsError(f"--host {host}: not an address, nor a name this machine resolves") from None


def port_in_use(host: str, port: int) -> bool:
    """True when something already listens on host:port."""
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((host, port)) == 0


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (the OS picks it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def parse_adapters(value: str) -> dict[str, Path]:
    """`name=path,name=path` -> {name: path}."""
    out: dict[str, Path] = {}
    for item in filter(None, (s.strip() for s in value.split(","))):
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise SettingsError(f"adapter {item!r}: expected name=path")
        if name in out:
            raise SettingsError(f"adapter name {name!r} given twice")
        out[name] = Path(path)
    return out


def adapter_config(path: Path) -> dict:
    cfg = AdapterLayout(path).config
    if not cfg.is_file():
        raise SettingsError(f"adapter {path}: no adapter_config.json")
    return json.loads(cfg.read_text())


def made_for(base: str, model: str) -> bool:
    """Whether an adapter's `base_model_name_or_path` names `model`: the same id or path, or
    the same folder name (a hub id and a local copy of it)."""
    return base in {model, served_name(model), str(Path(model).resolve())} or Path(base).name == served_name(model)


def discover_adapters(model: str, root: Path = ADAPTERS_DIR) -> dict[str, Path]:
    """Every adapter under `root` whose base model is `model` (by served name or path)."""
    if not root.is_dir():
        return {}
    return {
        folder.name: folder
        for folder in sorted(p for p in root.iterdir() if AdapterLayout(p).config.is_file())
        if made_for(str(adapter_config(folder).get("base_model_name_or_path", "")), model)
    }


def lora_modules(path: Path, cfg: dict) -> list[str]:
    """The modules an adapter changes: from its weights when they are safetensors (what vLLM
    loads), else its `target_modules` as written."""
    weights = AdapterLayout(path).weights
    if weights.is_file():
        with safe_open(weights, "np") as f:
            names = {re.sub(r"\.lora_(A|B|embedding_A|embedding_B)(\.[^.]+)?\.weight$", "", k) for k in f.keys()}
        return sorted(n.removeprefix("base_model.model.") for n in names)
    targets = cfg.get("target_modules") or []
    return [targets] if isinstance(targets, str) else list(targets)


def require_dirs(adapters: dict[str, Path]) -> None:
    missing = [f"{n}={p}" for n, p in adapters.items() if not p.is_dir()]
    if missing:
        raise SettingsError(f"adapter directory not found: {', '.join(missing)}")


def vision_modules(path: Path) -> list[str]:
    """The modules of an adapter that sit in the vision tower or its merger (connector)."""
    return [m for m in lora_modules(path, adapter_config(path)) if VISION_PARTS & set(re.split(r"[.\\|()*]+", m))]


def tower_lora_support(model: str) -> tuple[bool | None, str]:
    """(whether vLLM applies LoRA to `model`'s vision tower and merger, its architecture): what
    vLLM's class for the architecture says; None when the model's config cannot be read here."""
    try:
        if Path(model).is_dir():
            arch = (read_json(Path(model) / "config.json").get("architectures") or [""])[0]
        else:
            from transformers import AutoConfig

            arch = (AutoConfig.from_pretrained(model).architectures or [""])[0]
    except (OSError, ValueError):
        return None, "unknown"
    from vllm.model_executor.models.registry import ModelRegistry

    cls = ModelRegistry._try_load_model_cls(arch)  # vLLM's own answer: the attribute its LoRA manager reads
    return (None if cls is None else bool(getattr(cls, "supports_tower_connector_lora", False))), arch


def check_adapters(adapters: dict[str, Path], model: str, tower_lora: bool = False) -> None:
    """Refuse adapters vLLM would serve wrongly, all named at once (SettingsError): made for
    another base model; with PEFT `modules_to_save` (fully trained modules beside the LoRA);
    with LoRA on vision-tower modules, which vLLM drops with only a warning unless started
    with --enable-tower-connector-lora (`tower_lora`)."""
    require_dirs(adapters)
    problems = []
    for name, path in adapters.items():
        cfg = adapter_config(path)
        base = cfg.get("base_model_name_or_path")
        if base and not made_for(str(base), model):
            problems.append(f"adapter {name} ({path}) was trained on {base}, not on the served model {model}")
        if cfg.get("modules_to_save"):
            problems.append(
                f"adapter {name} ({path}) has modules_to_save {cfg['modules_to_save']}: fully trained "
                "modules vLLM does not serve; merge them into the model or retrain without them"
            )
        vision = vision_modules(path)
        if vision and not tower_lora:
            shown = ", ".join(vision[:3]) + (f" and {len(vision) - 3} more" if len(vision) > 3 else "")
            problems.append(
                f"adapter {name} ({path}) puts LoRA on vision-tower modules ({shown}), which vLLM applies only "
                f"with {TOWER_LORA}: serve it with that flag where the model supports it, or retrain on the "
                "language model only"
            )
    if problems:
        raise SettingsError("; ".join(problems))


@dataclass
class Settings:
    """What `serve run` starts; every field but `extra` is one of its options."""

    model: str | None = option(
        None, "Model dir or hub id.", shown="the tiny model on a CPU, Qwen3-VL-2B-Instruct on a GPU"
    )
    adapters: dict[str, Path] | None = option(
        None,
        "LoRA adapters to serve.",
        shown="every adapter in data/adapters made for the model",
        parser=parse_adapters,
        metavar="NAME=PATH,...",
    )
    host: str = option(HOST, "Address to bind (a non-loopback one is reachable from other machines).")
    port: int = option(PORT, "Port to bind.")
    frames: int = frames_option(
        help="Frames per clip the server samples when a client sends a whole clip without "
        "saying how many (measure always says)."
    )
    max_model_len: int | None = option(None, "Context length.", shown="4096 for a local model, 16384 for a hub model")
    dtype: str = option(
        "auto",
        "Weights and activations dtype (vLLM --dtype). auto: on a CPU, a local checkpoint's own "
        "(vLLM would downcast float32 to bfloat16, and replies drift from interpret's replica); "
        "else vLLM's choice.",
    )
    api_key: str | None = option(None, "Require this key from clients.", envvar="VLLM_API_KEY", shown="none")
    trust_request_mm_kwargs: bool = option(
        True,
        "Let clients set media settings per request (measure's default "
        "--media frames sends each clip's fps and frame indices).",
    )
    mm_processor_cache_gb: float = option(
        4.0,
        "vLLM's multimodal processor cache (GiB): each clip is processed once "
        "for all its questions, models and adapters.",
    )
    compact_json: bool = option(
        True,
        "JSON-schema replies without whitespace (xgrammar backend): a judge's verdict "
        "always ends within its token budget (a weak model otherwise pads with whitespace).",
    )
    allowed_media: Path | None = option(
        None, "Data directory clients may read via file:// URLs (measure --media file).", shown="none"
    )
    tensor_parallel_size: int = option(1, "GPUs one engine spans (vLLM --tensor-parallel-size).")
    data_parallel_size: int = option(
        1,
        "Engines behind this one endpoint, all nodes together (vLLM "
        "--data-parallel-size): vLLM balances the requests across them.",
    )
    data_parallel_size_local: int | None = option(
        None,
        "Engines on this node when they span several nodes (vLLM --data-parallel-size-local).",
        shown="every engine on this node",
    )
    data_parallel_backend: Literal["mp", "ray"] = option(
        "mp",
        "mp: engines on this node; ray: engines placed on the "
        "nodes of a running Ray cluster (vLLM --data-parallel-backend).",
    )
    cpus: str | None = option(
        None,
        "CPU cores of this server, e.g. 0 or 2-3: vLLM and its processes run on them only, and on a "
        "CPU each data-parallel engine binds its threads to its own share of them "
        "(VLLM_CPU_OMP_THREADS_BIND): servers on one machine then do not share cores.",
        shown="every core, vLLM's own binding",
        metavar="LIST",
    )
    batch_invariant: bool = option(
        False,
        "Answers independent of batch composition and prefix-cache hits (VLLM_BATCH_INVARIANT=1; vLLM "
        "0.32: NVIDIA GPUs of compute capability 8.0+, AMD Instinct, Intel XPU; refused on a CPU), at some "
        "cost in speed. Recorded in run.json; the report says whether a run was served so.",
    )
    executor: Literal["auto", "uni", "mp"] = option(
        "auto",
        "Where vLLM's engine runs the model (vLLM --distributed-executor-backend): uni, in the engine's "
        "own process, on one thread; mp, in a worker process of its own. auto: uni on a CPU serving one "
        "engine on at most 2 unpinned cores, where vLLM's own binding leaves the model one core anyway (one "
        "interpreter fewer to import vLLM: ready in 24 s instead of 39), else vLLM's own choice (a CPU's is mp).",
    )
    runtime_adapters: int = option(
        0,
        "Room for this many more adapters, loaded while the server runs through vLLM's "
        "/v1/load_lora_adapter (of no larger rank than the largest adapter given, at least 8).",
    )
    ready_timeout: float = option(900.0, "Seconds to wait for readiness.")
    extra: list[str] = field(default_factory=list)  # arguments passed to `vllm serve` unchanged

    @property
    def url(self) -> ServerUrl:
        return ServerUrl.local(self.port, self.host)


def executor(s: Settings, gpus: int) -> str | None:
    """The executor asked of vLLM, None for its own choice. `auto` is uni on a CPU serving one
    engine on at most 2 unpinned cores, where vLLM's own binding leaves its worker one core and
    uni runs the model on one thread too (vLLM's CPU platform keeps uni only with
    VLLM_ENABLE_V1_MULTIPROCESSING=0: `build_env`); pinned (`--cpus`), vLLM binds the threads."""
    if s.executor != "auto":
        return s.executor
    if gpus or s.cpus or s.data_parallel_size > 1 or s.tensor_parallel_size > 1:
        return None
    return "uni" if len(os.sched_getaffinity(0)) <= 2 else None


def max_lora_rank(adapters: dict[str, Path]) -> int:
    """The smallest rank vLLM accepts that fits every adapter."""
    need = max((int(adapter_config(p).get("r", 8)) for p in adapters.values()), default=8)
    for rank in LORA_RANKS:
        if rank >= need:
            return rank
    raise SettingsError(f"adapter rank {need} exceeds vLLM's maximum {LORA_RANKS[-1]}")


def parallel_argv(s: Settings, gpus: int) -> list[str]:
    """vLLM's own scale-out flags, checked: TP GPUs per engine, DP engines behind one endpoint
    (on this node with mp, over a Ray cluster with ray). `gpus`: GPUs visible here (0: CPU)."""
    tp, dp, local = s.tensor_parallel_size, s.data_parallel_size, s.data_parallel_size_local
    if tp < 1 or dp < 1 or (local is not None and not 1 <= local <= dp):
        raise SettingsError(
            f"tensor-parallel-size {tp} and data-parallel-size {dp} must be >= 1, and "
            f"data-parallel-size-local ({local}) between 1 and data-parallel-size"
        )
    here = tp * (local if local is not None else dp if s.data_parallel_backend == "mp" else 1)
    if gpus and here > gpus:
        raise SettingsError(f"{here} GPUs needed on this node (TP {tp} x {local or dp} engine(s)), {gpus} visible")
    if s.data_parallel_backend == "ray" and importlib.util.find_spec("ray") is None:
        raise SettingsError(
            "--data-parallel-backend ray needs Ray (pip install ray) and a running cluster: "
            "`ray start --head` here, `ray start --address HEAD_IP:6379` on the other nodes"
        )
    argv = ["--tensor-parallel-size", str(tp)] if tp > 1 else []
    if dp > 1:
        argv += ["--data-parallel-size", str(dp)]
    if local is not None:
        argv += ["--data-parallel-size-local", str(local)]
    if s.data_parallel_backend != "mp":
        argv += ["--data-parallel-backend", s.data_parallel_backend]
    return argv


def served_dtype(model: str, dtype: str, gpus: int) -> str:
    """vLLM's --dtype: `auto` on a CPU is a local model's own checkpoint dtype (its config's)."""
    config = Path(model) / "config.json"
    if dtype != "auto" or gpus or not config.is_file():
        return dtype
    own = read_json(config)
    return str(own.get("dtype") or own.get("torch_dtype") or dtype)


def build_argv(s: Settings, python: str = sys.executable, gpus: int = 0) -> list[str]:
    """The vLLM command as an argument list (never a shell string); `gpus` visible here."""
    if s.model is None:
        raise SettingsError("no model given")
    if s.frames < 2:
        raise SettingsError(f"frames per clip must be >= 2 (got {s.frames})")
    argv = [
        python,
        "-m",
        "serve.launch",
        "serve",
        s.model,
        "--served-model-name",
        served_name(s.model),
        "--host",
        s.host,
        "--port",
        str(s.port),
        "--max-model-len",
        str(s.max_model_len or (4096 if Path(s.model).is_dir() else 16384)),
        "--dtype",
        served_dtype(s.model, s.dtype, gpus),
    ]
    argv += normalise.argv(s.model)
    profile = profile_for(s.model)
    argv += ["--limit-mm-per-prompt", json.dumps(profile.limit_mm_per_prompt(s.frames))]
    if profile.reasoning_parser and "--reasoning-parser" not in s.extra:
        argv += ["--reasoning-parser", profile.reasoning_parser]  # its thinking apart from its answer
    if profile.video_as == "video":
        argv += ["--media-io-kwargs", json.dumps({"video": {"min_frames": s.frames, "max_frames": s.frames}})]
    if s.runtime_adapters < 0:
        raise SettingsError(f"--runtime-adapters {s.runtime_adapters}: a number of adapters, 0 or more")
    adapters = s.adapters or {}
    if adapters or s.runtime_adapters:
        require_dirs(adapters)
        # One LoRA slot more than adapters: vLLM's PyTorch LoRA ops (the CPU backend) index
        # the slot with -1 for base-model tokens, i.e. the LAST slot, so in a batch mixing
        # base and adapter requests the base requests got the adapter's deltas (under
        # concurrency, every base answer equal to the adapter's). A spare, never-filled last
        # slot makes that index hit zeros.
        argv += [
            "--enable-lora",
            "--max-loras",
            str(len(adapters) + s.runtime_adapters + 1),
            "--max-lora-rank",
            str(max_lora_rank(adapters)),
        ]
        if adapters:
            argv += ["--lora-modules", *(f"{name}={path}" for name, path in adapters.items())]
    if s.api_key:
        argv += ["--api-key", s.api_key]
    if s.trust_request_mm_kwargs:
        argv += ["--trust-request-mm-kwargs"]
    argv += ["--mm-processor-cache-gb", f"{s.mm_processor_cache_gb:g}"]
    argv += ["--enable-prompt-tokens-details"]  # each reply counts its prompt tokens served from cache
    argv += parallel_argv(s, gpus)
    if chosen := executor(s, gpus):
        argv += ["--distributed-executor-backend", chosen]
    if s.compact_json:  # per-request disable_any_whitespace is ignored: it is an engine setting
        argv += ["--structured-outputs-config", json.dumps({"backend": "xgrammar", "disable_any_whitespace": True})]
    if s.allowed_media is not None:
        media = s.allowed_media.resolve()
        if media == Path(media.anchor) or not media.is_dir():
            raise SettingsError(
                f"allowed media path {s.allowed_media}: must be an existing data directory, not / or a file"
            )
        argv += ["--allowed-local-media-path", str(media)]
    return argv + list(s.extra)


def vllm_args(argv: list[str]):
    """A `build_argv` command line as `vllm serve`'s own parser reads it (vLLM's Namespace; an
    unknown flag or a bad value: argparse's SystemExit naming it)."""
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    return make_arg_parser(FlexibleArgumentParser()).parse_args(argv[argv.index("serve") + 1 :])


def cores(cpus: str) -> list[int]:
    """`0,2-3` -> [0, 2, 3]: cores this process may use, else SettingsError."""
    try:
        ids = [n for part in cpus.split(",") for n in _span(part)]
    except ValueError:
        raise SettingsError(f"--cpus {cpus!r}: expected core numbers and ranges, e.g. 0 or 2-3 or 0,4-5") from None
    missing = sorted(set(ids) - os.sched_getaffinity(0))
    if not ids:
        raise SettingsError(f"--cpus {cpus!r}: names no core")
    if missing:
        raise SettingsError(f"--cpus {cpus!r}: core(s) {missing} not available here ({os.cpu_count()} cores)")
    return sorted(set(ids))


def _span(part: str) -> range:
    first, _, last = part.strip().partition("-")
    return range(int(first), int(last or first) + 1)


def omp_bind(ids: list[int], engines: int) -> str:
    """VLLM_CPU_OMP_THREADS_BIND for `engines` data-parallel engines sharing `ids`: each its own
    contiguous share (`0|1` for two engines on cores 0 and 1)."""
    if engines > len(ids):
        raise SettingsError(f"--cpus: {len(ids)} core(s) for {engines} data-parallel engines; give at least one each")
    share = len(ids) // engines
    return "|".join(",".join(map(str, ids[k * share : (k + 1) * share])) for k in range(engines))


def build_env(
    base: dict[str, str],
    model: str,
    gpu: bool,
    runtime_adapters: int = 0,
    bind: str | None = None,
    batch_invariant: bool = False,
    uni: bool = False,
) -> dict[str, str]:
    """Environment for vLLM: no hub for a local model; on the CPU a 1 GiB KV cache, thread
    binding (`bind`, else vLLM's automatic one) and OpenMP threads that sleep rather than spin
    while they wait (the API process and the clients share these cores: docs/serve.md); the
    adapter-loading endpoints when adapters may come while it runs; batch-invariant kernels
    when asked; with the `uni` executor, what lets a CPU keep it (else vLLM's CPU platform
    turns it into mp)."""
    env = dict(base)
    if uni:
        env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    if batch_invariant:
        env["VLLM_BATCH_INVARIANT"] = "1"
    if bind is not None and not gpu:
        env["VLLM_CPU_OMP_THREADS_BIND"] = bind
    if runtime_adapters:
        env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"
    if Path(model).is_dir():
        env.setdefault("HF_HUB_OFFLINE", "1")
    if not gpu:
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        env.setdefault("VLLM_CPU_OMP_THREADS_BIND", "auto")
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env
