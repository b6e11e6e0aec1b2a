"""The GPU command lines, checked without a GPU: every vLLM command `serve run` would start on a
GPU node (GPU detection forced) is parsed by vLLM 0.32's own `vllm serve` parser, the release
both locks pin, and each value read back; the environment it sets names only variables vLLM
reads. The scripts that start servers or training (serve.sh, reproduce.sh, lora.sh) are run
with GPUs faked (an `nvidia-smi` on PATH listing them) and stopped at the command they start."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from core.profiles import profile_for
from serve.__main__ import command_for
from serve.command import TOWER_LORA, Settings, vllm_args

REPO = Path(__file__).resolve().parents[1]
QWEN_2B, QWEN_4B = "Qwen/Qwen3-VL-2B-Instruct", "Qwen/Qwen3-VL-4B-Instruct"
SMOLVLM2 = "HuggingFaceTB/SmolVLM2-500M-Video-Instruct"
LLM = ["q_proj", "k_proj", "v_proj", "o_proj"]
MERGER = ["model.visual.merger.linear_fc1", "model.visual.merger.linear_fc2"]
CAPTURE = """import json, os, sys
if sys.argv[:2] == ["-m", "serve"] and "--served-model-name" in sys.argv or sys.argv[0].endswith("torchrun"):
    json.dump({"argv": sys.argv, "env": dict(os.environ)}, open(os.environ["CAPTURED"], "w"))
    os._exit(0)
"""


def adapter(root: Path, name: str, modules: list[str], base: str = QWEN_2B) -> Path:
    """A PEFT adapter's config (all `serve` reads of it), LoRA r 64 on `modules`."""
    path = root / name
    path.mkdir()
    cfg = {"base_model_name_or_path": base, "r": 64, "lora_alpha": 64, "target_modules": modules, "peft_type": "LORA"}
    (path / "adapter_config.json").write_text(json.dumps(cfg))
    return path


def vllm_env_names() -> set[str]:
    import vllm.envs

    return set(vllm.envs.environment_variables)


def check_env(env: dict[str, str], base: dict[str, str]) -> dict[str, str]:
    """What serve adds to the environment: every VLLM_ name one vLLM 0.32 reads."""
    added = {k: v for k, v in env.items() if base.get(k) != v}
    unknown = sorted(k for k in added if k.startswith("VLLM_") and k not in vllm_env_names())
    assert not unknown, f"environment variables vLLM 0.32 does not read: {unknown}"
    return added


CASES = {
    "qwen3-vl-2b": (Settings(model=QWEN_2B), 1),
    "qwen3-vl-4b": (Settings(model=QWEN_4B), 1),
    "smolvlm2-500m": (Settings(model=SMOLVLM2), 1),
    "data-parallel-8": (Settings(model=QWEN_2B, data_parallel_size=8), 8),
    "tensor-parallel-2-x-dp-4": (Settings(model=QWEN_4B, tensor_parallel_size=2, data_parallel_size=4), 8),
    "batch-invariant": (Settings(model=QWEN_2B, batch_invariant=True), 1),
    "reasoning": (Settings(model="Qwen/Qwen3-VL-2B-Thinking"), 1),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_gpu_command_serve_builds_is_read_by_vllms_own_parser(case):
    settings, gpus = CASES[case]
    resolved, argv, env = command_for(settings, gpus, [], {})
    args = vllm_args(argv)  # an unknown flag: argparse exits, the test fails naming it
    assert args.model_tag == settings.model and args.served_model_name == [settings.model]
    assert args.max_model_len == 16384 and args.dtype == "auto" and args.port == 8000
    assert args.limit_mm_per_prompt == profile_for(settings.model).limit_mm_per_prompt(8)
    assert args.trust_request_mm_kwargs
    assert args.mm_processor_cache_gb == 4 and args.enable_prompt_tokens_details
    assert args.structured_outputs_config.backend == "xgrammar"
    assert args.distributed_executor_backend is None  # vLLM's own choice on a GPU
    assert args.tensor_parallel_size == settings.tensor_parallel_size
    assert args.data_parallel_size == settings.data_parallel_size
    if "Qwen" in settings.model:
        assert args.media_io_kwargs == {"video": {"min_frames": 8, "max_frames": 8}}
    assert (args.reasoning_parser or None) == ("qwen3" if case == "reasoning" else None)
    added = check_env(env, {})
    assert ("VLLM_BATCH_INVARIANT" in added) == (case == "batch-invariant")
    assert not any(k.startswith("VLLM_CPU") for k in added)  # the CPU's settings stay off a GPU


@pytest.mark.parametrize("merger", [False, True], ids=["llm-only", "with-merger"])
def test_adapters_on_a_gpu_are_read_by_vllms_own_parser(tmp_path, monkeypatch, merger):
    """The study's recipe (LLM + merger) turns vLLM's tower/connector LoRA on; the README's
    (LLM only) does not; rank and slots read back as vLLM reads them. (No hub here: whether
    vLLM supports it on the model's architecture is not read, and serve says so.)"""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)  # read once, at import
    path = adapter(tmp_path, "cued", LLM + (MERGER if merger else []))
    _, argv, _ = command_for(Settings(model=QWEN_2B, adapters={"cued": path}), 1, [], {})
    args = vllm_args(argv)
    assert args.enable_lora and args.max_lora_rank == 64 and args.max_loras == 2
    assert [(m.name, m.path) for m in args.lora_modules] == [("cued", str(path))]
    assert args.enable_tower_connector_lora is merger and (TOWER_LORA in argv) is merger


