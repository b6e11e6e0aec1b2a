"""Every option with a parser of its own (sizes, pairs, lists, URLs), through the real command
line in the form the docs show: one string each, its value reaching the command, a bad value
refused with the option named. The table is checked to cover every such option."""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import socket
import subprocess
import typing
from pathlib import Path

import pytest
import typer

from core import cli as cli_module
from core.cli import parse, parsed_options
from core.urls import ServerUrl
from tests.conftest import REPO, cli

APPS = ("measure", "prepare", "serve", "train", "interpret")


# (command, option) -> (a value in the documented form, a bad value, what the command must receive)
NOWHERE = "/nonexistent/visual-cues"
URL9 = ServerUrl.parse("http://127.0.0.1:9/v1")
TABLE = {
    ("measure", "--base-url"): ("http://127.0.0.1:9/v1", "ftp://x", [URL9]),
    ("measure", "--models"): ("tiny-vlm,tiny-cued", "", ("tiny-vlm", "tiny-cued")),
    ("measure", "--variants"): ("plain,trajectory", "", ("plain", "trajectory")),
    ("measure", "--frame-size"): ("128x128", "128", (128, 128)),
    ("measure", "--reference-models"): (
        "pretrained=a,finetuned=b",
        "pretrained",
        {"pretrained": "a", "finetuned": "b"},
    ),
    ("measure", "--run-id"): ("cued-1.2_b", "../x", "cued-1.2_b"),
    ("measure", "--resume"): ("cued-1", "a/b", "cued-1"),
    ("measure report", "--reference-models"): ("pretrained=a", "x", {"pretrained": "a"}),
    ("measure judge", "--base-url"): ("http://127.0.0.1:9", "localhost:9", URL9),
    ("prepare ssv2", "--label-files"): ("train,validation", "", ("train", "validation")),
    ("prepare ssv2", "--variants"): ("plain,bbox,trajectory", "plain,both", ("plain", "bbox", "trajectory")),
    ("prepare clips", "--variants"): ("plain,trajectory", "nope", ("plain", "trajectory")),
    ("prepare ssv2", "--thickness"): ("4", "thick", 4),
    ("prepare ssv2", "--shard"): ("0/2", "2/2", (0, 2)),
    ("prepare synthetic", "--variants"): ("plain", "nope", ("plain",)),
    ("prepare egotempo", "--variants"): ("plain,blind", "nope", ("plain", "blind")),
    ("prepare egotextvqa", "--variants"): ("plain,blind", "nope", ("plain", "blind")),
    ("prepare synthetic-open", "--variants"): ("plain", "nope", ("plain",)),
    ("prepare probes", "--variants"): ("plain,reversed", "nope", ("plain", "reversed")),
    ("prepare probes", "--size"): ("224x160", "224", (224, 160)),
    ("serve run", "--adapters"): ("a=/x", "a", {"a": Path("/x")}),
    ("serve wait", "--base-url"): ("http://127.0.0.1:9/v1", "127.0.0.1:9", URL9),
    ("train", "--variants"): ("plain,trajectory", "nope", ("plain", "trajectory")),
    ("train", "--mix"): ("data/a:0.7,data/b:0.3", "data/a", {Path("data/a"): 0.7, Path("data/b"): 0.3}),
    ("train", "--frame-size"): ("64x64", "64 64", (64, 64)),
    ("interpret", "--models"): ("tiny-vlm,tiny-cued", "", ("tiny-vlm", "tiny-cued")),
    ("interpret", "--variants"): ("plain,trajectory", "", ("plain", "trajectory")),
    ("interpret", "--layers"): ("0,1", "first", (0, 1)),
    ("interpret", "--shard"): ("1/2", "2/2", (1, 2)),
    ("measure profile", "--models"): (
        "data/models/tiny-smolvlm,data/models/organism",
        "",
        ("data/models/tiny-smolvlm", "data/models/organism"),
    ),
    ("measure profile", "--dtypes"): ("float32,bfloat16", "", ("float32", "bfloat16")),
    ("measure profile", "--video-frames"): ("4,8,64", "4,eight", (4, 8, 64)),
    ("measure profile", "--in-flight"): ("1,64", "0", (1, 64)),
}
REQUIRED = {  # what each command needs besides the option under test, to parse at all
    "measure report": [NOWHERE],
    "measure judge": [NOWHERE],
    "prepare ssv2": ["--videos", NOWHERE, "--labels", NOWHERE, "--boxes", NOWHERE, "--out", NOWHERE],
    "prepare egotempo": ["--json", NOWHERE, "--videos", NOWHERE, "--out", NOWHERE],
    "prepare egotextvqa": ["--jsonl", NOWHERE, "--videos", NOWHERE, "--out", NOWHERE],
    "interpret": [NOWHERE],
    "prepare synthetic": ["--out", NOWHERE],
    "prepare synthetic-open": ["--out", NOWHERE],
    "prepare probes": ["--out", NOWHERE],
    "prepare clips": [NOWHERE, "--out", NOWHERE],
    "measure profile": ["--models", NOWHERE],
}


