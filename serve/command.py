"""Server settings -> the vLLM argument list and environment (pure: no side effects)."""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from serve.profiles import profile_for

TINY_MODEL = Path("data/models/tiny-vlm")
TINY_SMOLVLM = Path("data/models/tiny-smolvlm")
ADAPTERS_DIR = Path("data/adapters")
GPU_MODEL = "Qwen/Qwen3-VL-2B-Instruct"
LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # what vLLM's --max-lora-rank accepts


class SettingsError(ValueError):
    """Bad server settings; the message says which one and why."""


def has_gpu() -> bool:
    """True when an NVIDIA GPU is visible (the same test scripts/setup.sh uses)."""
    if not shutil.which("nvidia-smi"):
        return False
    return subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0


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


def default_model(gpu: bool) -> str:
    return GPU_MODEL if gpu else str(TINY_MODEL)


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


def served_name(model: str) -> str:
    """The name clients use: a local directory's name, or the hub id as given."""
    path = Path(model)
    return path.name if path.is_dir() else model


def adapter_config(path: Path) -> dict:
    cfg = path / "adapter_config.json"
    if not cfg.is_file():
        raise SettingsError(f"adapter {path}: no adapter_config.json")
    return json.loads(cfg.read_text())


def discover_adapters(model: str, root: Path = ADAPTERS_DIR) -> dict[str, Path]:
    """Every adapter under `root` whose base model is `model` (by served name or path)."""
    if not root.is_dir():
        return {}
    wanted = {model, served_name(model), str(Path(model).resolve())}
    found = {}
    for cfg in sorted(root.glob("*/adapter_config.json")):
        base = str(json.loads(cfg.read_text()).get("base_model_name_or_path", ""))
        if base in wanted or Path(base).name == served_name(model):
            found[cfg.parent.name] = cfg.parent
    return found


@dataclass
class Settings:
    model: str
    adapters: dict[str, Path] = field(default_factory=dict)
    host: str = "127.0.0.1"
    port: int = 8000
    frames: int | None = 8  # frames per clip, set server-wide; None: the processor's default
    max_model_len: int | None = None  # None: 4096 for a local model, 16384 for a hub model
    dtype: str = "auto"
    api_key: str | None = None
    trust_request_mm_kwargs: bool = False
    allowed_media: Path | None = None  # a data directory clients may name with file:// URLs
    extra: list[str] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"


def max_lora_rank(adapters: dict[str, Path]) -> int:
    """The smallest rank vLLM accepts that fits every adapter."""
    need = max((int(adapter_config(p).get("r", 8)) for p in adapters.values()), default=8)
    for rank in LORA_RANKS:
        if rank >= need:
            return rank
    raise SettingsError(f"adapter rank {need} exceeds vLLM's maximum {LORA_RANKS[-1]}")


def build_argv(s: Settings, python: str = sys.executable) -> list[str]:
    """The vLLM command as an argument list (never a shell string)."""
    if s.frames is not None and s.frames < 2:
        raise SettingsError(f"frames per clip must be >= 2 (got {s.frames})")
    argv = [
        python, "-m", "serve.launch", "serve", s.model,
        "--served-model-name", served_name(s.model),
        "--host", s.host,
        "--port", str(s.port),
        "--max-model-len", str(s.max_model_len or (4096 if Path(s.model).is_dir() else 16384)),
        "--dtype", s.dtype,
    ]
    profile = profile_for(s.model)
    argv += ["--limit-mm-per-prompt", json.dumps(profile.limit_mm_per_prompt(s.frames or 8))]
    if s.frames is not None and profile.video_as == "video":
        argv += ["--media-io-kwargs", json.dumps({"video": {"min_frames": s.frames, "max_frames": s.frames}})]
    if s.adapters:
        missing = [f"{n}={p}" for n, p in s.adapters.items() if not p.is_dir()]
        if missing:
            raise SettingsError(f"adapter directory not found: {', '.join(missing)}")
        # One LoRA slot more than adapters: vLLM's PyTorch LoRA ops (the CPU backend) index
        # the slot with -1 for base-model tokens, i.e. the LAST slot, so in a batch mixing
        # base and adapter requests the base requests got the adapter's deltas (measured
        # here: 12/12 base answers equal to the adapter's under concurrency). A spare,
        # never-filled last slot makes that index hit zeros.
        argv += ["--enable-lora", "--max-loras", str(len(s.adapters) + 1),
                 "--max-lora-rank", str(max_lora_rank(s.adapters)), "--lora-modules"]
        argv += [f"{name}={path}" for name, path in s.adapters.items()]
    if s.api_key:
        argv += ["--api-key", s.api_key]
    if s.trust_request_mm_kwargs:
        argv += ["--trust-request-mm-kwargs"]
    if s.allowed_media is not None:
        media = s.allowed_media.resolve()
        if media == Path(media.anchor) or not media.is_dir():
            raise SettingsError(f"allowed media path {s.allowed_media}: must be an existing data directory, not / or a file")
        argv += ["--allowed-local-media-path", str(media)]
    return argv + list(s.extra)


def build_env(base: dict[str, str], model: str, gpu: bool) -> dict[str, str]:
    """Environment for vLLM: no hub for a local model; on the CPU a 1 GiB KV cache and
    thread binding."""
    env = dict(base)
    if Path(model).is_dir():
        env.setdefault("HF_HUB_OFFLINE", "1")
    if not gpu:
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        env.setdefault("VLLM_CPU_OMP_THREADS_BIND", "auto")
    return env
