"""The embedded tiny model: offline, seeded, identical on rebuild, adapter non-zero."""

from __future__ import annotations

import hashlib
import json

from safetensors.torch import load_file
from transformers import AutoProcessor

from serve import tiny as builder


def _hashes(d):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir())}


def test_rebuild_gives_identical_files(tiny, tmp_path):
    model = builder.build_model(tmp_path / "tiny-vlm", seed=0)
    adapter = builder.build_adapter(model, tmp_path / "tiny-cued", seed=1)
    assert _hashes(model) == _hashes(tiny.model)
    assert _hashes(adapter) == _hashes(tiny.adapter)


def test_model_is_qwen3_vl_with_its_own_processor(tiny):
    cfg = json.loads((tiny.model / "config.json").read_text())
    assert cfg["architectures"] == ["Qwen3VLForConditionalGeneration"]
    assert cfg["text_config"]["head_dim"] == 32
    proc = AutoProcessor.from_pretrained(tiny.model)
    tok = proc.tokenizer
    assert tok.convert_tokens_to_ids("<|video_pad|>") == cfg["video_token_id"]
    text = proc.apply_chat_template(
        [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "hi"}]}],
        add_generation_prompt=True,
        tokenize=False,
    )
    assert "<|vision_start|><|video_pad|><|vision_end|>hi<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n")


def test_adapter_targets_the_llm_and_is_not_a_no_op(tiny):
    cfg = json.loads((tiny.adapter / "adapter_config.json").read_text())
    assert cfg["target_modules"] == ["q_proj", "v_proj"] and cfg["base_model_name_or_path"] == "tiny-vlm"
    weights = load_file(tiny.adapter / "adapter_model.safetensors")
    b = [t for k, t in weights.items() if "lora_B" in k]
    assert b and all(t.abs().sum() > 0 for t in b)
    assert all("language_model" in k for k in weights)