def _required(command: str, flag: str) -> list[str]:
    """REQUIRED of `command`, less `flag` and its value (the option under test gives it)."""
    given = REQUIRED.get(command, [])
    at = given.index(flag) if flag in given else None
    return given if at is None else given[:at] + given[at + 2 :]


def _app(command: str):
    return importlib.import_module(f"{command.split()[0]}.__main__").app


def _received(options, cls: type, flag: str):
    """The value the option `flag` put into the options object (found through the groups)."""
    for path, p in cli_module._parameters(cls):
        info = typing.get_args(p.annotation)[1]
        if (info.param_decls[0] if info.param_decls else "--" + p.name.replace("_", "-")) == flag:
            for name in path:
                options = getattr(options, name)
            return options
    raise AssertionError(f"{flag}: no such option")


def _commands():
    """(command as typed, its options class) for every command of every package."""
    for package in APPS:
        cmd = typer.main.get_command(importlib.import_module(f"{package}.__main__").app)
        if getattr(cmd.callback, "options_class", None):
            yield package, cmd.callback.options_class
        for name, sub in getattr(cmd, "commands", {}).items():
            yield f"{package} {name}", sub.callback.options_class


def test_the_table_covers_every_option_with_a_parser():
    found = {(name, flag) for name, cls in _commands() for flag in parsed_options(cls)}
    assert found == set(TABLE), found ^ set(TABLE)


@pytest.mark.parametrize("command, flag", sorted(TABLE))
def test_the_documented_form_reaches_the_command(command, flag):
    """Parsed by the command's own command line, the documented form gives the command the
    value it means (not the default)."""
    good, _, meant = TABLE[(command, flag)]
    options = parse(_app(command), [*command.split()[1:], flag, good, *_required(command, flag)])
    assert _received(options, type(options), flag) == meant


