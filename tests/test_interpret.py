"""interpret: the token <-> pixel geometry proven on the model itself, stroke masks against the
renderer on real SSV2 clips, a planted model's region found, the intervention variants, and
the stage end to end on a run measured by the session's real vLLM server."""

from __future__ import annotations

import csv
import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from core import runs
from core.decoding import decord
from core.errors import UserError
from core.layout import DataLayout, RunLayout
from core.profiles import IDEFICS3
from core.prompt import targets
from core.records import read_questions
from interpret import capture, effects, inputs, stage
from interpret.attention import forward, grid_of, region_rows, video_features
from interpret.choice import allowed, choose, pieces
from interpret.geometry import video_positions
from interpret.regions import REGIONS, ClipBoxes, block_shares, clip_shares, strokes
from prepare.variants import GREY, RENDERERS, CueOptions, Source
from tests.conftest import REPO, SAMPLE, assert_order_free, cli, copy_run, needs_sample


def _load(model_dir: Path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(
        model_dir, dtype=torch.float32, attn_implementation=capture.register()
    )
    capture.label_vision_layers(model)
    return model.eval(), AutoProcessor.from_pretrained(model_dir)


def _frames(n: int = 4, h: int = 64, w: int = 96, seed: int = 0) -> inputs.Sent:
    pixels = np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    return inputs.Sent(pixels, list(range(n)), 4.0, n)


def _embeddings(model, enc) -> torch.Tensor:
    """The language model's input embeddings at the video tokens."""
    seen = {}

    def hook(_module, _args, kwargs):
        seen["e"] = kwargs["inputs_embeds"][0].detach().clone()

    handle = model.model.language_model.register_forward_pre_hook(hook, with_kwargs=True)
    with torch.no_grad():
        model(**enc)
    handle.remove()
    return seen["e"][video_positions(enc["input_ids"], model.config.video_token_id)]


def test_one_pixel_block_changes_exactly_the_token_the_geometry_names(tiny):
    """With the vision encoder's attention switched off (each patch on its own, as far as the
    2 x 2 merge), a change to one token's pixel block in one frame of one group changes that
    token's input embedding and no other; and the patch the encoder order names changes."""
    model, processor = _load(tiny.model)
    for block in model.model.visual.blocks:
        block.attn.proj.weight.data.zero_()
        block.attn.proj.bias.data.zero_()
    sent = _frames()
    enc = inputs.encode(processor, None, sent)
    grid = grid_of(model, enc)
    assert (grid.groups, grid.token_rows, grid.token_cols) == (2, 2, 3)
    patches = {}
    model.model.visual.patch_embed.register_forward_hook(lambda m, a, out: patches.setdefault(len(patches), out))
    before = _embeddings(model, enc)
    for group, row, col in [(0, 0, 0), (1, 1, 2), (1, 0, 1)]:
        changed = sent.frames.copy()
        ys, xs = grid.token_pixels(row, col)
        changed[grid.frames(group).start + 1, ys, xs] = 255 - changed[grid.frames(group).start + 1, ys, xs]
        after = _embeddings(model, inputs.encode(processor, None, replace(sent, frames=changed)))
        moved = np.flatnonzero((after - before).abs().amax(dim=1).numpy() > 1e-5)
        index = group * grid.token_rows * grid.token_cols + row * grid.token_cols + col
        assert moved.tolist() == [index] and grid.token_block(index) == (group, row, col)
    per_group = grid.rows * grid.cols
    diff = (patches[3] - patches[0]).abs().amax(dim=1).numpy()  # the last change vs the first pass
    changed = np.flatnonzero(diff > 1e-6)
    assert set(changed // per_group) == {1}  # the third change was in group 1
    cells = {grid.patch_cell(j % per_group) for j in changed}
    ys, xs = grid.token_pixels(0, 1)
    assert cells == {(r, c) for r in range(ys.start // 16, ys.stop // 16) for c in range(xs.start // 16, xs.stop // 16)}


def test_a_model_family_it_cannot_map_is_refused_in_one_line(tmp_path):
    layout = RunLayout(tmp_path / "r")
    shutil.copytree(Path(__file__).parent / "data" / "v2", layout.root)
    run = runs.load(layout)
    run.record.ask = replace(run.record.ask, media="frames", profiles={"tiny-smolvlm": IDEFICS3})
    with pytest.raises(UserError, match="maps the Qwen-VL family only, not yet idefics3"):
        stage.check(run)


@pytest.fixture(scope="module")
def box_clip(synthetic):
    """A synthetic clip with boxes: (its boxes file, a question on it, its plain clip)."""
    layout = DataLayout(synthetic)
    q = next(q for q in read_questions(layout.questions) if q.type == "object" and layout.boxes(q.video_id).is_file())
    return layout.boxes(q.video_id), q, layout.clip("plain", q.video_id)


def test_a_planted_model_is_found_where_it_was_planted(tiny, box_clip):
    """Every language layer's attention pulled (by a bias) to the visual token most inside the
    asked object: the object region gets that token's object share of the mass, far above its area."""
    boxes, question, clip = box_clip
    model, processor = _load(tiny.model)
    vr = decord.VideoReader(str(clip))
    idx = [0, 2, 4, 6]
    frames = vr.get_batch(idx).asnumpy()
    h, w = (max(32, s - s % 32) for s in frames.shape[1:3])
    frames = np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in frames])
    sent = inputs.Sent(frames, idx, float(vr.get_avg_fps()), len(vr))
    enc = inputs.encode(processor, question, sent)
    grid = grid_of(model, enc)
    shares = clip_shares(boxes, "bbox", question, idx, grid.pixels)
    tokens = block_shares(shares, grid, grid.patch * grid.merge)  # (groups, 4, rows, cols)
    obj = REGIONS.index("object")
    g, r, c = np.unravel_index(np.argmax(tokens[:, obj]), tokens[:, obj].shape)
    target = video_positions(enc["input_ids"], model.config.video_token_id)[
        g * grid.token_rows * grid.token_cols + r * grid.token_cols + c
    ]
    bias = torch.zeros(enc["input_ids"].shape[1])
    bias[target] = 30.0
    for layer in model.model.language_model.layers:
        layer.self_attn.planted_bias = bias
    att = forward(model, enc)
    rows = [x for x in region_rows(att, att, shares, grid) if x["source"] == "llm" and x["layer"] == "mean"]
    mass = {x["region"]: x["mass"] for x in rows}
    area = {x["region"]: x["area"] for x in rows}
    assert sum(mass.values()) == pytest.approx(1.0, abs=1e-6)
    assert mass["object"] == pytest.approx(tokens[g, obj, r, c], abs=0.01)
    assert mass["object"] > 0.3 and mass["object"] / area["object"] > 5


@needs_sample
@pytest.mark.parametrize("cue", ["bbox", "trajectory", "path", "box-path"])
def test_stroke_masks_are_the_pixels_the_renderer_changes(sample_boxes, cue):
    """On real SSV2 sample clips: the cue drawn on the real frames changes only pixels of the
    stroke mask, and all but the few already of the stroke's colour."""
    for path, frames in sample_boxes:
        clip = ClipBoxes.load(path)
        drawn = RENDERERS[cue](
            Source(frames, list(clip.boxes), path.stem, 0), CueOptions(clip.thickness, clip.cue_hand)
        )
        changed = (drawn != frames).any(axis=-1)
        mask = strokes(path, cue)
        assert changed.sum() > 0 and not (changed & ~mask).any()
        assert (mask & ~changed).sum() <= 0.01 * mask.sum()


@pytest.fixture(scope="module")
def sample_boxes(tmp_path_factory):
    """Boxes files written by prepare from the real SSV2 sample, with each clip's source frames."""
    from prepare.pipeline import Options, prepare_ssv2

    out = tmp_path_factory.mktemp("sample-boxes")
    prepare_ssv2(
        SAMPLE / "videos",
        SAMPLE / "labels",
        [SAMPLE / "bounding_box_smthsmth_sample.json"],
        out,
        Options(test_videos=2, variants=("plain",), workers=2),
    )
    found = []
    for path in sorted((out / "boxes").glob("*.json")):
        clip = ClipBoxes.load(path)
        frames = (
            decord.VideoReader(str(SAMPLE / "videos" / f"{path.stem}.webm")).get_batch(range(clip.frames)).asnumpy()
        )
        assert frames.shape[1:3] == clip.size[::-1]
        found.append((path, frames))
    assert len(found) >= 2
    return found


def test_interventions_mask_what_they_name(box_clip):
    """object-masked fills the objects' boxes, context-masked everything else, cue-only keeps
    nothing of the video but the strokes."""
    from prepare.cues import box_mask, objects

    path, _, clip = box_clip
    boxes = ClipBoxes.load(path)
    frames = np.random.default_rng(1).integers(0, 256, (boxes.frames, boxes.size[1], boxes.size[0], 3), np.uint8)
    src = Source(frames, list(boxes.boxes), path.stem, 0)
    opts = CueOptions(boxes.thickness, boxes.cue_hand)
    t = next(i for i, b in enumerate(boxes.boxes) if b)
    inside_objects = box_mask(frames.shape[1:3], boxes.boxes[t], objects(boxes.boxes[t]))
    inside_any = box_mask(frames.shape[1:3], boxes.boxes[t])
    mean = frames[t].mean(axis=(0, 1)).round()
    masked = RENDERERS["object-masked"](src, opts)[t]
    assert (masked[inside_objects] == mean).all() and (masked[~inside_any] == frames[t][~inside_any]).all()
    context = RENDERERS["context-masked"](src, opts)[t]
    assert (context[~inside_any] == mean).all() and (context[inside_any] == frames[t][inside_any]).all()
    alone = RENDERERS["cue-only"](src, opts)
    stroke = strokes(path, "box-path")
    assert (alone[~stroke] == GREY).all() and (alone[stroke] != GREY).any(axis=-1).mean() > 0.9


# ---------- the stage, on a run the real server answered ----------


def _interpret(layout: RunLayout, *args) -> str:
    r = cli("interpret", layout.root, *args)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout + r.stderr


def test_interpret_end_to_end_resumes_and_reports_from_the_run_alone(measured, tmp_path):
    measured = copy_run(measured, tmp_path)  # interpret writes into the run folder
    out = _interpret(measured, "--limit", 1, "--pictures", 1)
    run = runs.load(measured)
    assert len(run.attention) == 4 and "4 prediction(s) interpreted, 0 kept from before" in out
    assert all(r.same_input for r in run.attention)  # the rebuilt prompt is the run's, token for token
    agree = sum(r.agrees for r in run.attention)
    assert f"same reply as the run {agree}/4 " in out
    with open(measured.regions_csv) as f:
        rows = list(csv.DictReader(f))
    assert {"question_id", "model", "variant", "source", "layer", "region", "mass", "area"} <= set(rows[0])
    sums: dict[tuple, float] = {}
    for row in rows:
        if row["source"] != "agreement":
            k = (row["question_id"], row["model"], row["variant"], row["cue_of"], row["source"], row["layer"])
            sums[k] = sums.get(k, 0.0) + float(row["mass"])
    assert sums and all(v == pytest.approx(1.0, abs=1e-6) for v in sums.values())
    assert {row["source"] for row in rows} == {"llm", "vision", "agreement"}
    rec = run.attention[0]
    assert measured.heatmap(rec.model, rec.question_id, rec.variant, "mean").is_file()
    report_md = measured.report_md.read_bytes()
    assert b"## Where the model looked (interpret)" in report_md
    out = _interpret(measured, "--limit", 2, "--pictures", 1)  # one more question: the first is kept
    assert "4 prediction(s) interpreted, 4 kept from before" in out
    assert len(runs.load(measured).attention) == 8
    first = measured.report_md.read_bytes()
    assert cli("measure", "report", measured.root).returncode == 0
    assert measured.report_md.read_bytes() == first  # a function of the run folder alone
    assert cli("measure", "view", measured.root).returncode == 0
    data = (measured.root / "view" / "data.js").read_text()
    assert f'"{rec.model}/{rec.question_id}/{rec.variant}":["mean"' in data
    r = cli("interpret", measured.root, "--layers", "1")  # interpreted with every layer: not mixed
    assert r.returncode == 2 and "resume with the same --layers" in r.stderr
    assert_order_free(measured)  # predictions and interpret's records, shuffled


def test_interpret_refuses_what_it_cannot_map_in_one_line(measured, server, synthetic, tmp_path):
    measured = copy_run(measured, tmp_path)
    gone = tmp_path / "data"
    shutil.copytree(synthetic, gone)
    pred = runs.load(measured).predictions[0]
    DataLayout(gone).clip(pred.variant, pred.video_id).unlink()
    r = cli("interpret", measured.root, "--data", gone, "--models", pred.model, "--variants", pred.variant)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and lines[-1].startswith("error: ") and "Traceback" not in r.stderr
    assert f"{pred.video_id}" in lines[-1] and "missing" in lines[-1]
    r = cli("interpret", measured.root, "--variants", "plain,single-frame,blind")  # once a KeyError
    assert r.returncode == 2 and "--variants single-frame,blind: asked with an image or with no media" in r.stderr
    r = cli("interpret", measured.root, "--layers", "0,9", "--limit", 1)
    assert r.returncode == 2 and "has language layers 0..1" in r.stderr and "--layers [9]: tiny-" in r.stderr
    data_run = cli(
        f"measure --data {synthetic} --base-url {server.base_url} --runs-dir {tmp_path} --run-id d --limit 1 "
        "--media data"
    )
    assert data_run.returncode == 0, data_run.stderr[-2000:]
    r = cli("interpret", tmp_path / "d")
    assert r.returncode == 2 and "the server chose the frames" in r.stderr.strip().splitlines()[-1]


def test_a_killed_interpret_continues_where_it_stopped(measured, tmp_path):
    """SIGKILL once some records are written: the resume computes only the rest, each once.
    (The interpret process runs at the lowest priority on one thread, so this test sees its
    first record at once, long before its 16th.)"""
    import signal
    import subprocess
    import sys
    import time

    layout = copy_run(measured, tmp_path)
    argv = [sys.executable, "-m", "interpret", str(layout.root), "--limit", "4", "--pictures", "0"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=lambda: os.nice(19)
    )
    while proc.poll() is None and (not layout.attention.is_file() or not layout.attention.read_bytes().count(b"\n")):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = len(runs.load(layout).attention)
    assert 0 < before < 16, before
    out = _interpret(layout, "--limit", 4, "--pictures", 0)
    assert f"{16 - before} prediction(s) interpreted, {before} kept from before" in out
    keys = [
        json.loads(line)["question_id"] + json.loads(line)["variant"] + json.loads(line)["model"]
        for line in layout.attention.read_text().splitlines()
    ]
    assert len(keys) == len(set(keys)) == 16


def test_a_knockout_hides_keys_from_the_answer_in_its_layers_only():
    """The mask of a knocked-out layer: causal, and the keys hidden from the queries at and after
    the answer position; a cached continuation gets an explicit causal mask (bottom-right)."""

    class Layer:
        layer_idx = 1

    q, k = torch.zeros(1, 2, 3, 8), torch.zeros(1, 2, 5, 8)  # 3 queries continue 2 cached positions
    causal = capture.knockout_mask(Layer, q, k, None)[0, 0]
    assert torch.equal(torch.isinf(causal), torch.tensor([[0, 0, 0, 1, 1], [0, 0, 0, 0, 1], [0, 0, 0, 0, 0]]).bool())
    with effects.knocked_out({1}, torch.tensor([0, 2]), first_query=3):
        hidden = capture.knockout_mask(Layer, q, k, None)[0, 0]
        Layer.layer_idx = 0
        assert capture.knockout_mask(Layer, q, k, None) is not None  # a layer outside the window: causal only
        assert not torch.isinf(capture.knockout_mask(Layer, q, k, None)[0, 0, 2]).any()
    assert not torch.isinf(hidden[0, [0, 2]]).any()  # query at position 2: before the answer
    assert torch.isinf(hidden[1:, [0, 2]]).all()  # positions 3 and 4: the answer and the reply
    assert not capture.KNOCKOUT


@pytest.mark.slow
def test_effects_remove_regions_inside_the_model_against_baselines(measured, tmp_path):
    """`interpret --effects all`: per region, ablation and knockout in each window against random
    and high-norm tokens of the same count, in effects.csv and the report's causal section; the
    replies' log-probabilities from the cache are the full teacher-forced ones."""
    measured = copy_run(measured, tmp_path)
    _interpret(measured, "--limit", 1, "--pictures", 0, "--effects", "all", "--models", "tiny-vlm")
    with open(measured.effects_csv) as f:
        rows = list(csv.DictReader(f))
    assert {(r["method"], r["window"]) for r in rows} == {("ablation", "all")} | {
        ("knockout", w) for w in ("early", "middle", "late", "all")
    }
    assert {r["target"] for r in rows} == {"region", "random", "norm"} and {r["model"] for r in rows} == {"tiny-vlm"}
    frame = pd.DataFrame(rows).astype({"tokens": float, "spread": float})
    for _, same in frame.groupby(["question_id", "variant", "region"]):
        assert same["tokens"].nunique() == 1  # each removal counted from what it changed: baselines of the same count
    random_rows = frame[(frame["target"] == "random") & (frame["method"] == "ablation")]
    assert len(random_rows) and (random_rows["spread"] > 0).all()  # 16 draws from outside the region differ
    report = measured.report_md.read_text()
    assert "## What each region does (interpret --effects)" in report and "Holm within the declared contrasts" in report
    run = runs.load(measured)
    pred = next(p for p in run.predictions if p.model == "tiny-vlm" and p.status == "ok" and p.frame_indices)
    with stage.loaded(run, "tiny-vlm", "cpu") as (model, processor):
        sent = inputs.sent(pred, DataLayout(run.data).clip(pred.variant, pred.video_id), run.record.ask)
        question = run.questions[pred.question_id]
        enc = inputs.encode(processor, question, sent, run.record.ask.answer_format)
        scorer = effects.Scorer.of(model, processor.tokenizer, enc, pred.choices, run.record.ask.answer_format)
        full = []
        for reply in scorer.replies:
            ids = torch.cat([enc["input_ids"], reply[None]], dim=1)
            text = torch.zeros_like(reply)[None]
            longer = dict(enc) | {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
            longer["mm_token_type_ids"] = torch.cat([enc["mm_token_type_ids"], text], dim=1)
            with torch.no_grad():
                logits = model(**longer).logits[0, enc["input_ids"].shape[1] - 1 : -1]
            full.append(float(torch.log_softmax(logits.float(), -1).gather(1, reply[:, None]).sum()))
    assert scorer.log_probs() == pytest.approx(full, abs=1e-4)


def test_occlusion_batches_score_as_one_ablation_at_a_time(measured):
    """The occlusion map's batched passes give each token's ablation the log-probability the
    cached scorer gives it alone; a question's pass on the clip's kept vision output is the
    whole pass's."""
    run = runs.load(measured)
    pred = next(p for p in run.predictions if p.model == "tiny-vlm" and p.status == "ok" and p.frame_indices)
    fmt = run.record.ask.answer_format
    with stage.loaded(run, "tiny-vlm", "cpu") as (model, processor):
        sent = inputs.sent(pred, DataLayout(run.data).clip(pred.variant, pred.video_id), run.record.ask)
        enc = inputs.encode(processor, run.questions[pred.question_id], sent, fmt)
        scorer = effects.Scorer.of(model, processor.tokenizer, enc, pred.choices, fmt)
        answer = pred.choices.index(pred.reply)
        cut = [effects.ablated(scorer.features, np.array([t])) for t in (0, 5, scorer.tokens - 1)]
        alone = [scorer.log_probs(c)[answer] for c in cut]
        grid = grid_of(model, enc)
        assert effects.reply_log_probs(scorer, cut, answer) == pytest.approx(alone, abs=1e-4)
        features = video_features(model, enc)  # the tower run once
        whole, reused = forward(model, enc), forward(model, enc, features)
        assert torch.allclose(whole.logits, reused.logits, atol=1e-5) and not reused.vision
        assert all(np.allclose(whole.llm[k], reused.llm[k], atol=1e-6) for k in whole.llm)
        options = targets(pred.choices, fmt)
        said = choose(model, processor.tokenizer, enc, options, features)
        texts, start, eos = pieces(processor.tokenizer), enc["input_ids"].shape[1], processor.tokenizer.eos_token_id

        def allow(_batch, seq):
            return allowed(options, "".join(texts[i] for i in seq[start:].tolist()), texts, eos)

        longest = max(map(len, options)) + 1
        ids = model.generate(**enc, do_sample=False, max_new_tokens=longest, prefix_allowed_tokens_fn=allow)
        reply = "".join(texts[i] for i in ids[0, start:].tolist() if i != eos)
        assert said == reply  # greedy from the cache, as transformers' constrained generate
        occluded = effects.occlusion(scorer, answer, grid, (1, 1))  # a window of one token: each alone
        windows = effects.centered(grid, (2, 3))
        assert all(len(set(w.tolist())) == 6 and w.max() < scorer.tokens for w in windows)
        assert all(t in w for t, w in enumerate(windows) if grid.token_rows >= 2 and grid.token_cols >= 3)
    assert occluded.shape == (grid.groups, grid.token_rows, grid.token_cols)
    assert occluded.reshape(-1)[5] == pytest.approx(alone[1] - scorer.log_probs()[answer], abs=1e-4)


def test_two_shards_read_as_one_process(measured, tmp_path):
    """`interpret --shard 0/2` and `--shard 1/2` (as two machines sharing the run folder would
    run them) split the videos; their records read as one, and the report, regions.csv and
    heat maps they leave are byte for byte those of one process."""
    one, two = copy_run(measured, tmp_path / "one"), copy_run(measured, tmp_path / "two")
    _interpret(one, "--limit", 4, "--pictures", 2, "--models", "tiny-vlm")
    said = [
        _interpret(two, "--limit", 4, "--pictures", 2, "--models", "tiny-vlm", "--shard", s) for s in ("0/2", "1/2")
    ]
    assert all(f"interpret (shard {s}/2): " in x for s, x in zip((0, 1), said))
    halves = [{r.video_id for r in stage_records(two, s)} for s in (0, 1)]
    assert all(halves) and not halves[0] & halves[1]
    assert sorted(x.key for x in runs.load(two).attention) == sorted(x.key for x in runs.load(one).attention)
    for name in ("report.md", "report.json", "interpret/regions.csv"):
        assert (two.root / name).read_bytes() == (one.root / name).read_bytes(), name
    pictures = lambda run: sorted(p.relative_to(run.root) for p in run.interpret.rglob("*.png"))  # noqa: E731
    assert pictures(two) == pictures(one) and pictures(one)
    bad = cli("interpret", two.root, "--shard", "2/2")
    assert bad.returncode == 2 and "'2/2': use i/n with 0 <= i < n" in bad.stderr


def stage_records(layout: RunLayout, shard: int) -> list:
    from core.records import attention_from_dict, key_of
    from core.store import JsonlStore

    return list(JsonlStore(layout.attention_shard(shard, 2), attention_from_dict, key_of).load().values())


def test_ablated_inputs_are_built_a_batch_at_a_time(monkeypatch):
    """Memory grows with the tokens, not their square: however many removals are scored (an
    occlusion map has one per token), at most one batch of ablated inputs is alive at a time;
    each removal's count is what it changed."""
    import gc
    import weakref

    class Features:
        def __init__(self, rows):
            self.pooler_output = (rows,)
            self.deepstack_features = [(rows.clone(),)]

    alive, most = set(), 0

    def ablated(features, tokens):
        nonlocal most
        out = effects_ablated(features, tokens)
        alive.add(id(out))
        weakref.finalize(out, alive.discard, id(out))
        most = max(most, len(alive))
        return out

    effects_ablated = effects.ablated
    monkeypatch.setattr(effects, "ablated", ablated)
    monkeypatch.setattr(effects, "reply_log_probs", lambda scorer, cut, choice: np.zeros(len(cut)))
    scorer = effects.Scorer(None, {}, Features(torch.arange(200.0).reshape(100, 2)), [torch.tensor([1])] * 3, None)
    draws = [np.array([t]) for t in range(100)] + [np.array([1, 2, 3])]
    lp, counts = effects.ablations(scorer, draws)
    gc.collect()
    assert lp.shape == (101, 3) and most <= effects.BATCH, most
    assert counts == [1] * 100 + [3]
