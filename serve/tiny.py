"""Build the embedded default offline: a tiny, seeded, random-weight Qwen3-VL and a LoRA.

Everything is made here, nothing is downloaded: a byte-level BPE tokenizer trained on a
fixed corpus, Qwen special tokens and chat template, image/video processor configs, a
~1 M-parameter Qwen3-VL whose weights are redrawn from a seeded N(0, 0.05) (so answers
depend on the video), and a PEFT LoRA on the language model's q/v projections with
non-zero B (so it changes answers). Rebuilding with the same seed gives identical files.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

from core.files import atomic_dir
from core.layout import AdapterLayout
from serve.shapes import TINY, Shape

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

# Qwen2-VL's chat template (Qwen3-VL's minus tools/thinking): media parts become
# <|vision_start|><|video_pad|><|vision_end|>, which the processor expands per frame.
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content or 'video_url' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# A reasoning model's: the generation prompt opens a think block (as Qwen3's thinking models'
# templates do), which vLLM's `qwen3` reasoning parser reads up to </think>.
THINK_TOKENS = ["<think>", "</think>"]
THINKING_TEMPLATE = CHAT_TEMPLATE.replace(
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
    "{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}",
)

_CORPUS_WORDS = (
    "pushing moving dropping putting covering picking lifting pulling turning opening closing "
    "tearing holding showing taking throwing rolling sliding spinning poking squeezing folding "
    "something onto into next to with from left right up down behind in front of over under "
    "red green blue yellow purple orange white black cube ball box cup bottle pen book phone "
    "the a an of and is this video question answer choices fill blank one following seconds "
    "frame forward backward playing A B C D 0 1 2 3 4 5 6 7 8 9 . , : ? _____"
)


def _corpus() -> list[str]:
    words = _CORPUS_WORDS.split()
    # Deterministic sentences: every word next to its neighbours, plus the words alone.
    return [" ".join(words[i : i + 6]) for i in range(len(words))] + words


def prompt_lines() -> list[str]:
    """What every asked question carries besides its own words: the chat roles and system line,
    measure's prompt (both answer formats) and the processor's frame timestamps."""
    from core.prompt import question_text
    from core.records import Question

    q = Question(
        id="q",
        video_id="v",
        split="test",
        type="verb",
        question="_____ it",
        choices=["a", "b"],
        answer="a",
        template="",
        label="",
        slot=None,
    )
    asked = [line for fmt in ("text", "letters") for line in question_text(q, fmt).splitlines()]
    return ["system", "user", "assistant", "You are a helpful assistant.", *asked] + [
        f"<{t / 10:.1f} seconds>" for t in range(100)
    ]


def build_tokenizer(
    vocab_size: int = 1024,
    extra: Sequence[str] = (),
    special: list[str] = SPECIAL_TOKENS,
    eos: str = "<|im_end|>",
    pad: str = "<|endoftext|>",
    chat_template: str = CHAT_TEMPLATE,
):
    """A byte-level BPE tokenizer with the family's special tokens, trained on a fixed corpus."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([*_corpus(), *extra], trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=eos, pad_token=pad, chat_template=chat_template, model_max_length=4096
    )


def build_config(tokenizer, vocab_size: int, shape: Shape = TINY):
    from transformers import Qwen3VLConfig

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    head_dim = 32  # vLLM's CPU attention supports 32/64/80/96/112/128
    return Qwen3VLConfig(
        text_config=dict(
            vocab_size=vocab_size,
            hidden_size=shape.hidden,
            intermediate_size=shape.intermediate,
            num_hidden_layers=shape.layers,
            num_attention_heads=shape.heads,
            num_key_value_heads=shape.kv_heads,
            head_dim=head_dim,
            max_position_embeddings=4096,
            rope_parameters={
                "rope_type": "default",
                "rope_theta": 500000.0,
                "mrope_section": [6, 5, 5],  # sums to head_dim / 2
                "mrope_interleaved": True,
            },
            bos_token_id=ids["<|endoftext|>"],
            eos_token_id=ids["<|im_end|>"],
            pad_token_id=ids["<|endoftext|>"],
        ),
        vision_config=dict(
            depth=shape.vision_depth,
            hidden_size=shape.vision_hidden,
            intermediate_size=2 * shape.vision_hidden,
            num_heads=shape.vision_heads,
            patch_size=16,
            spatial_merge_size=2,
            temporal_patch_size=2,
            out_hidden_size=shape.hidden,
            num_position_embeddings=576,
            deepstack_visual_indexes=[shape.vision_depth - 1],
        ),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )


