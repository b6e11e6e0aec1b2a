"""Every command line the README and docs/ show, run through the real command line in the form
shown. A synopsis (`[--opt X]`) is run with every option it lists; a placeholder (`data/<name>`,
`URL`, `RUN`) gets a real value made here. What cannot run on this machine (a hub model, a
GPU) runs as far as it can: `serve.sh` up to the vLLM command it would start (its port is
taken), a training recipe parsed by the real `train` command. The table must list exactly
the lines the docs show, so a doc and its test cannot drift apart."""

from __future__ import annotations

import importlib
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import webbrowser
from pathlib import Path

import pytest
import typer

from core.layout import DataLayout
from tests.conftest import REPO, SAMPLE, cli, copy_run, needs_sample

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
CSV = "measure/references/visual_cues_qwen3_vl_2b.csv"


def documented() -> list[str]:
    """Every command line of the ```sh blocks, continuation lines joined, comments cut."""
    lines = []
    for page in PAGES:
        for block in re.findall(r"```sh\n(.*?)```", page.read_text(), re.S):
            for line in re.sub(r"\\\n\s*", " ", block).splitlines():
                line = re.split(r"\s+#\s", line)[0].strip()
                if line and not line.startswith("#"):
                    lines.append(" ".join(line.split()))
    return lines


