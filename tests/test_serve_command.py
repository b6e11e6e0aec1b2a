"""serve.command: settings -> vLLM argv (pure), adapters, environment."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from core.defaults import GPU_MODEL, TINY_MODEL, default_model
from serve import command
from serve.command import Settings, SettingsError


def _opt(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_argv_is_a_list_with_the_settings(tmp_path):
    argv = command.build_argv(
        Settings(model=str(tmp_path), host="127.0.0.1", port=8123, frames=6, max_model_len=2048), python="py"
    )
    assert argv[:5] == ["py", "-m", "serve.launch", "serve", str(tmp_path)]
    assert all(isinstance(a, str) for a in argv)
    assert _opt(argv, "--served-model-name") == tmp_path.name
    assert _opt(argv, "--port") == "8123" and _opt(argv, "--host") == "127.0.0.1"
    assert _opt(argv, "--max-model-len") == "2048"
    assert json.loads(_opt(argv, "--media-io-kwargs")) == {"video": {"min_frames": 6, "max_frames": 6}}
    assert "--enable-lora" not in argv and "--api-key" not in argv
    assert "--trust-request-mm-kwargs" in argv and _opt(argv, "--mm-processor-cache-gb") == "4"


def test_adapters_get_lora_flags_and_a_spare_slot(tiny):
    s = Settings(model=str(tiny.model), adapters={"a": tiny.adapter, "b": tiny.adapter}, extra=["--seed", "3"])
    argv = command.build_argv(s)
    assert "--enable-lora" in argv
    assert _opt(argv, "--max-loras") == "3"  # adapters + 1: see build_argv
    assert _opt(argv, "--max-lora-rank") == "8"
    i = argv.index("--lora-modules")
    assert argv[i + 1 : i + 3] == [f"a={tiny.adapter}", f"b={tiny.adapter}"]
    assert argv[-2:] == ["--seed", "3"]


def test_a_cpu_server_of_one_engine_runs_the_model_in_the_engines_process(tmp_path):
    """auto: the uni executor on a CPU serving one engine on at most 2 unpinned cores, with what keeps
    vLLM's CPU platform from turning it into mp; else vLLM's own choice, unless asked."""

    def chosen(gpus: int = 0, **settings) -> str | None:
        argv = command.build_argv(Settings(model=str(tmp_path), **settings), gpus=gpus)
        return _opt(argv, "--distributed-executor-backend") if "--distributed-executor-backend" in argv else None

    assert chosen() == ("uni" if len(os.sched_getaffinity(0)) <= 2 else None)
    assert chosen(executor="mp") == "mp" and chosen(cpus="0", executor="uni") == "uni"
    assert chosen(cpus="0") is chosen(data_parallel_size=2) is chosen(gpus=1) is None
    env = command.build_env({}, str(tmp_path), gpu=False, uni=True)
    assert env["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
    assert "VLLM_ENABLE_V1_MULTIPROCESSING" not in command.build_env({}, str(tmp_path), gpu=False)


def test_hub_model_defaults():
    argv = command.build_argv(Settings(model=GPU_MODEL, api_key="k", trust_request_mm_kwargs=True))
    assert _opt(argv, "--served-model-name") == GPU_MODEL
    assert _opt(argv, "--max-model-len") == "16384"
    assert json.loads(_opt(argv, "--media-io-kwargs")) == {"video": {"min_frames": 8, "max_frames": 8}}
    assert _opt(argv, "--api-key") == "k" and "--trust-request-mm-kwargs" in argv
    assert default_model(gpu=True) == GPU_MODEL
    assert default_model(gpu=False) == str(TINY_MODEL)


@pytest.mark.parametrize("value", ["noequals", "=path", "a=", "a=x,a=y"])
def test_bad_adapter_lists_are_refused(value):
    with pytest.raises(SettingsError):
        command.parse_adapters(value)


def test_parse_adapters():
    assert command.parse_adapters("a=/x, b=y/z") == {"a": command.Path("/x"), "b": command.Path("y/z")}
    assert command.parse_adapters("") == {}


def test_missing_adapter_dir_and_bad_frames(tmp_path):
    with pytest.raises(SettingsError, match="not found"):
        command.build_argv(Settings(model="m", adapters={"x": tmp_path / "nope"}))
    with pytest.raises(SettingsError, match="frames"):
        command.build_argv(Settings(model="m", frames=1))


def test_discover_adapters_by_base_model(tiny, tmp_path):
    root = tiny.adapter.parent
    assert command.discover_adapters(str(tiny.model), root) == {"tiny-cued": tiny.adapter}
    assert command.discover_adapters("other-model", root) == {}
    assert command.discover_adapters(str(tiny.model), tmp_path / "none") == {}


def test_env_is_offline_only_for_local_models(tmp_path):
    local = command.build_env({}, str(tmp_path), gpu=False)
    assert local["HF_HUB_OFFLINE"] == "1" and local["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert local["OMP_WAIT_POLICY"] == "PASSIVE"  # a CPU engine's waiting threads leave the shared cores
    assert command.build_env({"OMP_WAIT_POLICY": "ACTIVE"}, str(tmp_path), gpu=False)["OMP_WAIT_POLICY"] == "ACTIVE"
    hub = command.build_env({}, GPU_MODEL, gpu=True)
    assert "HF_HUB_OFFLINE" not in hub and "VLLM_CPU_KVCACHE_SPACE" not in hub and "OMP_WAIT_POLICY" not in hub


def test_local_media_is_one_data_directory_never_root(tmp_path):
    argv = command.build_argv(Settings(model="m", allowed_media=tmp_path))
    assert _opt(argv, "--allowed-local-media-path") == str(tmp_path.resolve())
    for bad in (Path("/"), tmp_path / "missing"):
        with pytest.raises(SettingsError, match="data directory"):
            command.build_argv(Settings(model="m", allowed_media=bad))


def test_profiles_pick_the_media_limits(tiny, tmp_path):
    from core.profiles import IDEFICS3, QWEN_VL, profile_for
    from serve import tiny as builder

    smol = builder.build_idefics3(tmp_path / "tiny-smolvlm")
    assert profile_for(str(smol)) == IDEFICS3 and profile_for(str(tiny.model)) == QWEN_VL
    assert profile_for("HuggingFaceTB/SmolVLM2-2.2B-Instruct") == IDEFICS3 and profile_for(GPU_MODEL) == QWEN_VL
    argv = command.build_argv(Settings(model=str(smol), frames=6))
    assert json.loads(_opt(argv, "--limit-mm-per-prompt")) == {"image": 6} and "--media-io-kwargs" not in argv
    argv = command.build_argv(Settings(model=str(tiny.model), frames=6))
    assert json.loads(_opt(argv, "--limit-mm-per-prompt")) == {"video": 1, "image": 1}


def test_vllm_scale_out_flags_are_checked_and_passed(tmp_path, monkeypatch):
    base = dict(model=str(tmp_path), frames=8)
    # Default: one engine, no parallel flags; compact JSON for judges.
    argv = command.build_argv(Settings(**base), python="py")
    assert "--tensor-parallel-size" not in argv and "--data-parallel-size" not in argv
    assert json.loads(_opt(argv, "--structured-outputs-config")) == {
        "backend": "xgrammar",
        "disable_any_whitespace": True,
    }
    # 1 node x 8 GPUs: 4 engines of TP 2 behind one endpoint.
    argv = command.build_argv(Settings(**base, tensor_parallel_size=2, data_parallel_size=4), python="py", gpus=8)
    assert (_opt(argv, "--tensor-parallel-size"), _opt(argv, "--data-parallel-size")) == ("2", "4")
    assert "--data-parallel-backend" not in argv
    with pytest.raises(SettingsError, match="8 GPUs needed on this node .* 4 visible"):
        command.build_argv(Settings(**base, tensor_parallel_size=2, data_parallel_size=4), gpus=4)
    with pytest.raises(SettingsError, match="must be >= 1"):
        command.build_argv(Settings(**base, data_parallel_size=0))
    with pytest.raises(SettingsError, match="data-parallel-size-local"):
        command.build_argv(Settings(**base, data_parallel_size=2, data_parallel_size_local=3))
    # 2 nodes x 8 GPUs over Ray: 16 engines, 8 here; refused with the how-to when Ray is absent.
    ray = Settings(**base, data_parallel_size=16, data_parallel_size_local=8, data_parallel_backend="ray")
    monkeypatch.setattr(command.importlib.util, "find_spec", lambda name: None if name == "ray" else object())
    with pytest.raises(SettingsError, match="pip install ray.*ray start --head"):
        command.build_argv(ray, gpus=8)
    monkeypatch.setattr(command.importlib.util, "find_spec", lambda name: object())
    argv = command.build_argv(ray, python="py", gpus=8)
    assert (
        _opt(argv, "--data-parallel-size"),
        _opt(argv, "--data-parallel-size-local"),
        _opt(argv, "--data-parallel-backend"),
    ) == ("16", "8", "ray")


def _vision_lora(tiny, out: Path) -> Path:
    """A real PEFT adapter of the tiny model with LoRA on its vision tower's fused qkv too."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen3VLForConditionalGeneration

    model = Qwen3VLForConditionalGeneration.from_pretrained(tiny.model, dtype=torch.float32)
    get_peft_model(model, LoraConfig(r=8, target_modules=["q_proj", "qkv"])).save_pretrained(out)
    cfg = json.loads((out / "adapter_config.json").read_text())
    (out / "adapter_config.json").write_text(json.dumps(dict(cfg, base_model_name_or_path="tiny-vlm")))
    return out