def build_processor(tokenizer, shape: Shape = TINY, chat_template: str = CHAT_TEMPLATE):
    from transformers import Qwen2VLImageProcessor, Qwen3VLProcessor, Qwen3VLVideoProcessor

    px = 16 * 2  # patch x merge: the side of one vision token
    image = Qwen2VLImageProcessor(  # normalised as Qwen3-VL's own and as its videos (serve.normalise)
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        patch_size=16,
        merge_size=2,
        temporal_patch_size=2,
        size={"shortest_edge": 4 * px * px, "longest_edge": 64 * px * px},
    )
    video = Qwen3VLVideoProcessor(
        patch_size=16,
        merge_size=2,
        temporal_patch_size=2,
        size={"shortest_edge": 4 * px * px, "longest_edge": 16 * 64 * px * px},
        cap_pixels_per_frame=True,
        max_video_tokens=shape.max_video_tokens,
    )
    return Qwen3VLProcessor(
        image_processor=image, video_processor=video, tokenizer=tokenizer, chat_template=chat_template
    )


def _redraw(module: torch.nn.Module, seed: int, std: float) -> None:
    """Redraw every weight matrix from a seeded N(0, std); norms stay at one, biases at zero."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(module.named_parameters()):
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=gen) * std)
            elif "norm" in name:
                p.fill_(1.0)
            else:
                p.zero_()


def initial(
    shape: Shape = TINY, seed: int = 0, name: str = "tiny-vlm", std: float | None = 0.05, thinking: bool = False
):
    """(model, processor, tokenizer) of a tiny Qwen3-VL: weights redrawn from a seeded
    N(0, std), or with `std=None` the model's own initialisation under the seed; `thinking`: a
    reasoning model's tokenizer and chat template (THINK_TOKENS, THINKING_TEMPLATE)."""
    from transformers import GenerationConfig, Qwen3VLForConditionalGeneration

    template = THINKING_TEMPLATE if thinking else CHAT_TEMPLATE
    special = SPECIAL_TOKENS + (THINK_TOKENS if thinking else [])
    extra = prompt_lines() if shape.prompt_words else ()
    tokenizer = build_tokenizer(extra=extra, special=special, chat_template=template)
    config = build_config(tokenizer, len(tokenizer), shape)
    config.name_or_path = name
    torch.manual_seed(seed)
    model = Qwen3VLForConditionalGeneration(config).to(torch.float32)
    if std is not None:
        _redraw(model, seed, std)
    model.generation_config = GenerationConfig(
        bos_token_id=config.text_config.bos_token_id,
        eos_token_id=config.text_config.eos_token_id,
        pad_token_id=config.text_config.pad_token_id,
    )
    return model, build_processor(tokenizer, shape, template), tokenizer


def save(tmp: Path, model, processor, tokenizer) -> None:
    """A servable model folder: weights, configs, tokenizer, processor."""
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)


def build_model(out: Path, seed: int = 0, name: str = "tiny-vlm", thinking: bool = False) -> Path:
    """Write a tiny random-weight Qwen3-VL (weights, configs, tokenizer, processor) to `out`;
    `thinking`: a reasoning model's (its generation prompt opens a think block)."""
    return atomic_dir(out, lambda tmp: save(tmp, *initial(TINY, seed, name, thinking=thinking)))


