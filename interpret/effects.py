"""What a region does, inside the model: its visual tokens removed at the language model's
input (token ablation) or hidden from the answer (attention knockout), against the same number
of random visual tokens and of the highest-norm ones.

- A region's tokens: the visual tokens (a merged patch block of a frame group) at least
  THRESHOLD of whose pixels lie inside it (`interpret.regions`: cue strokes, box edges, the
  asked object, the rest; regions then overlap at their borders).
- Ablation (Neo et al., ICLR 2025): those tokens' embeddings — the merger's output and each
  deepstack level's — replaced by the clip's mean visual token (in distribution: what an
  average token of this clip carries), passed to the model as its video features
  (transformers' `mm_encoder_outputs`), the vision tower run once.
- Knockout (Kaduri et al., CVPR 2025; "Map the Flow", ICLR 2026): the answer's positions (the
  last prompt position and the reply's tokens) may not attend to those tokens, in the language
  layers of one window: the early, middle or late third, or all layers.
- Baselines: RANDOM_DRAWS seeded draws of as many random visual tokens (their mean effect), and
  the as many visual tokens of the highest embedding norm (attention sinks carry large norms).
- Outcome: the change in the log-probability of the run's answer and of the right answer (each
  choice's full reply, teacher-forced, end token included), and whether the preferred choice
  (the highest of those log-probabilities) changes.
- Occlusion map: every visual token ablated alone, the change in the run's answer's
  log-probability (groups x token rows x token columns), drawn beside the attention maps.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from core.prompt import targets
from core.records import Prediction
from interpret import capture
from interpret.attention import model_inputs, video_features
from interpret.geometry import Grid, token_maps
from interpret.regions import REGIONS, block_shares

# A token is a region's when at least 1 % of its pixels are: a token the object only touches still
# carries it (measured on the organism, 36 object questions: ablating the tokens at least half inside
# the object, 3.9 of them, cost the right answer 0.15 nats; those at least a quarter inside, 7.1, 0.74;
# every token it touches, 17.8, 2.56 nats, against 0.08 for as many random tokens).
THRESHOLD = 0.01
RANDOM_DRAWS = 2
WINDOWS = ("early", "middle", "late", "all")
COLUMNS = [
    "question_id",
    "video_id",
    "model",
    "variant",
    "type",
    "cue_of",
    "region",
    "method",
    "window",
    "tokens",
    "target",
    "d_answer",
    "d_right",
    "flipped",
]


def region_tokens(shares: np.ndarray, grid: Grid) -> dict[str, np.ndarray]:
    """Per region, the indices of the video tokens at least THRESHOLD inside it (token order:
    group, token row, token column, as the prompt holds them)."""
    blocks = block_shares(shares, grid, grid.patch * grid.merge)  # (groups, 4, rows, cols)
    return {r: np.flatnonzero(blocks[:, i].reshape(-1) >= THRESHOLD) for i, r in enumerate(REGIONS)}


def windows(layers: int) -> dict[str, set[int]]:
    """The language layers of each knockout window."""
    thirds = np.array_split(np.arange(layers), 3)
    return {"early": set(thirds[0].tolist()), "middle": set(thirds[1].tolist()), "late": set(thirds[2].tolist())} | {
        "all": set(range(layers))
    }


@dataclass
class Scorer:
    """One prediction's input, its video features computed once, and the choices' replies."""

    model: Any
    enc: dict
    features: Any  # the video's encoder output (merger output and deepstack features)
    replies: list[torch.Tensor]  # each choice's reply token ids, end token included
    video_positions: torch.Tensor  # where the video tokens are in the prompt

    @classmethod
    def of(cls, model: Any, tokenizer: Any, enc: dict, choices: list[str], fmt: str, features: Any = None) -> Scorer:
        """`features`: the clip's video features when known (`attention.video_features`)."""
        features = video_features(model, enc) if features is None else features
        eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
        replies = [
            torch.tensor(tokenizer(t, add_special_tokens=False).input_ids + [eos]) for t in targets(choices, fmt)
        ]
        positions = torch.nonzero(enc["input_ids"][0] == model.config.video_token_id).flatten()
        return cls(model, enc, features, replies, positions)

    @property
    def tokens(self) -> int:
        return int(self.features.pooler_output[0].shape[0])

    def embeddings(self) -> torch.Tensor:
        return self.features.pooler_output[0]

    def log_probs(self, features: Any = None) -> np.ndarray:
        """Each choice's reply log-probability (teacher-forced) with these video features: the
        prompt computed once, the replies continued from its cache side by side (right-padded:
        a reply's tokens never see the padding after them)."""
        longest = max(len(r) for r in self.replies)
        padded = torch.stack([torch.cat([r, r.new_full((longest - len(r),), r[-1])]) for r in self.replies])
        with torch.no_grad():
            out = self.model(**model_inputs(self.model, self.enc, features or self.features), use_cache=True)
            steps = [torch.log_softmax(out.logits[0, -1].float(), dim=-1).expand(len(self.replies), -1)[:, None]]
            if longest > 1:
                cache = copy.deepcopy(out.past_key_values)
                cache.batch_repeat_interleave(len(self.replies))
                more = self.model(input_ids=padded[:, :-1], past_key_values=cache).logits.float()
                steps.append(torch.log_softmax(more, dim=-1))
            lp = torch.cat(steps, dim=1).gather(2, padded[:, :, None])[..., 0]
        return np.array([float(lp[i, : len(r)].sum()) for i, r in enumerate(self.replies)])