def test_adapters_vllm_would_serve_wrongly_are_refused_by_name(tiny, tmp_path):
    command.check_adapters({"cued": tiny.adapter}, str(tiny.model))  # LLM-only, made for it: fine
    vision = _vision_lora(tiny, tmp_path / "vision")
    with pytest.raises(
        SettingsError, match=r"adapter vis .*vision-tower modules \(model\.visual\.blocks\.0\.attn\.qkv"
    ):
        command.check_adapters({"vis": vision}, str(tiny.model))
    command.check_adapters({"vis": vision}, str(tiny.model), tower_lora=True)  # vLLM applies them then
    saved = tmp_path / "saved"
    shutil.copytree(tiny.adapter, saved)
    cfg = json.loads((saved / "adapter_config.json").read_text())
    (saved / "adapter_config.json").write_text(json.dumps(dict(cfg, modules_to_save=["lm_head"])))
    with pytest.raises(SettingsError, match=r"adapter kept .*modules_to_save \['lm_head'\]"):
        command.check_adapters({"kept": saved}, str(tiny.model))
    with pytest.raises(SettingsError, match="adapter cued .*trained on tiny-vlm, not on the served model Qwen/"):
        command.check_adapters({"cued": tiny.adapter}, GPU_MODEL)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "serve",
            "run",
            "--model",
            str(tiny.model),
            "--adapters",
            f"vis={vision},kept={saved}",
            "--port",
            str(command.free_port()),
        ],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2, r.stderr[-2000:]
    assert "adapter kept" in r.stderr and "adapter vis" not in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow  # reads vLLM's model classes (an import of vLLM's model code)
