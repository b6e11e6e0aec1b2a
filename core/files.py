"""Writing files so that readers never see half of one and others can read them."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from core.errors import DataError


def umask() -> int:
    """The process umask, read without changing it (Linux), else by setting it back at once."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _publish(tmp: Path, path: Path, mode: int) -> None:
    """Give `tmp` the mode a plain open()/mkdir() would (tempfile makes it private), then
    rename it to `path`."""
    os.chmod(tmp, mode & ~umask())
    os.replace(tmp, path)


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temp file name beside `path` for a writer that needs a name (an encoder, parquet);
    renamed to `path` when the block ends, removed if it raises."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        _publish(tmp, path, 0o666)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write to a temp file beside `path`, then rename: readers never see half a file."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)


def plain_modes(root: Path) -> None:
    """Give everything under `root` the mode a plain open()/mkdir() would: writers that make
    their files private (safetensors' does, 0600) then respect the umask like the rest."""
    mask = umask()
    for path in root.rglob("*"):
        os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)


def atomic_dir(out: Path, fill: Callable[[Path], None]) -> Path:
    """Build a directory in a temp dir beside `out` (`fill(tmp)`), then swap it in: no half-built
    directory is ever seen under `out`; its files get the umask's modes."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        fill(tmp)
        plain_modes(tmp)
        if out.exists():
            shutil.rmtree(out)
        _publish(tmp, out, 0o777)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def to_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_json(path: Path, obj: Any) -> None:
    atomic_write(path, to_json(obj))


def read_json(path: Path) -> Any:
    """json.load with an error that names the file, line and column."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: malformed JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None


def sha256(path: Path) -> str | None:
    """Hex digest of a file's bytes, streamed; None when there is no such file."""
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