def ablated(features: Any, tokens: np.ndarray) -> Any:
    """The video features with `tokens` replaced by the clip's mean token (every level)."""
    out = copy.copy(features)
    out.pooler_output = tuple(_mean_into(f, tokens) for f in features.pooler_output)
    out.deepstack_features = [tuple(_mean_into(f, tokens) for f in level) for level in features.deepstack_features]
    return out


def _mean_into(rows: torch.Tensor, tokens: np.ndarray) -> torch.Tensor:
    rows = rows.clone()
    rows[torch.as_tensor(tokens, dtype=torch.long)] = rows.mean(dim=0)
    return rows


@contextlib.contextmanager
def knocked_out(layers: set[int], keys: torch.Tensor, first_query: int) -> Iterator[None]:
    """While open, the capturing attention hides `keys` from every query at or after
    `first_query` in `layers` (language layers)."""
    capture.KNOCKOUT.update(layers=layers, keys=keys, first_query=first_query)
    try:
        yield
    finally:
        capture.KNOCKOUT.clear()


def random_tokens(n: int, k: int, seed: int) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False))


def targets_of(scorer: Scorer, region: np.ndarray, seed: int) -> dict[str, list[np.ndarray]]:
    """The region's tokens and its baselines of the same count."""
    k, n = len(region), scorer.tokens
    norms = scorer.embeddings().norm(dim=-1).numpy()
    return {
        "region": [region],
        "random": [random_tokens(n, k, seed + d) for d in range(RANDOM_DRAWS)],
        "norm": [np.sort(np.argsort(-norms, kind="stable")[:k])],
    }


METHODS = ("none", "ablation", "all")  # `interpret --effects`: none, token ablation, ablation and knockout


def effects(
    pred: Prediction, scorer: Scorer, shares: np.ndarray, grid: Grid, cue: str, right: str, seed: int, methods: str
) -> list[dict]:
    """Every region x method x window x target of one prediction (`methods`: ablation alone, or
    all), as rows of effects.csv."""
    base = scorer.log_probs()
    answer, correct = pred.choices.index(pred.reply), pred.choices.index(right)
    preferred = int(base.argmax())
    layers = windows(scorer.model.config.text_config.num_hidden_layers)
    rows = []
    for region, tokens in region_tokens(shares, grid).items():
        if not len(tokens) or len(tokens) >= scorer.tokens:
            continue
        for target, draws in targets_of(scorer, tokens, seed).items():
            for method, window, lp in removals(scorer, draws, layers, methods):
                rows.append(
                    {
                        "question_id": pred.question_id,
                        "video_id": pred.video_id,
                        "model": pred.model,
                        "variant": pred.variant,
                        "type": pred.type,
                        "cue_of": cue,
                        "region": region,
                        "method": method,
                        "window": window,
                        "tokens": len(tokens),
                        "target": target,
                        "d_answer": float(np.mean([x[answer] for x in lp]) - base[answer]),
                        "d_right": float(np.mean([x[correct] for x in lp]) - base[correct]),
                        "flipped": float(np.mean([int(x.argmax()) != preferred for x in lp])),
                    }
                )
    return rows


OCCLUSION_BATCH = 16  # ablated inputs per forward pass


def occlusion(scorer: Scorer, answer: int, grid: Grid) -> np.ndarray:
    """Per visual token, the change in the run's answer's log-probability when that token alone
    is ablated (groups x token rows x token cols)."""
    base = scorer.log_probs()[answer]
    cut = [ablated(scorer.features, np.array([t])) for t in range(scorer.tokens)]
    lp = np.concatenate(
        [reply_log_probs(scorer, cut[i : i + OCCLUSION_BATCH], answer) for i in range(0, len(cut), OCCLUSION_BATCH)]
    )
    return token_maps(lp - base, grid)


def reply_log_probs(scorer: Scorer, variants: list[Any], choice: int) -> np.ndarray:
    """`choice`'s reply log-probability under each of `variants` (video features), one batch:
    the prompt and the reply, teacher-forced, side by side."""
    reply, n, prompt = scorer.replies[choice], len(variants), int(scorer.enc["input_ids"].shape[1])
    batch = {"video_grid_thw": scorer.enc["video_grid_thw"].repeat(n, 1)}
    for key in ("input_ids", "attention_mask", "mm_token_type_ids"):
        if key in scorer.enc:
            more = reply[:-1] if key == "input_ids" else torch.full_like(reply[:-1], int(key == "attention_mask"))
            batch[key] = torch.cat([scorer.enc[key][0], more])[None].expand(n, -1)
    video = copy.copy(variants[0])
    video.pooler_output = tuple(v.pooler_output[0] for v in variants)
    video.deepstack_features = [
        tuple(v.deepstack_features[k][0] for v in variants) for k in range(len(video.deepstack_features))
    ]
    with torch.no_grad():
        logits = scorer.model(**batch, mm_encoder_outputs={"video": video}).logits[:, prompt - 1 :].float()
    return torch.log_softmax(logits, -1).gather(2, reply.expand(n, -1)[:, :, None])[..., 0].sum(1).numpy()


def removals(scorer: Scorer, draws: list[np.ndarray], layers: dict[str, set[int]], methods: str) -> Iterator[tuple]:
    """(method, window, each draw's log-probabilities) for ablation and every knockout window."""
    yield "ablation", "all", [scorer.log_probs(ablated(scorer.features, d)) for d in draws]
    if methods != "all":
        return
    first = int(scorer.enc["input_ids"].shape[1]) - 1  # the answer position, then the reply's tokens
    for window in WINDOWS:
        lps = []
        for d in draws:
            with knocked_out(layers[window], scorer.video_positions[torch.as_tensor(d, dtype=torch.long)], first):
                lps.append(scorer.log_probs())
        yield "knockout", window, lps
