"""train: a LoRA on the tiny model with PEFT + Trainer, served by the real vLLM unmerged."""

from __future__ import annotations

import csv
import json
import shutil

import httpx
import pytest
import torch
from transformers import AutoProcessor

from core.ask import AskConfig
from core.frames import FrameSpec
from core.layout import DataLayout
from core.records import read_questions
from measure.ask.client import Item
from tests.conftest import cli, loaded, run_all
from train import fit
from train.data import IGNORE, Collator, examples


def _train(tiny, data, out, *extra):
    r = cli(
        f"train --model {tiny.model} --data {data} --out {out} --variants plain --rank 8 --alpha "
        "16 --lr 2e-3 --batch 4 --per-device-batch 4 --save-steps 3",
        *map(str, extra),
        timeout=900,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads((out / "train_args.json").read_text())


def _losses(out):
    with open(out / "loss.csv") as f:
        return [(int(r["step"]), float(r["loss"])) for r in csv.DictReader(f)]


@pytest.fixture(scope="module")
def trained(tiny, synthetic, tmp_path_factory):
    out = tmp_path_factory.mktemp("trained") / "tiny-trained"
    return out, _train(tiny, synthetic, out, "--max-steps", 6, "--frames", 6, "--sampling", "uniform")


def test_a_few_steps_lower_the_loss_and_the_run_is_recorded(trained):
    out, args = trained
    losses = [loss for _, loss in _losses(out)]
    assert len(losses) == 6 and args["steps"] == 6
    assert sum(losses[-2:]) / 2 < sum(losses[:2]) / 2
    assert args["dataset_manifest_sha256"] and args["precision"] == "fp32" and args["rank"] == 8
    assert args["frames"] == {"frames": 6, "sampling": "uniform", "frame_size": None}  # the frames it saw
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == "tiny-vlm" and cfg["r"] == 8
    assert all(m in cfg["target_modules"] for m in ("q_proj", "k_proj", "v_proj", "o_proj", "language_model"))
    assert (out / "loss.png").stat().st_size > 0 and (out / "adapter_model.safetensors").is_file()


@pytest.mark.parametrize("fmt", ["text", "letters"])
def test_labels_cover_exactly_the_answer_tokens(tiny, synthetic, fmt):
    exs = examples(synthetic, ["plain", "trajectory"], "train", fmt)
    processor = AutoProcessor.from_pretrained(tiny.model)
    batch = Collator(processor, FrameSpec(), str(tiny.model), fmt)(exs[:3])
    for row, ex in enumerate(exs[:3]):
        labels = batch["labels"][row]
        kept = labels[labels != IGNORE]
        assert processor.tokenizer.decode(kept) == ex.answer
        assert ex.answer == (
            ex.question.answer if fmt == "text" else "ABCD"[ex.question.choices.index(ex.question.answer)]
        )
        first = int((labels != IGNORE).nonzero()[0])
        assert (batch["input_ids"][row, first : first + len(kept)] == kept).all()  # the answer ends the sequence
        assert int(batch["attention_mask"][row].sum()) == first + len(kept)


def test_a_clips_questions_are_encoded_as_its_processor_encodes_them(tiny, synthetic):
    """train.fit processes a clip's video once; its other questions come out exactly as the
    processor makes them."""
    rows = fit.encoded(synthetic, ["train"], tiny.model, FrameSpec())
    exs = examples(synthetic, ["plain"], "train")
    collator = Collator(AutoProcessor.from_pretrained(tiny.model), FrameSpec(), str(tiny.model))
    assert len({ex.clip for ex in exs}) < len(exs) == len(rows)  # some clips carry several questions
    for row, ex in zip(rows, exs):
        ref = collator([ex])
        assert row.keys() == ref.keys() and all(torch.equal(row[k], ref[k]) for k in ref), ex.question.id


def test_training_computes_the_answers_logits_alone_and_the_same_loss(tiny, synthetic):
    """train.fit's batches ask the model for the logits the loss needs (the positions before an
    answer token) and nothing else; the loss is the one every position's logits give."""
    from transformers import Qwen3VLForConditionalGeneration

    model = Qwen3VLForConditionalGeneration.from_pretrained(tiny.model, dtype=torch.float32)
    rows = fit.encoded(synthetic, ["train"], tiny.model, FrameSpec())[:5]
    batch = fit.collate(rows, model.config.text_config.pad_token_id)
    kept = batch.pop("logits_to_keep")
    answers = int((batch["labels"] != IGNORE).sum())
    assert int((batch["shift_labels"] != IGNORE).sum()) == answers and len(kept) < batch["labels"].shape[1] // 4
    with torch.no_grad():
        full = model(**{k: v for k, v in batch.items() if k != "shift_labels"})
        alone = model(**batch, logits_to_keep=kept)
    assert alone.logits.shape == (5, len(kept), full.logits.shape[2])
    assert torch.allclose(alone.loss, full.loss, rtol=1e-5), (alone.loss, full.loss)
    assert torch.allclose(alone.logits, full.logits[:, kept], atol=1e-5)


def test_resume_continues_at_the_right_step(trained, tiny, synthetic, tmp_path):
    out = tmp_path / "resumed"  # a copy: the trained adapter other tests serve stays as it was
    shutil.copytree(trained[0], out)
    assert sorted(p.name for p in (out / "checkpoints").glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-6"]
    args = _train(tiny, synthetic, out, "--max-steps", 8, "--resume")
    assert args["steps"] == 8 and args["resumed_from"].endswith("checkpoint-6")
    assert [s for s, _ in _losses(out)][-2:] == [7, 8]


def test_trained_adapter_is_served_unmerged_and_changes_the_answers(trained, server, synthetic, tmp_path):
    """Loaded into the running session server (serve run --runtime-adapters), unmerged."""
    out, _ = trained
    with loaded(server, "trained", out):
        models = {m["id"]: m.get("parent") for m in httpx.get(server.url.models).json()["data"]}
        assert models == {"tiny-vlm": None, "tiny-cued": "tiny-vlm", "trained": "tiny-vlm"}
        layout = DataLayout(synthetic)
        qs = [q for q in read_questions(layout.questions) if q.split == "test"][:6]
        items = [Item(q, m, "plain", layout.clip("plain", q.video_id)) for q in qs for m in ("tiny-vlm", "trained")]
        preds = run_all([server.base_url], items, AskConfig(answer_format="letters"), 4)
        by = {p.key: p for p in preds}
        assert all(p.status == "ok" for p in preds)
        assert any(by[(q.id, "tiny-vlm", "plain")].probs != by[(q.id, "trained", "plain")].probs for q in qs)
        # Measured with other frames than it was trained on (measure's 8 by centers): said, not hidden.
        r = cli(
            f"measure --data {synthetic} --base-url {server.base_url} --runs-dir {tmp_path} --run-id "
            "other-frames --limit 2 --variants plain --models tiny-vlm,trained"
        )
        assert r.returncode == 0, r.stderr[-2000:]
    said = (
        "WARNING: adapter trained was trained on 6 frames by uniform sampling at the processor's size; this "
        "run sends 8 frames by centers sampling at the processor's size, chosen and sized by the client."
    )
    assert json.loads((tmp_path / "other-frames" / "run.json").read_text())["warnings"] == [said]
    assert said in (tmp_path / "other-frames" / "report.md").read_text() and said in r.stderr


def test_image_and_blind_variants_are_trained_as_measure_asks_them(tiny, server, tmp_path):
    """The single-frame control as one image (its clip's first frame), blind as the text alone:
    each example's prompt is as many tokens as the server counted for measure's request, and a
    few steps train on them (a one-frame video once crashed in transformers; blind asked for a
    clip no dataset has)."""
    data = tmp_path / "d"
    cli(f"prepare synthetic --out {data} --videos 4 --variants plain,single-frame,blind --workers 2", check=True)
    exs = examples(data, ["single-frame", "blind"], "train")
    collator = Collator(AutoProcessor.from_pretrained(tiny.model), FrameSpec(), str(tiny.model))
    items = [Item(ex.question, "tiny-vlm", "single-frame" if ex.image else "blind", ex.clip) for ex in exs]
    preds = {(p.question_id, p.variant): p for p in run_all([server.base_url], items, AskConfig(), 4)}
    for ex, item in zip(exs, items):
        batch = collator([ex])
        prompt_len = int((batch["labels"][0] == IGNORE).sum())
        assert preds[ex.question.id, item.variant].prompt_tokens == prompt_len, (item.variant, ex.question.id)
        assert ("pixel_values" in batch) == ex.image and "pixel_values_videos" not in batch
    out = tmp_path / "adapter"
    r = cli(f"train --model {tiny.model} --data {data} --out {out} --variants single-frame,blind --max-steps 2")
    assert r.returncode == 0 and "(single-frame,blind)" in r.stderr, r.stderr[-3000:]


def test_a_mixture_trains_in_its_declared_ratio_and_long_examples_are_left_out(tiny, synthetic, tmp_path):
    """`--mix`: two datasets (multiple-choice and open questions) in the declared shares of the
    examples, counted within 1 %, each drawn without repeating one; `--max-text-tokens` leaves
    out the longer examples, names them, and the histogram of lengths is kept beside the adapter."""
    cli(f"prepare synthetic-open --out {tmp_path / 'open'} --videos 30 --variants plain --test-share 0.2", check=True)
    r = cli(
        f"train --model {tiny.model} --mix {synthetic}:0.7,{tmp_path / 'open'}:0.3 --out {tmp_path / 'mixed'} "
        "--variants plain --rank 4 --alpha 8 --batch 4 --per-device-batch 4 --max-steps 1 --max-text-tokens 37"
    )
    assert r.returncode == 0, r.stderr[-3000:]
    args = json.loads((tmp_path / "mixed" / "train_args.json").read_text())
    taken = {path: part["taken"] for path, part in args["mix"].items()}
    total = sum(taken.values())
    assert abs(taken[str(synthetic)] / total - 0.7) <= 0.01 and abs(taken[str(tmp_path / "open")] / total - 0.3) <= 0.01
    assert all(part["taken"] <= part["available"] for part in args["mix"].values())
    assert "train: mixture " in r.stderr and args["max_text_tokens"] == 37
    assert args["left_out_long"] and f"over --max-text-tokens 37: {args['left_out_long'][0]}" in r.stderr
    assert args["examples"] == total - len(args["left_out_long"])
    assert (tmp_path / "mixed" / "tokens.png").stat().st_size > 0


def test_open_questions_train_on_their_reference_answer(tiny, tmp_path):
    cli(f"prepare synthetic-open --out {tmp_path / 'open'} --videos 10 --variants plain --test-share 0.2", check=True)
    found = examples(tmp_path / "open", ["plain"], "train")
    assert found and all(ex.answer == ex.question.answer and ex.question.type == "open" for ex in found)