# documented line -> (how it is checked, the command run: {placeholders} filled by the fixture)
SERVE_SH = ("serve.sh", "")  # sh scripts/serve.sh with the line's environment and arguments, its port taken
PROFILE = ("meta", "run by tests/test_profile.py with every option shown (it starts servers of its own)")
# lora.sh: sh scripts/lora.sh with the line's environment, up to where the hub model would be loaded
TABLE = {
    "sh scripts/demo.sh": ("meta", "the main job: run before each landing; each step is run here"),
    "sh scripts/test.sh": ("meta", "this suite itself, as .ci/run runs it"),
    "sh scripts/lock.sh": (
        "meta",
        "a fresh install of the newest allowed versions from the registries (minutes), run by hand; the lock it "
        "writes is what setup.sh installs for this suite",
    ),
    "MODEL=Qwen/Qwen3-VL-2B-Instruct sh scripts/serve.sh": SERVE_SH,
    ".venv/bin/python -m measure --data data/<name>": (
        "measure",
        "--data {data} --base-url {url} --runs-dir {runs} --limit 2",
    ),
    "DATA=data/<name> OUT=data/adapters/cued sh scripts/lora.sh": ("lora.sh", ""),
    "sh scripts/reproduce.sh": ("reproduce", ""),
    "python -m measure [--data data/synthetic] [--base-url URL ...] [--models a,b] [--variants plain,trajectory] "
    "[--split test] [--limit N] [--concurrency N] [--answer-format text|letters] [--media frames|data|file] "
    "[--frames 8] [--sampling centers|uniform|processor|study] [--frame-size WxH] [--reference FILE.csv] "
    "[--reference-models pretrained=A,finetuned=B] [--run-id ID | --resume ID] [--api-key KEY] [--frame-store DIR] "
    "[--frame-store-gb 10]": (
        "measure",
        "--data {data} --base-url {url} --models {base},{adapter} --variants plain,trajectory --split test --limit 2 "
        "--concurrency 32 --answer-format text --media frames --frames 8 --sampling centers --frame-size 128x128 "
        f"--reference {CSV} --reference-models pretrained={{base}},finetuned={{adapter}} --run-id every --api-key KEY "
        "--frame-store {tmp}/frame-store --frame-store-gb 10 --runs-dir {runs}",
    ),
    "python -m measure report RUN [RUN ...] [--runs-dir runs]": ("measure", "report a b --runs-dir {runs}"),
    "python -m measure rescore RUN": ("measure", "rescore {runs}/a"),
    "python -m measure compare RUN RUN [RUN ...]": ("measure", "compare {runs}/a {runs}/b {runs}/c"),
    "python -m measure judge RUN [--judge-model NAME] [--base-url URL]": (
        "measure",
        "judge open --judge-model {base} --base-url {url} --runs-dir {runs}",
    ),
    "python -m measure view RUN [RUN_B] [--data DIR] [--open]": (
        "measure",
        "view {runs}/a {runs}/b --data {data} --open",
    ),
    "python -m measure power --data data/<name> [--delta 3] [--discordance 20] [--run PILOT]": (
        "measure",
        "power --data {data} --delta 3 --discordance 20 --run {runs}/a",
    ),
    "python -m measure calibrate RUN [--sims 1000] [--effect PTS] [--seed 0]": (
        "measure",
        "calibrate {runs}/a --sims 100 --effect 10 --seed 0",
    ),
    "python -m measure profile --models MODEL[,MODEL] [--targets FILE.csv]": PROFILE,
    "python -m measure profile --models data/models/tiny-smolvlm,data/models/organism "
    "[--targets measure/references/smolvlm2_test_plan_targets.csv] [--dtypes float32,bfloat16] "
    "[--video-frames 4,8,16,32,64] [--in-flight 1,2,4,8,16,32,64] [--warm 3] [--session 10] [--repeats 5] "
    "[--out runs/profile]": PROFILE,
    "python -m measure --data data/synthetic-open --base-url URL": (
        "measure",
        "--data {open} --base-url {url} --runs-dir {runs} --run-id open --limit 2 --open-max-tokens 8",
    ),
    "python -m measure judge runs/<id> [--judge-model NAME] [--base-url URL]": (
        "measure",
        "judge {runs}/open --judge-model {adapter} --base-url {url}",
    ),
    "python -m prepare ssv2 --videos DIR --labels DIR --boxes bounding_box_smthsmth_part1.json --boxes ...part2.json "
    "--out data/<name> [--label-files train,validation] [--test-videos 1000] "
    "[--variants plain,trajectory,bbox,path,box-path,side-by-side] [--distractors random|hard] [--cue-hand] "
    "[--thickness auto|PX] [--seed 0] [--limit N] [--subset all|visual-cues] [--encoding ours|study] "
    "[--workers N] [--shard i/n | --ray auto|ADDRESS|local]": (
        "prepare",
        "ssv2 --videos {sample}/videos --labels {sample}/labels --boxes {sample}/bounding_box_smthsmth_sample.json "
        "--boxes {sample}/bounding_box_smthsmth_sample.json --out {tmp}/ssv2 --label-files train,validation "
        "--test-videos 1000 --variants plain,trajectory,bbox,path,box-path,side-by-side --distractors hard --cue-hand "
        "--thickness auto --seed 0 --limit 2 --subset visual-cues --encoding study --workers 2 --shard 0/1",
    ),
    "python -m prepare ssv2 --videos DIR --labels DIR --boxes FILE --out data/<name> --subset visual-cues": (
        "prepare",
        "ssv2 --videos {sample}/videos --labels {sample}/labels --boxes {sample}/bounding_box_smthsmth_sample.json "
        "--out {tmp}/subset --subset visual-cues",
    ),
    "python -m prepare clips DIR --out data/<name> [--labels labels.csv] [--max-seconds 120] [--test-videos N] "
    "[--seed 0]": (
        "prepare",
        "clips {clips} --out {tmp}/own --labels {tmp}/labels.csv --max-seconds 120 --test-videos 1 --seed 0",
    ),
    "python -m prepare clips DIR --out data/<name> --questions questions.csv [--variants plain,trajectory]": (
        "prepare",
        "clips {clips} --out {tmp}/own-mcq --questions {tmp}/questions.csv --variants plain,box-path",
    ),
    "python -m prepare synthetic --out data/synthetic [--videos 60] [--seed 0] [--variants plain,trajectory] "
    "[--templates default|one-sentence]": (
        "prepare",
        "synthetic --out {tmp}/synthetic --videos 8 --seed 0 --variants plain,reversed --templates default",
    ),
    "python -m prepare arrow-of-time --from data/<name>": ("prepare", "arrow-of-time --from {tmp}/synthetic"),
    "python -m prepare probes --out data/probes [--per-kind 24] [--seed 0] [--frames 8] [--size 224x160]": (
        "prepare",
        "probes --out {tmp}/probes --per-kind 4 --seed 0 --frames 8 --size 224x160",
    ),
    "python -m prepare probes --out data/probes-text --text [--per-kind 24] [--seed 0] [--frames 8]": (
        "prepare",
        "probes --out {tmp}/probes-text --text --per-kind 4 --seed 0 --frames 8",
    ),
    "python -m prepare egotempo --json egotempo_openQA.json --videos DIR --out data/<name>": (
        "prepare",
        "egotempo --json {open}/raw/egotempo_openQA.json --videos {open}/raw/videos --out {tmp}/egotempo",
    ),
    "python -m prepare egotextvqa --jsonl annotations.jsonl --videos DIR --out data/<name>": (
        "prepare",
        "egotextvqa --jsonl {tmp}/textvqa/raw/egotextvqa_annotation.jsonl --videos {tmp}/textvqa/raw/videos "
        "--out {tmp}/textvqa2",
    ),
    "python -m prepare egotextvqa --jsonl indoor.jsonl --jsonl outdoor.jsonl --videos DIR --out data/egotextvqa "
    "[--test-share 0.2] [--seed 0]": (
        "prepare",
        "egotextvqa --jsonl {tmp}/indoor.jsonl --jsonl {tmp}/outdoor.jsonl --videos {tmp}/textvqa/raw/videos "
        "--out {tmp}/egotextvqa --test-share 0.2 --seed 0",
    ),
    "python -m prepare egotempo --json egotempo_openQA.json --videos DIR --out data/egotempo --test-share 1": (
        "prepare",
        "egotempo --json {open}/raw/egotempo_openQA.json --videos {open}/raw/videos --out {tmp}/egotempo-test "
        "--test-share 1",
    ),
    "python -m train --model data/models/tiny-vlm --data data/egotextvqa --out data/adapters/egotextvqa "
    "[--max-steps N]": (
        "train",
        "--model {model} --data {tmp}/egotextvqa --out {tmp}/adapters/egotextvqa --max-steps 2",
    ),
    "python -m train --model data/models/tiny-vlm --mix data/a:0.7,data/b:0.3 --out data/adapters/mix "
    "[--max-text-tokens 256] [--max-steps N]": (
        "train",
        "--model {model} --mix {data}:0.7,{tmp}/egotextvqa:0.3 --out {tmp}/adapters/mix --max-text-tokens 256 "
        "--max-steps 2",
    ),
    "python -m measure judge RUN [--judge-model NAME|exact-match] [--base-url URL] [--judge-format auto|schema|text]": (
        "measure",
        "judge {runs}/open --judge-model {base} --base-url {url} --judge-format text",
    ),
    "MODEL=data/models/tiny-thinking sh scripts/serve.sh": SERVE_SH,
    "python -m measure --data data/<name> --base-url URL [--reasoning auto|server|two-step|off] "
    "[--reasoning-tokens 512]": (
        "measure",
        "--data {data} --base-url {url} --runs-dir {runs} --run-id reasoning --limit 2 --reasoning two-step "
        "--reasoning-tokens 16",
    ),
    "python -m prepare synthetic-open --format egotempo --out data/synthetic-open": (
        "prepare",
        "synthetic-open --format egotempo --out {open} --videos 6",
    ),
    "sh scripts/reproduce.sh [--dry-run]": ("reproduce", ""),
    "python -m prepare visual-cues --test FILE --videos-plain DIR --videos-trajectory DIR [--train FILE] "
    "[--boxes FILE ...] --out data/<name>": (
        "prepare",
        "visual-cues --test {study}/test.json --videos-plain {study}/plain --videos-trajectory {study}/trajectory "
        "--train {study}/test.json --boxes {data}/raw/bounding_box_smthsmth_part1.json --out {tmp}/vc",
    ),
    f"python -m measure --data data/<name> --reference {CSV} [--reference-models pretrained=A,finetuned=B]": (
        "measure",
        f"--data {{tmp}}/vc --base-url {{url}} --runs-dir {{runs}} --reference {CSV} "
        "--reference-models pretrained={base},finetuned={adapter}",
    ),
    "sh scripts/serve.sh": SERVE_SH,
    "python -m serve run --help": ("serve", "run --help"),
    "python -m serve wait --base-url http://127.0.0.1:8000/v1 --timeout 600": (
        "serve",
        "wait --base-url {url} --timeout 600",
    ),
    "python -m serve build-tiny": ("in:build", "serve build-tiny"),
    "DP=8 MODEL=Qwen/Qwen3-VL-2B-Instruct sh scripts/serve.sh": SERVE_SH,
    "TP=2 DP=4 MODEL=Qwen/Qwen3-VL-4B-Instruct sh scripts/serve.sh": SERVE_SH,
    "DP=16 MODEL=Qwen/Qwen3-VL-2B-Instruct sh scripts/serve.sh --data-parallel-size-local 8 "
    "--data-parallel-backend ray --host 0.0.0.0": SERVE_SH,
    "DATA=data/<name> OUT=data/adapters/cued VARIANTS=plain,trajectory sh scripts/lora.sh": ("lora.sh", ""),
    "GPUS=4 DATA=data/<name> sh scripts/lora.sh": ("lora.sh", ""),
    "LLM_ONLY=1 DATA=data/<name> OUT=data/adapters/cued sh scripts/lora.sh": ("lora.sh", ""),
    "python -m train --model data/models/tiny-vlm --data data/synthetic --out data/adapters/tiny-trained": (
        "in:home",
        "train --model data/models/tiny-vlm --data data/synthetic --out data/adapters/tiny-trained",
    ),
    "python -m train --model data/models/organism --data data/synthetic --out data/adapters/organism-cued "
    "--tune-merger": (
        "in:home",
        "train --model data/models/organism --data data/synthetic --out data/adapters/organism-cued --tune-merger",
    ),
    "python -m train --help": ("train", "--help"),
    "python -m train organism [--videos 1200] [--steps 2000] [--seed 7] [--out data/models/organism]": (
        "train",
        "organism --videos 14 --steps 3 --seed 7 --out {tmp}/organism --world {tmp}/organism-world --batch 4",
    ),
    "python -m interpret RUN [--limit N] [--models a,b] [--variants plain,trajectory] [--layers 0,1] "
    "[--device cpu|cuda] [--pictures 8] [--data DIR] [--effects none|ablation|all] [--occlusion] [--shard i/n]": (
        "interpret",
        "{runs}/b --limit 1 --models {base},{adapter} --variants plain,trajectory --layers 0,1 --device cpu "
        "--pictures 8 --data {data} --effects ablation --occlusion --shard 0/1",
    ),
    "python -m interpret RUN --layer-probes [--limit N] [--models a,b] [--variants plain] [--device cpu|cuda]": (
        "interpret",
        "{runs}/a --layer-probes --limit 12 --models {base} --variants plain --device cpu",
    ),
    ".venv/bin/python scripts/compare_vllm.py [--model data/models/tiny-vlm] "
    "[--normalise served|device|processor] [--clip-images]": (
        "script",
        "scripts/compare_vllm.py --model {model} --normalise served --clip-images",
    ),
    "python -m prepare synthetic --out data/synthetic "
    "--variants plain,trajectory,object-masked,context-masked,cue-only": (
        "prepare",
        "synthetic --out {tmp}/masked --videos 4 --variants plain,trajectory,object-masked,context-masked,cue-only",
    ),
}