def build_adapter(model_dir: Path, out: Path, seed: int = 1, rank: int = 8, base_name: str = "tiny-vlm") -> Path:
    """Write a PEFT LoRA (q_proj/v_proj of the language model) with seeded non-zero A and B."""
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen3VLForConditionalGeneration

    def fill(tmp: Path) -> None:
        model = Qwen3VLForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32)
        config = LoraConfig(
            r=rank,
            lora_alpha=2 * rank,
            lora_dropout=0.0,
            # The vision tower's attention is a fused `qkv`, so these names hit only the LLM.
            target_modules=["q_proj", "v_proj"],
        )
        peft_model = get_peft_model(model, config)
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for pname, p in sorted(peft_model.named_parameters()):
                if "lora_A" in pname:
                    p.copy_(torch.randn(p.shape, generator=gen) / p.shape[1] ** 0.5)
                elif "lora_B" in pname:
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
        peft_model.save_pretrained(tmp)
        # Name the base by its served name, not a machine-specific path: identical rebuilds.
        cfg_path = AdapterLayout(tmp).config
        cfg = json.loads(cfg_path.read_text())
        cfg["base_model_name_or_path"] = base_name
        cfg["target_modules"] = sorted(cfg["target_modules"])  # a set in PEFT: order varies per run
        cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
        (tmp / "README.md").unlink(missing_ok=True)

    return atomic_dir(out, fill)


# The Idefics3 / SmolVLM family: images only in vLLM, so clips go out as sampled frames.
IDEFICS3_SPECIAL = [
    "<|endoftext|>",
    "<|im_start|>",
    "<end_of_utterance>",
    "<image>",
    "<fake_token_around_image>",
    "<global-img>",
]
IDEFICS3_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'] is string %}: {{ message['content'] }}"
    "{% else %}{% if message['content'][0]['type'] == 'image' %}:{% else %}: {% endif %}"
    "{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}"
    "{% elif part['type'] in ('image', 'image_url') %}<image>{% endif %}{% endfor %}{% endif %}"
    "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}"
)


def build_idefics3(out: Path, seed: int = 0) -> Path:
    """A tiny random-weight Idefics3 (SmolVLM's architecture): 64-px images, 4 tokens each."""
    from transformers import (
        GenerationConfig,
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessor,
        Idefics3Processor,
    )

    def fill(tmp: Path) -> None:
        tok = build_tokenizer(special=IDEFICS3_SPECIAL, eos="<end_of_utterance>", chat_template=IDEFICS3_TEMPLATE)
        ids = {t: tok.convert_tokens_to_ids(t) for t in IDEFICS3_SPECIAL}
        config = Idefics3Config(
            text_config=dict(
                model_type="llama",
                vocab_size=len(tok),
                hidden_size=128,
                intermediate_size=256,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                head_dim=32,
                max_position_embeddings=4096,
                bos_token_id=ids["<|im_start|>"],
                eos_token_id=ids["<end_of_utterance>"],
                pad_token_id=ids["<|endoftext|>"],
            ),
            vision_config=dict(
                hidden_size=64,
                intermediate_size=128,
                num_hidden_layers=2,
                num_attention_heads=2,
                image_size=64,
                patch_size=16,
            ),
            scale_factor=2,
            image_token_id=ids["<image>"],
            pad_token_id=ids["<|endoftext|>"],
            tie_word_embeddings=False,
        )
        torch.manual_seed(seed)
        model = Idefics3ForConditionalGeneration(config).to(torch.float32)
        _redraw(model, seed, std=0.05)
        model.generation_config = GenerationConfig(
            bos_token_id=ids["<|im_start|>"], eos_token_id=ids["<end_of_utterance>"], pad_token_id=ids["<|endoftext|>"]
        )
        model.save_pretrained(tmp)
        image = Idefics3ImageProcessor(
            do_image_splitting=False, size={"longest_edge": 64}, max_image_size={"longest_edge": 64}
        )
        Idefics3Processor(
            image_processor=image, tokenizer=tok, image_seq_len=4, chat_template=IDEFICS3_TEMPLATE
        ).save_pretrained(tmp)
        tok.save_pretrained(tmp)

    return atomic_dir(out, fill)
