"""The frame store: what a clip's media became (its sampled, sized, JPEG-encoded frames, the
parts and metadata of `measure.ask.media.Prepared`), kept between runs so the second, third
and tenth run over the same clips decode none.

- An entry's key is the clip's content hash and everything that decides the pixels
  (`measure.ask.media.store_key`): a changed clip, frame spec, processor or encoder is a
  miss, never a stale hit.
- Written atomically (a temp file renamed), so two runs at once at worst write one entry
  twice; readers never see half of one.
- Checked on read: the first line is the SHA-256 of the rest; a corrupt or truncated entry
  is rebuilt (and rewritten), never sent.
- Bounded: past `limit_bytes`, the least recently used entries go (every `TRIM_EVERY` writes
  of a process, and once per run).
- An optimisation only: a store that cannot be written is left alone, the run goes on.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from core.files import atomic_write

TRIM_EVERY = 64  # writes between two trims, per process
GB = 10**9


@dataclass(frozen=True)
class FrameStore:
    root: Path
    limit_bytes: int

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict | None:
        """The entry's fields, or None when absent, corrupt or truncated; a hit is marked used."""
        path = self.path(key)
        try:
            head, body = path.read_bytes().split(b"\n", 1)
        except (OSError, ValueError):
            return None
        if hashlib.sha256(body).hexdigest().encode() != head:
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # least recently used is by modification time
        return json.loads(body)

    def put(self, key: str, fields: dict) -> None:
        body = json.dumps(fields, separators=(",", ":")).encode()
        with contextlib.suppress(OSError):
            atomic_write(self.path(key), hashlib.sha256(body).hexdigest().encode() + b"\n" + body)
            _written[self.root] = _written.get(self.root, 0) + 1
            if _written[self.root] % TRIM_EVERY == 0:
                self.trim()

    def trim(self) -> int:
        """Remove the least recently used entries until the store fits; returns bytes removed."""
        entries = []
        for path in self.root.glob("*/*.json"):
            with contextlib.suppress(OSError):
                st = path.stat()
                entries.append((st.st_mtime, st.st_size, path))
        total, removed = sum(size for _, size, _ in entries), 0
        for _, size, path in sorted(entries):
            if total - removed <= self.limit_bytes:
                break
            with contextlib.suppress(OSError):  # another run may have removed it first
                path.unlink()
                removed += size
        return removed

    def writable(self) -> str | None:
        """Why the store cannot be written here (None: it can)."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".probe-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            return f"{self.root}: {e.strerror}"
        return None


_written: dict[Path, int] = {}  # writes per store in this process