@pytest.fixture
def busy_port():
    """A port something listens on: `serve run` stops there, before starting vLLM."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def _vllm_argv(r: subprocess.CompletedProcess) -> str:
    return next(line for line in r.stderr.splitlines() if " serve.launch serve " in line)


def test_serve_run_passes_its_parsed_options_on_to_vllm(tiny, busy_port):
    """The adapters and backend as typed reach vLLM's command line (printed before the port
    is found busy, so nothing is started); what follows `--` is passed on as it is."""
    r = cli(
        f"serve run --model {tiny.model} --adapters cued={tiny.adapter} --data-parallel-backend mp "
        f"--port {busy_port} -- --seed 3"
    )
    assert r.returncode == 2 and f"127.0.0.1:{busy_port} is already in use" in r.stderr, r.stderr[-1500:]
    assert f"--lora-modules cued={tiny.adapter}" in _vllm_argv(r) and _vllm_argv(r).endswith(" --seed 3")


def test_serve_run_refuses_what_it_does_not_know_instead_of_passing_it_to_vllm(tiny):
    """A typo once reached vLLM as a flag of its own (and a stray word too)."""
    _one_error_line(cli(f"serve run --model {tiny.model} --adapter x"), "no such option: --adapter", "--adapters")
    _one_error_line(cli(f"serve run --model {tiny.model} stray"), "stray", "after --")
    # started as `python -m serve` (its module is then __main__), the hint still names it
    _one_error_line(cli("serve run --adapter x", env=dict(os.environ)), "(see python -m serve run --help)")


def test_serve_run_takes_a_host_name_and_ignores_the_shells_environment(tiny, busy_port):
    """`--host myhost` once ended in a traceback; `HOST` or `PORT` in the environment once
    changed the server. Only scripts/serve.sh reads them."""
    base = f"serve run --model {tiny.model} --adapters cued={tiny.adapter}"
    _one_error_line(cli(f"{base} --host myhost.invalid"), "--host myhost.invalid", "resolves")
    env = dict(os.environ, HOST="myhost.invalid", PORT="1", MODEL="/nowhere", FRAMES="1", DP="3", TP="5")
    r = cli(f"{base} --port {busy_port}", env=env)
    assert r.returncode == 2 and f"127.0.0.1:{busy_port} is already in use" in r.stderr, r.stderr[-1500:]
    assert f" serve {tiny.model} " in _vllm_argv(r) and "--data-parallel-size" not in _vllm_argv(r)
    via_script = subprocess.run(
        ["sh", "scripts/serve.sh", "--model", str(tiny.model), "--adapters", f"cued={tiny.adapter}"],
        cwd=REPO,
        env=dict(os.environ, HOST="myhost.invalid"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    # (setup.sh, which serve.sh runs first, may say what it installs: the error is the last line)
    assert via_script.returncode == 2 and via_script.stderr.strip().splitlines()[-1].startswith(
        "error: --host myhost.invalid"
    ), via_script.stderr[-1500:]


def test_prepare_probes_records_the_size_as_typed(tmp_path):
    r = cli(
        "prepare probes --out",
        str(tmp_path / "p"),
        "--per-kind",
        "1",
        "--size",
        "64x48",
        "--variants",
        "plain,reversed",
        "--workers",
        "1",
    )
    assert r.returncode == 0, r.stderr[-1500:]
    manifest = json.loads((tmp_path / "p" / "manifest.json").read_text())
    assert manifest["options"]["size"] == "64x48" and manifest["counts"]["variants"] == ["plain", "reversed"]


def test_measure_takes_every_list_size_and_pair_as_documented(server, synthetic, tmp_path):
    """`python -m measure --frame-size 128x128 ...` once stopped with "requires 2 arguments"."""
    r = cli(
        f"measure --data {synthetic} --base-url {server.base_url} --runs-dir {tmp_path} --run-id typed "
        f"--limit 2 --models {server.base_model},{server.adapter} --variants plain --frames 4 --frame-size 128x128 "
        f"--reference {REPO}/measure/references/visual_cues_qwen3_vl_2b.csv "
        f"--reference-models pretrained={server.base_model},finetuned={server.adapter}"
    )
    assert r.returncode == 0, r.stderr[-2000:]
    run = json.loads((tmp_path / "typed" / "run.json").read_text())
    assert run["ask"]["frames"] == {"frames": 4, "sampling": "centers", "frame_size": [128, 128]}
    assert run["variants"] == ["plain"]
    assert run["models"] == [server.base_model, server.adapter]
    assert run["reference"]["models"] == {"pretrained": server.base_model, "finetuned": server.adapter}
    rows = [json.loads(line) for line in (tmp_path / "typed" / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 2 and all(row["frame_size"] == [128, 128] for row in rows)
    assert all(len(row["frame_indices"]) == 4 for row in rows)


def test_frames_reach_the_model_however_the_clip_is_sent(server, synthetic, tmp_path):
    """`--frames` was once ignored under the default --media frames, and meant another thing
    with --media data: now it is the frames the model sees, both ways."""
    tokens = {}
    for media in ("frames", "data"):
        for n in (4, 8):
            rid = f"{media}-{n}"
            r = cli(
                f"measure --data {synthetic} --base-url {server.base_url} --runs-dir {tmp_path} --run-id {rid} "
                f"--limit 1 --models {server.base_model} --variants plain --media {media} --frames {n}"
            )
            assert r.returncode == 0, r.stderr[-2000:]
            row = json.loads((tmp_path / rid / "predictions.jsonl").read_text().splitlines()[0])
            tokens[media, n] = row["prompt_tokens"]
    assert tokens["frames", 4] < tokens["frames", 8] and tokens["data", 4] < tokens["data", 8]
    assert tokens["frames", 8] == tokens["data", 8]  # the same frames sized the same: the same tokens


def _params():
    """(command as typed, click parameter) for every option and argument of every command."""
    for package in APPS:
        top = typer.main.get_command(importlib.import_module(f"{package}.__main__").app)
        subs = getattr(top, "commands", {})
        for name, cmd in [(package, top), *((f"{package} {n}", c) for n, c in subs.items())]:
            for p in cmd.params:
                if p.name != "help":
                    yield name, p


@pytest.mark.parametrize("bad", ["../x", "a/b", "<b>", ".hidden", "/abs", "a b"])
def test_a_run_id_is_a_name_never_a_path_and_nothing_is_written(bad, tmp_path):
    """`--run-id ../x` once wrote a run beside the runs folder: refused in one line, exit 2,
    before anything is read or written."""
    for flag in ("--run-id", "--resume"):
        r = cli("measure --data", tmp_path / "nodata", "--runs-dir", tmp_path / "runs", flag, bad)
        _one_error_line(r, flag, "a run id is a name")
    assert not any(tmp_path.iterdir())


def test_every_option_has_help_and_shows_its_default():
    """A help text on every option and argument; every optional, non-flag option shows its
    default, as a value or in words ("one per core", "the run's base model")."""
    silent = [f"{name} {p.opts[0]}" for name, p in _params() if not (p.help or "").strip()]
    assert not silent, silent
    hidden = [
        f"{name} {p.opts[0]}"
        for name, p in _params()
        if p.param_type_name == "option" and not p.required and not p.is_flag and not p.show_default
    ]
    assert not hidden, hidden


def _one_error_line(r, *words: str) -> None:
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), r.stderr[-1500:]
    assert all(w in lines[0] for w in words), (words, lines[0])


@pytest.mark.parametrize("command, flag", sorted(TABLE))
def test_a_bad_value_is_one_error_line_naming_the_option(command, flag):
    _, bad, _ = TABLE[(command, flag)]
    _one_error_line(cli(command, flag, bad, *_required(command, flag)), flag, "--help")


def _field_default(cls: type, path: tuple[str, ...]):
    """A (possibly grouped) option's default as its dataclass holds it."""
    field = cls.__dataclass_fields__[path[0]]
    if len(path) > 1:  # a group: its defaults as the group() factory makes them
        return getattr(field.default_factory(), path[1]) if len(path) == 2 else None
    return field.default if field.default is not dataclasses.MISSING else field.default_factory()


def test_every_default_shown_reads_back_as_the_default():
    """A default is shown as it is typed (224x160, 4,8,16, a=b); read back by the option's own
    parser it is the default itself, so the help never shows a value the option would refuse."""
    checked = 0
    for _, cls in _commands():
        for path, p in cli_module._parameters(cls):
            info = typing.get_args(p.annotation)[1]
            if info.parser is None or not isinstance(p.default, (str, list)) or len(path) > 2:
                continue
            read = [info.parser(d) for d in p.default] if isinstance(p.default, list) else info.parser(p.default)
            assert read == _field_default(cls, path), (cls.__name__, path, p.default)
            checked += 1
    assert checked >= 6