def test_the_table_lists_exactly_the_documented_lines():
    shown = set(documented())
    assert shown == set(TABLE), {"not in the table": shown - set(TABLE), "no longer documented": set(TABLE) - shown}


def _parses(command: str) -> None:
    """The arguments parsed by the real command object (a usage error raises)."""
    package, *args = shlex.split(command)
    cmd = typer.main.get_command(importlib.import_module(f"{package}.__main__").app)
    ctx = cmd.make_context(package, args)
    rest = [*ctx._protected_args, *ctx.args]  # a group's sub-command and its arguments
    if rest and isinstance(cmd, typer.core.TyperGroup):
        cmd.get_command(ctx, rest[0]).make_context(rest[0], rest[1:], parent=ctx)


@pytest.fixture(scope="module")
def places(server, measured, synthetic, tiny, tmp_path_factory):
    """Real values for the placeholders: the session's server, dataset and tiny model, three runs
    (a, b, c: copies of the session's run), open datasets and a dataset in the study's format."""
    tmp = tmp_path_factory.mktemp("documented")
    runs = tmp / "runs"
    for rid in ("a", "b", "c"):
        copy_run(measured, runs, rid)
    study = tmp / "study"
    src = DataLayout(synthetic)
    vids = sorted(p.stem for p in (synthetic / "clips" / "plain").glob("*.mp4"))[:2]
    for variant in ("plain", "trajectory"):
        (study / variant).mkdir(parents=True)
        for v in vids:
            shutil.copy(src.clip(variant, v), study / variant / f"{v}.mp4")
    rows = [
        {
            "video": f"{v}.mp4",
            "metadata": {"question": "pushing _____", "choices": ["ball", "cup"], "answer": "cup", "type": "object"},
        }
        for v in vids
    ]
    (study / "test.json").write_text(json.dumps(rows))
    own = tmp / "own clips" / "kitchen"
    own.mkdir(parents=True)
    for v in vids:
        shutil.copy(src.clip("plain", v), own / f"{v}.mp4")
    (tmp / "labels.csv").write_text(f"video,category\nkitchen/{vids[0]}.mp4,irreversible\n")
    boxes = json.loads((synthetic / "raw" / "bounding_box_smthsmth_part1.json").read_text())
    (tmp / "boxes.json").write_text(json.dumps({vids[0]: boxes[vids[0]]}))
    (tmp / "questions.csv").write_text(
        f"video,question,choices,answer,type,boxes\n{vids[0]},What moves?,a cup|a ball,a ball,object,boxes.json\n"
    )
    cli(f"prepare synthetic-open --format egotextvqa --out {tmp}/textvqa --videos 4", check=True)
    rows = (tmp / "textvqa" / "raw" / "egotextvqa_annotation.jsonl").read_text().splitlines(keepends=True)
    (tmp / "indoor.jsonl").write_text("".join(rows[::2]))  # the study's two subsets, a file each
    (tmp / "outdoor.jsonl").write_text("".join(rows[1::2]))
    (tmp / "home" / "data" / "models").mkdir(parents=True)
    (tmp / "home" / "data" / "models" / "tiny-vlm").symlink_to(tiny.model)
    (tmp / "home" / "data" / "models" / "organism").symlink_to(tiny.model)  # stands in: any Qwen3-VL trains
    (tmp / "home" / "data" / "synthetic").symlink_to(tmp / "synthetic")  # made by a documented line first
    return {
        "url": server.base_url,
        "base": server.base_model,
        "adapter": server.adapter,
        "data": synthetic,
        "runs": runs,
        "tmp": tmp,
        "open": tmp / "open",
        "study": study,
        "sample": SAMPLE,
        "model": tiny.model,
        "clips": shlex.quote(str(tmp / "own clips")),
    }


