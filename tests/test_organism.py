"""`python -m train organism` in a small setting: seeded (the same safetensors bytes), built once
and kept, refused over an organism built otherwise, its loss on the progress bar."""

from __future__ import annotations

import json

import pytest

from tests.conftest import cli

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
