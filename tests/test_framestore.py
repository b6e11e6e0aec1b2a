"""The frame store: a second run over the same clips decodes none, sends the same bytes, and
never sends a corrupt, truncated or stale entry; bounded, and safe under two writers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace

import pytest

from core.files import umask
from core.frames import FrameSpec
from core.layout import DataLayout
from measure.ask import media
from measure.ask.framestore import FrameStore
from measure.ask.media import MediaSpec
from tests.conftest import REPO, cli


def _spec(clip, tiny, frames: int = 8) -> MediaSpec:
    return MediaSpec(clip, "plain", "frames", "video", FrameSpec(frames=frames), processor=str(tiny.model))


def _clips(synthetic, n: int = 3):
    return sorted(DataLayout(synthetic).clips_dir("plain").glob("*.mp4"))[:n]


def _same(a, b) -> bool:
    return (a.parts, a.media_io, a.frame_indices, a.frame_size) == (b.parts, b.media_io, b.frame_indices, b.frame_size)


def test_an_entry_is_kept_read_back_and_checked(synthetic, tiny, tmp_path):
    store = FrameStore(tmp_path / "store", 10**9)
    spec = _spec(_clips(synthetic)[0], tiny)
    first = media.prepare(spec, store)
    (entry,) = (tmp_path / "store").glob("*/*.json")
    assert not first.from_store and entry.stat().st_mode & 0o777 == 0o666 & ~umask()
    again = media.prepare(spec, store)
    assert again.from_store and _same(again, first) and _same(first, media.prepare(spec))  # store or not: same bytes
    body = entry.read_bytes()
    for broken in (body[:-1] + bytes([body[-1] ^ 1]), body[: len(body) // 2], b""):
        entry.write_bytes(broken)
        rebuilt = media.prepare(spec, store)
        assert not rebuilt.from_store and _same(rebuilt, first)  # never sent: decoded again...
        assert entry.read_bytes() == body  # ...and written back whole
    assert not media.prepare(_spec(spec.clip, tiny, frames=4), store).from_store  # another frame spec: a miss
    changed = tmp_path / "changed.mp4"
    shutil.copy(spec.clip, changed)
    with open(changed, "ab") as f:
        f.write(b"\0")  # other bytes: another content hash
    assert not media.prepare(replace(spec, clip=changed), store).from_store


def test_the_least_recently_used_entries_go_first(tmp_path):
    store = FrameStore(tmp_path, 0)
    for i, key in enumerate(("aa1", "bb2", "cc3")):
        store.put(key, {"x": key * 100})
        os.utime(store.path(key), (1000 + i, 1000 + i))  # written in this order
    size = store.path("aa1").stat().st_size
    assert store.get("aa1") is not None  # used last: kept
    store = FrameStore(tmp_path, 2 * size)
    assert store.trim() == size
    assert [store.get(k) is not None for k in ("aa1", "bb2", "cc3")] == [True, False, True]


WRITER = """
import sys
from pathlib import Path
from core.frames import FrameSpec
from measure.ask import media
from measure.ask.framestore import FrameStore
store = FrameStore(Path(sys.argv[1]), 10**9)
for _ in range(3):
    for clip in sys.argv[3:]:
        spec = media.MediaSpec(Path(clip), "plain", "frames", "video", FrameSpec(), processor=sys.argv[2])
        media.prepare(spec, store)
"""


@pytest.mark.slow
def test_two_runs_at_once_leave_every_entry_whole(synthetic, tiny, tmp_path):
    clips = _clips(synthetic, 4)
    argv = [sys.executable, "-c", WRITER, str(tmp_path), str(tiny.model), *map(str, clips)]
    procs = [subprocess.Popen(argv, cwd=REPO) for _ in range(2)]
    assert [p.wait(300) for p in procs] == [0, 0]
    store = FrameStore(tmp_path, 10**9)
    assert len(list(tmp_path.glob("*/*.json"))) == len(clips) and not list(tmp_path.glob("*/.*"))  # no temp left
    for clip in clips:
        kept = media.prepare(_spec(clip, tiny), store)
        assert kept.from_store and _same(kept, media.prepare(_spec(clip, tiny)))


def _replies(run) -> dict:
    rows = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    return {(r["question_id"], r["model"], r["variant"]): (r["text"], r["prompt_tokens"]) for r in rows}


def test_a_second_run_over_the_same_clips_decodes_none(server, synthetic, tmp_path):
    store = tmp_path / "store"
    common = f"measure --data {synthetic} --base-url {server.base_url} --runs-dir {tmp_path} --limit 4"
    runs = []
    for rid in ("first", "second"):
        r = cli(f"{common} --run-id {rid} --frame-store {store} --frame-store-gb 1")
        assert r.returncode == 0, r.stderr[-2000:]
        runs.append(json.loads((tmp_path / rid / "run.json").read_text())["sessions"][-1])
    clips = runs[0]["clips_prepared"]
    assert clips > 0 and runs[0]["clips_from_store"] == 0
    assert (runs[1]["clips_prepared"], runs[1]["clips_from_store"]) == (0, clips)
    assert f"clips: 0 prepared, {clips} from the frame store ({store})" in r.stderr
    assert _replies(tmp_path / "first") == _replies(tmp_path / "second")  # same bytes sent, same replies
    off = cli(f"{common} --run-id off --frame-store {tmp_path / 'none'} --frame-store-gb 0")
    assert off.returncode == 0 and not (tmp_path / "none").exists()
    (tmp_path / "file").write_text("")
    blocked = cli(f"{common} --run-id blocked --frame-store {tmp_path / 'file'}")
    assert blocked.returncode == 0 and f"warning: frame store {tmp_path / 'file'}: " in blocked.stderr
    assert f"clips: {clips} prepared, 0 from the frame store\n" in blocked.stderr  # no store named: none used
    assert _replies(tmp_path / "blocked") == _replies(tmp_path / "first")
