"""--media frames: what the client sends is what the model consumes, keyed so vLLM's cache
never serves stale media, and the same answers however requests are batched."""

from __future__ import annotations

import json
import shutil

from core.ask import AskConfig
from core.frames import FrameSpec, processed_size
from core.layout import DataLayout
from core.records import read_questions
from measure.ask.client import Item, media_for
from measure.ask.media import MediaSpec, cache_key, prepare
from tests.conftest import ask_each, cli


def _item(synthetic, model, variant="plain"):
    layout = DataLayout(synthetic)
    q = next(q for q in read_questions(layout.questions) if q.split == "test")
    return Item(q, model, variant, layout.clip(variant, q.video_id))


def _ask(server, pairs):
    return ask_each(server.base_url, pairs)


def _frames_cfg(tiny, **kw):
    return AskConfig(processors={"tiny-vlm": str(tiny.model), "tiny-cued": str(tiny.model)}, **kw)


def test_frames_are_the_centres_of_equal_spans_and_sized_by_the_processor(tiny, synthetic):
    item = _item(synthetic, "tiny-vlm")
    sent = media_for(item, _frames_cfg(tiny))
    centres = [2, 6, 11, 15, 20, 24, 29, 33]  # 36 frames in 8 spans of 4.5: int(4.5 * (i + 0.5)), by hand
    assert sent.frame_indices == centres
    assert sent.media_io == {
        "fps": 12.0,
        "frames_indices": centres,
        "total_num_frames": 36,
        "duration": 3.0,
        "num_frames": 8,
    }
    w, h = sent.frame_size
    assert (w, h) == processed_size(str(tiny.model), 8, 240, 320) and (w % 32, h % 32) == (0, 0)
    assert processed_size(str(tiny.model), 8, h, w) == (w, h)  # the server's own resize is a no-op
    url = sent.parts[0]["video_url"]["url"]
    assert url.startswith("data:video/jpeg;base64,") and url.count(",") == 8


def test_cache_keys_change_with_the_pixels_sent(tmp_path, synthetic):
    item = _item(synthetic, "m")
    spec = MediaSpec(item.clip, "plain", "frames", "video", FrameSpec())
    keys = {
        cache_key(spec, "c1", (128, 128), [1, 2]),
        cache_key(spec, "c2", (128, 128), [1, 2]),
        cache_key(spec, "c1", (160, 128), [1, 2]),
        cache_key(spec, "c1", (128, 128), [1, 3]),
        cache_key(MediaSpec(item.clip, "trajectory", "frames", "video", FrameSpec()), "c1", (128, 128), [1, 2]),
    }
    assert len(keys) == 5
    copy = tmp_path / "copy.mp4"
    shutil.copyfile(item.clip, copy)
    assert (
        prepare(MediaSpec(copy, "plain", "frames", "video", FrameSpec())).parts[0]["uuid"]
        == prepare(spec).parts[0]["uuid"]
    )
    four = MediaSpec(item.clip, "plain", "frames", "video", FrameSpec(4))
    assert prepare(four).parts[0]["uuid"] != prepare(spec).parts[0]["uuid"]


def test_one_clip_at_two_sizes_and_two_frame_counts_gives_four_token_counts(server, tiny, synthetic):
    item = _item(synthetic, server.base_model)
    cfgs = [
        _frames_cfg(tiny, frames=FrameSpec(n, frame_size=size)) for size in ((128, 128), (288, 192)) for n in (4, 8)
    ]
    preds = _ask(server, [(item, cfg) for cfg in cfgs + cfgs])  # each twice: the second from vLLM's cache
    assert all(p.status == "ok" for p in preds), [p.error for p in preds]
    tokens = [p.prompt_tokens for p in preds]
    assert len(set(tokens[:4])) == 4 and tokens[4:] == tokens[:4], tokens
    assert [p.frame_size for p in preds[:4]] == [[128, 128], [128, 128], [288, 192], [288, 192]]
    assert [len(p.frame_indices) for p in preds[:4]] == [4, 8, 4, 8]


def test_frames_and_data_modes_give_the_model_the_same_number_of_tokens(server, tiny, synthetic):
    """Same frame count (the server's 8) and the size the processor makes of the clip."""
    items = [_item(synthetic, server.base_model, v) for v in ("plain", "trajectory")]
    frames = _ask(server, [(i, _frames_cfg(tiny)) for i in items])
    data = _ask(server, [(i, AskConfig(media="data")) for i in items])
    for f, d in zip(frames, data):
        assert f.status == d.status == "ok", (f.error, d.error)
        assert f.prompt_tokens == d.prompt_tokens and f.frame_size and d.frame_size is None


def test_batching_does_not_change_answers_in_frames_mode(server, synthetic, tmp_path):
    common = [
        "--data",
        synthetic,
        "--base-url",
        server.base_url,
        "--runs-dir",
        tmp_path,
        "--limit",
        6,
        "--answer-format",
        "letters",
        "--media",
        "frames",
    ]
    runs = {}
    for c in (1, 32):
        r = cli("measure", *map(str, common), "--run-id", f"c{c}", "--concurrency", str(c), timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        rows = [json.loads(line) for line in (tmp_path / f"c{c}" / "predictions.jsonl").read_text().splitlines()]
        runs[c] = {(p["question_id"], p["model"], p["variant"]): p for p in rows}
    assert len(runs[1]) == len(runs[32]) == 6 * 2 * 2
    for key, one in runs[1].items():
        many = runs[32][key]
        assert (one["reply"], one["prompt_tokens"], one["frame_indices"], one["frame_size"]) == (
            many["reply"],
            many["prompt_tokens"],
            many["frame_indices"],
            many["frame_size"],
        ), key
        assert max(abs(one["probs"][c] - many["probs"][c]) for c in one["choices"]) < 1e-3, key
    run = json.loads((tmp_path / "c32" / "run.json").read_text())
    assert run["ask"]["media"] == "frames" and run["ask"]["processors"]["tiny-vlm"]


def test_an_undecodable_clip_is_that_items_error(server, synthetic, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(synthetic, data, ignore=shutil.ignore_patterns("raw"))
    item = _item(data, server.base_model)
    item.clip.write_bytes(b"not a video at all")
    r = cli(
        f"measure --data {data} --base-url {server.base_url} --runs-dir {tmp_path} --run-id bad "
        "--limit 3 --variants plain",
        timeout=600,
    )
    assert r.returncode == 1 and "ended as errors" in r.stderr, r.stderr[-2000:]
    rows = [json.loads(line) for line in (tmp_path / "bad" / "predictions.jsonl").read_text().splitlines()]
    bad = [row for row in rows if row["video_id"] == item.question.video_id]
    assert bad and all(row["status"] == "error" and row["error"].startswith("clip unreadable") for row in bad)
    assert all(row["status"] == "ok" for row in rows if row["video_id"] != item.question.video_id)