def fake_gpus(tmp_path: Path, n: int) -> dict[str, str]:
    """An environment where `nvidia-smi -L` lists `n` GPUs and the first vLLM (or torchrun)
    command a script starts is written to tmp_path/captured.json instead of run; setup.sh,
    which the scripts run first, keeps this machine's CPU build (it would install the GPU one)."""
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    smi = bin_ / "nvidia-smi"
    smi.write_text("#!/bin/sh\n" + "".join(f'echo "GPU {i}: Fake (UUID: GPU-{i})"\n' for i in range(n)))
    smi.chmod(0o755)
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(CAPTURE)
    return {
        **os.environ,
        "PATH": f"{bin_}:{os.environ['PATH']}",
        "PYTHONPATH": str(site),
        "CAPTURED": str(tmp_path / "captured.json"),
        "VISUAL_CUES_BUILD": "cpu",
        "HF_HUB_OFFLINE": "1",  # no hub here: the model's config is not read, and serve says so
    }


def captured(tmp_path: Path, argv: list[str], env: dict[str, str]) -> dict:
    said = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    out = tmp_path / "captured.json"
    assert out.is_file(), f"{shlex.join(argv)} started no vLLM or torchrun command: {said.stderr[-2000:]}"
    return json.loads(out.read_text())


@pytest.mark.slow
def test_serve_sh_on_an_8_gpu_node_starts_what_vllm_reads(tmp_path):
    """`MODEL=Qwen/Qwen3-VL-2B-Instruct DP=8 sh scripts/serve.sh`, as docs/serve.md shows it."""
    env = fake_gpus(tmp_path, 8) | {"MODEL": QWEN_2B, "DP": "8", "PORT": "8123"}
    got = captured(tmp_path, ["sh", "scripts/serve.sh"], env)
    args = vllm_args(["python", "-m", "serve.launch", *got["argv"][1:]])
    assert args.model_tag == QWEN_2B and args.data_parallel_size == 8 and args.port == 8123
    check_env(got["env"], env)


@pytest.mark.slow
def test_reproduce_sh_serves_the_studys_adapter_as_vllm_reads_it(tmp_path):
    """The `serve run` line reproduce.sh prints (DRY_RUN) and runs, on a GPU, with the study's
    adapter (merger weights): vLLM's tower/connector LoRA on."""
    said = subprocess.run(
        ["sh", "scripts/reproduce.sh", "--dry-run"], cwd=REPO, capture_output=True, text=True, timeout=120
    ).stdout
    line = next(x for x in said.splitlines() if " -m serve run " in x)
    argv = shlex.split(line.removeprefix("+ ").removesuffix(" &"))
    study = adapter(tmp_path, "lora", LLM + MERGER)
    argv = [sys.executable if a.endswith("python") else a for a in argv]
    argv = [re.sub(r"^finetuned=.*", f"finetuned={study}", a) for a in argv]
    got = captured(tmp_path, argv, fake_gpus(tmp_path, 1))
    args = vllm_args(["python", "-m", "serve.launch", *got["argv"][1:]])
    assert args.model_tag == QWEN_2B and args.enable_tower_connector_lora
    assert [m.name for m in args.lora_modules] == ["finetuned"]


@pytest.mark.slow
def test_lora_sh_on_4_gpus_runs_torchrun_with_train_s_own_options(tmp_path):
    """`GPUS=4 sh scripts/lora.sh`: torchrun's own parser reads its line, and train's command
    line accepts every option lora.sh passes (parsed by train's CLI, not run)."""
    from torch.distributed.run import get_args_parser

    from train.__main__ import app

    got = captured(tmp_path, ["sh", "scripts/lora.sh"], fake_gpus(tmp_path, 4) | {"GPUS": "4"})
    run = get_args_parser().parse_args(got["argv"][1:])
    assert run.nproc_per_node == "4" and run.module and run.training_script == "train"
    import typer

    ctx = typer.main.get_command(app).make_context("train", list(run.training_script_args))
    assert ctx.params["rank"] == 64 and ctx.params["alpha"] == 64 and ctx.params["model"] == QWEN_2B