def _serve_sh(line: str) -> None:
    """serve.sh as documented, its environment included, stopped before vLLM starts (its port is
    taken): the vLLM command it prints carries what the line asks."""
    env_words = [w for w in shlex.split(line) if re.fullmatch(r"[A-Z_]+=.*", w)]
    args = shlex.split(line)[len(env_words) + 2 :]
    env = dict(os.environ, **dict(w.split("=", 1) for w in env_words))
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        env["PORT"] = str(busy.getsockname()[1])
        r = subprocess.run(
            ["sh", "scripts/serve.sh", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
        )
    assert r.returncode == 2 and "is already in use" in r.stderr, r.stderr[-2000:]
    argv = next(x for x in r.stderr.splitlines() if x.startswith("serve: ") and " serve.launch serve " in x)
    model = env.get("MODEL", "data/models/tiny-vlm")
    assert f" serve {model} " in argv
    if "DP" in env:
        assert f"--data-parallel-size {env['DP']}" in argv
    if "TP" in env:
        assert f"--tensor-parallel-size {env['TP']}" in argv
    if "thinking" in model:  # its chat template opens a think block: vLLM's reasoning parser
        assert "--reasoning-parser qwen3" in argv, argv
    for flag in ("--data-parallel-size-local", "--data-parallel-backend", "--host"):
        if flag in args:
            assert f"{flag} {args[args.index(flag) + 1]}" in argv


def _reproduce() -> None:
    """reproduce.sh's dry run: every command it would run, parsed by the real CLI."""
    r = subprocess.run(
        ["sh", "scripts/reproduce.sh", "--dry-run"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    commands = [c for c in r.stdout.splitlines() if c.startswith("+ ") and " -m " in c and "python -c" not in c]
    assert len(commands) >= 3
    for c in commands:
        _parses(c.split(" -m ", 1)[1].rstrip("&").strip())


def _lora_sh(line: str, data: Path, tmp: Path) -> None:
    """lora.sh as documented, its environment included (the placeholders made real, the hub
    out of reach as here): the `train` it starts reports the recipe the line asks for, once
    per process (torchrun's GPUS of them), then stops where the hub model would be loaded."""
    env_words = dict(w.split("=", 1) for w in shlex.split(line) if re.fullmatch(r"[A-Z_]+=.*", w))
    env_words = {
        k: v.replace("data/<name>", str(data)).replace("data/adapters", str(tmp)) for k, v in env_words.items()
    }
    env = dict(os.environ, HF_HUB_OFFLINE="1", **env_words)
    r = subprocess.run(["sh", "scripts/lora.sh"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    out = env_words.get("OUT", "data/adapters/cued")
    variants = env_words.get("VARIANTS", "plain,trajectory")
    processes = int(env_words.get("GPUS", "1"))
    # torchrun stops every worker once one fails, so how many get as far as their plan and the
    # model's error depends on timing (one suite run: 4 plans, 2 errors); each plan names the
    # world size torchrun gave it
    plans = [x for x in r.stderr.splitlines() if re.search(r"train: \S+ on \d+ examples", x)]
    assert r.returncode != 0 and 1 <= len(plans) <= processes, r.stderr[-3000:]
    where = (
        "on the language model;" if env_words.get("LLM_ONLY") == "1" else "on the language model and the vision merger;"
    )
    for plan in plans:
        assert "Qwen/Qwen3-VL-2B-Instruct on " in plan and f"of {data} ({variants}) -> {out};" in plan, plan
        assert f"x {processes} process(es)" in plan and f"LoRA r 64 alpha 64 {where}" in plan, plan
    errors = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    model = "error: --model Qwen/Qwen3-VL-2B-Instruct: not a local model directory"
    assert errors and all(e.startswith(model) for e in errors), errors


ORDER = [line for line in TABLE if TABLE[line][0] != "meta" and "{sample}" not in TABLE[line][1]]


def _run(line: str, places: dict, monkeypatch) -> None:
    """One documented line, run as its table entry says."""
    how, command = TABLE[line]
    command = command.format(**places)
    if how == "serve.sh":
        _serve_sh(line)
    elif how == "lora.sh":
        _lora_sh(line, places["data"], places["tmp"])
    elif how == "reproduce":
        _reproduce()
    elif how == "parse":
        _parses(command)
    elif how == "script":  # its own process: it starts vLLM in-process
        r = subprocess.run([sys.executable, *shlex.split(command)], cwd=REPO, capture_output=True, text=True)
        assert r.returncode == 0, (line, r.stderr[-2000:])
        _computes_as_served(r.stdout.strip().splitlines())
    elif how.startswith("in:"):  # run from a folder of its own, where its relative paths lead
        home = places["tmp"] / how[3:]
        home.mkdir(exist_ok=True)
        r = cli(command, cwd=home)
        assert r.returncode == 0, (line, r.stderr[-2000:])
    else:
        opened = []
        monkeypatch.setattr(webbrowser, "open", opened.append)  # --open: the page, not a browser here
        r = cli(f"{how} {command}")
        assert r.returncode == 0, (line, r.stderr[-2000:])
        assert ("--open" in command.split()) == bool(opened) and all(u.startswith("file://") for u in opened), opened


def _computes_as_served(said: list[str]) -> None:
    """compare_vllm.py on a model whose image processor normalises otherwise than its videos (the
    tiny models built before serve.normalise), served as `serve run` serves it: the same tokens,
    every vision step within 1e-4, the first reply token's log-probs within 0.01 nats."""
    assert said[0].endswith("pixels normalised by the processor") and said[1].startswith("prompt token ids: same")
    steps = {m[1]: float(m[2]) for x in said if (m := re.fullmatch(r"(.+): max \|diff\| (\S+) \(values up to .*", x))}
    assert {"pixels", "patch embedding", "merger", "vision block 0"} <= set(steps) and max(steps.values()) < 1e-4, said
    assert float(re.search(r"max \|diff\| (\S+) nats", said[-1])[1]) < 0.01, said


@pytest.mark.timeout(1800)
def test_every_documented_command_runs_as_shown(places, monkeypatch):
    """In one test, in an order where each line finds what an earlier one made (the open run
    before the judge, the imported study before its measurement)."""
    for line in sorted(ORDER, key=_stage):
        _run(line, places, monkeypatch)


@needs_sample
@pytest.mark.parametrize("line", [line for line in TABLE if "{sample}" in TABLE[line][1]])
def test_every_documented_line_on_the_real_sample_runs_as_shown(line, places, monkeypatch):
    _run(line, places, monkeypatch)


def _stage(line: str) -> int:
    """Makers first: datasets, then runs, then what reads them."""
    command = TABLE[line][1]
    if command.startswith(("synthetic-open", "synthetic ")):
        return 0
    if "--run-id open" in command or command.startswith("visual-cues"):
        return 1
    if command.startswith(("judge", "arrow-of-time")) or "{tmp}/vc" in command:
        return 2
    return 1


@pytest.mark.parametrize("line", [line for line in TABLE if TABLE[line][0] == "meta"])
def test_what_is_not_run_here_says_why(line):
    """A script run by hand or by CI, or a line a test module of its own runs (named)."""
    why = TABLE[line][1]
    named = re.search(r"tests/\S+\.py", why)
    assert len(why) > 20 and (Path(REPO / shlex.split(line)[-1]).is_file() or (named and (REPO / named[0]).is_file()))