def test_an_adapter_with_vision_lora_is_served_with_it_or_refused(tiny, tmp_path, capsys):
    """An adapter with LoRA on the vision tower or merger (the study's recipe trains the merger):
    `serve run` turns vLLM's tower/connector LoRA on where vLLM's class for the model supports it,
    and refuses in one line where it does not (vLLM would drop the weights with a warning)."""
    import typer

    from serve.__main__ import tower_lora

    vision = _vision_lora(tiny, tmp_path / "vision")
    assert tower_lora({"vis": vision}, str(tiny.model), ["--seed", "3"]) == ["--seed", "3", command.TOWER_LORA]
    assert "vis hold(s) LoRA on the vision merger/tower: vLLM's tower/connector LoRA on" in capsys.readouterr().err
    assert tower_lora({"vis": vision}, str(tiny.model), [command.TOWER_LORA]) == [command.TOWER_LORA]
    assert tower_lora({"cued": tiny.adapter}, str(tiny.model), []) == []  # language model only: nothing to add
    text_only = tmp_path / "text-only"
    text_only.mkdir()
    (text_only / "config.json").write_text(json.dumps({"architectures": ["Qwen2ForCausalLM"]}))
    with pytest.raises(typer.Exit):
        tower_lora({"vis": vision}, str(text_only), [])
    said = capsys.readouterr().err
    assert "cannot apply to" in said and "(Qwen2ForCausalLM): retrain on the language model only" in said


