"""The reply the model gives on the rebuilt input, decoded as the server decoded it: greedy,
each step limited to the tokens that keep the reply text on a prefix of one of the targets
(any spelling in tokens, as a grammar allows, not only the tokenizer's own), and the end of
the reply once the text is a target — what vLLM's `structured_outputs` choice constraint allows."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import torch

from interpret.attention import model_inputs


@lru_cache(maxsize=4)
def pieces(tokenizer: Any) -> tuple[str, ...]:
    """Every token's text, by id."""
    return tuple(tokenizer.decode([i]) for i in range(len(tokenizer)))


def allowed(targets: list[str], text: str, texts: tuple[str, ...], eos: int) -> list[int]:
    """The tokens that may follow the reply `text` so far."""
    alive = [t[len(text) :] for t in targets if t.startswith(text)]
    ok = [i for i, s in enumerate(texts) if s and any(rest.startswith(s) for rest in alive)]
    return sorted(set(ok) | ({eos} if "" in alive else set()))


def choose(model: Any, tokenizer: Any, enc: dict, targets: list[str], features: Any = None) -> str | None:
    """The target the model replies on `enc` under the choice constraint (None: it ended on none):
    greedy, each step's best allowed token, continued from the prompt's cache. With the clip's
    `features` (`attention.video_features`) the vision tower is not run again."""
    texts = pieces(tokenizer)
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.pad_token_id
    device = next(model.parameters()).device
    text = ""
    with torch.no_grad():
        out = model(**model_inputs(model, enc, features), use_cache=True)
        for _ in range(max(len(t) for t in targets) + 1):
            ok = allowed(targets, text, texts, eos)
            token = ok[int(torch.argmax(out.logits[0, -1, ok]))]
            if token == eos:
                break
            text += texts[token]
            step = torch.tensor([[token]], device=device)
            out = model(input_ids=step, past_key_values=out.past_key_values, use_cache=True)
    return text if text in targets else None


def margin(logits: torch.Tensor, tokenizer: Any, targets: list[str]) -> float | None:
    """How sure the first reply token is: the log-prob of the best token the constraint allows
    minus the runner-up's (a near-zero margin flips on rounding noise)."""
    texts = pieces(tokenizer)
    ok = [i for i in allowed(targets, "", texts, -1) if i >= 0]
    if len(ok) < 2:
        return None
    top = torch.log_softmax(logits.float(), dim=-1)[ok].topk(2).values
    return round(float(top[0] - top[1]), 6)
