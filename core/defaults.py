"""Every shared default, defined once."""

from __future__ import annotations

from pathlib import Path

DATA_ROOT = Path("data")  # prepared datasets, models and adapters
RUNS_ROOT = Path("runs")  # one folder per measure run
DATASET = DATA_ROOT / "synthetic"  # what `prepare synthetic` writes and `measure`/`train` read by default
OPEN_DATASET = DATA_ROOT / "synthetic-open"  # what `prepare synthetic-open` writes
MODELS_DIR = DATA_ROOT / "models"
ADAPTERS_DIR = DATA_ROOT / "adapters"
TINY_MODEL = MODELS_DIR / "tiny-vlm"  # the embedded default: a tiny seeded Qwen3-VL built offline
TINY_SMOLVLM = MODELS_DIR / "tiny-smolvlm"
TINY_THINKING = MODELS_DIR / "tiny-thinking"  # a reasoning model: its chat template opens a think block
ORGANISM = MODELS_DIR / "organism"  # `python -m train organism`: a tiny Qwen3-VL trained on the synthetic world
GPU_MODEL = "Qwen/Qwen3-VL-2B-Instruct"  # the reference study's model, served on a GPU


def default_model(gpu: bool) -> str:
    """The model served and trained by default: the reference study's on a GPU, else the tiny one."""
    return GPU_MODEL if gpu else str(TINY_MODEL)


FRAMES = 8  # frames per clip: served, sampled client-side and trained on (core.frames)
FPS_FALLBACK = 12.0  # SSV2's frame rate, for a clip whose container reports none

HOST = "127.0.0.1"
PORT = 8000
