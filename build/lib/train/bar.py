"""transformers' Trainer shown with the project's one progress bar (`core.progress`): optimizer
steps, rich's rate and time left, and the last loss; not its own bar and a dict per step."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from transformers import Trainer, TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from core import progress


class LossBar(TrainerCallback):
    """Advances `advance` (a `core.progress.bar`) by each optimizer step, noting the loss."""

    def __init__(self, advance: progress.Advance) -> None:
        self.advance = advance
        self.note = ""

    def on_train_begin(self, args, state, control, **kwargs) -> None:
        self.advance(state.global_step, total=state.max_steps)  # a resumed run starts where it stopped

    def on_log(self, args, state, control, logs=None, **kwargs) -> None:
        if logs and "loss" in logs:
            self.note = f"loss {logs['loss']:.4f}"

    def on_step_end(self, args, state, control, **kwargs) -> None:
        self.advance(note=self.note)


@contextlib.contextmanager
def shown(trainer: Trainer, label: str = "training") -> Iterator[None]:
    """While the block trains: our bar in the first process, nothing printed per step."""
    for theirs in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(theirs)
    if not trainer.is_world_process_zero():
        yield
        return
    with progress.bar(label, None, "steps") as advance:
        trainer.add_callback(LossBar(advance))
        yield