def test_cpus_pin_a_server_and_give_each_engine_its_share(tmp_path):
    """`serve run --cpus`: cores checked against this machine's, split among data-parallel
    engines for vLLM's OpenMP binding (on a CPU only; a GPU server is only pinned)."""
    here = sorted(os.sched_getaffinity(0))
    assert command.cores(f"{here[0]}") == [here[0]] and command.cores(",".join(map(str, here))) == here
    assert command.omp_bind([0, 1], 2) == "0|1" and command.omp_bind([0, 1, 2, 3], 2) == "0,1|2,3"
    assert command.omp_bind([2, 3], 1) == "2,3"
    env = command.build_env({}, str(tmp_path), gpu=False, bind="0|1")
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == "0|1"
    assert "VLLM_CPU_OMP_THREADS_BIND" not in command.build_env({}, str(tmp_path), gpu=True, bind="0|1")
    for bad, said in [("x", "expected core numbers"), ("9999", "not available here"), ("3-1", "names no core")]:
        with pytest.raises(command.SettingsError, match=said):
            command.cores(bad)
    with pytest.raises(command.SettingsError, match="1 core\\(s\\) for 2 data-parallel engines"):
        command.omp_bind([0], 2)


def test_batch_invariance_is_set_where_vllm_has_it_and_refused_on_a_cpu(tmp_path):
    """`serve run --batch-invariant`: VLLM_BATCH_INVARIANT=1 for vLLM; on this CPU machine one
    error line (exit 2) before anything starts."""
    assert command.build_env({}, str(tmp_path), gpu=True, batch_invariant=True)["VLLM_BATCH_INVARIANT"] == "1"
    assert "VLLM_BATCH_INVARIANT" not in command.build_env({}, str(tmp_path), gpu=True)
    r = subprocess.run(
        [sys.executable, "-m", "serve", "run", "--batch-invariant", "--model", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0, r.stderr
    assert r.stderr.startswith("error: --batch-invariant:") and "not on the CPU backend" in r.stderr


def test_pixels_are_normalised_as_the_model_was_trained_and_float32_stays_float32(tiny, tmp_path):
    """vLLM normalises videos on the device with the image processor's mean and std: a model
    whose two processors disagree (the tiny models built before: CLIP's mean for images) is
    served with the processor normalising each modality; one that agrees keeps vLLM's default.
    On a CPU, `--dtype auto` is a local checkpoint's own (vLLM would downcast float32)."""
    argv = command.build_argv(Settings(model=str(tiny.model)))
    assert "--no-mm-device-do-normalize" not in argv and _opt(argv, "--dtype") == "float32"
    old = shutil.copytree(tiny.model, tmp_path / "old")
    config = json.loads((old / "processor_config.json").read_text())
    config["image_processor"] |= {"image_mean": [0.48145466, 0.4578275, 0.40821073]}
    (old / "processor_config.json").write_text(json.dumps(config))
    assert "--no-mm-device-do-normalize" in command.build_argv(Settings(model=str(old)))
    hub = command.build_argv(Settings(model=GPU_MODEL))
    assert "--no-mm-device-do-normalize" not in hub and _opt(hub, "--dtype") == "auto"
    assert _opt(command.build_argv(Settings(model=str(tiny.model)), gpus=1), "--dtype") == "auto"
    assert _opt(command.build_argv(Settings(model=str(tiny.model), dtype="bfloat16")), "--dtype") == "bfloat16"
