"""Benchmark `interpret`'s forward pass with attention captured, at two frame sizes, printing
figures measured in this one run (no thresholds asserted):

- samples/s (one forward pass with the capture, on --frames seeded random frames);
- peak RSS of a fresh process doing only that, and the language model's attention it keeps:
  one answer-position row per layer (heads x L), against eager attention with
  `output_attentions=True`, which keeps every layer's full heads x L x L.

Then how the attention kept grows from the small size to the large, against how the prompt
grows (capture: linearly; eager: with the square). The last line: what one prediction costs
`interpret` at the small size (its question's pass with the capture, the generic question's,
the constrained reply; with `--effects ablation`, also each of 4 regions of a quarter of the
tokens ablated against its baselines, and, for a question whose maps are drawn, the window
centred on each token ablated for the occlusion map) against one plain forward pass of the
same input. Before it, the occlusion map's peak memory at both sizes against their video token
counts: its ablated inputs are built a batch at a time, so memory grows with the tokens, not
with their square.

Usage: .venv/bin/python scripts/bench_interpret.py [--model data/models/tiny-vlm] [--sizes 128,512]
"""

from __future__ import annotations

import multiprocessing
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core import cli  # noqa: E402
from core.cli import command, option, positive_ints  # noqa: E402
from core.defaults import TINY_MODEL  # noqa: E402


@dataclass
class BenchOptions:
    model: Path = option(TINY_MODEL, "A local Qwen-VL model dir.")
    sizes: tuple[int, ...] = option((128, 512), "Two square frame sizes (pixels).", parser=positive_ints, metavar="N,N")
    frames: int = option(8, "Frames per clip.")
    samples: int = option(4, "Forward passes timed per size.")


def measure(model_dir: str, size: int, frames: int, samples: int, eager: bool) -> dict:
    """In a fresh process: (prompt length, samples/s, peak RSS MiB, attention bytes kept)."""
    import numpy as np
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from interpret import capture, inputs
    from interpret.attention import forward

    torch.set_num_threads(1)
    impl = "eager" if eager else capture.register()
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32, attn_implementation=impl)
    capture.label_vision_layers(model)
    processor = AutoProcessor.from_pretrained(model_dir)
    pixels = np.random.default_rng(0).integers(0, 256, (frames, size, size, 3), dtype=np.uint8)
    enc = inputs.encode(processor, None, inputs.Sent(pixels, list(range(frames)), 4.0, frames))
    start = time.perf_counter()
    for _ in range(samples):
        if eager:
            with torch.no_grad():
                out = model(**enc, output_attentions=True)
            kept = sum(a.numel() * 4 for a in out.attentions)
        else:
            forward(model.eval(), enc)
            kept = sum(r.numel() * 4 for r in capture.CAPTURED.llm.values())
    rate = samples / (time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"tokens": int(enc["input_ids"].shape[1]), "rate": rate, "peak": peak, "kept": kept}


def cost(model_dir: str, size: int, frames: int, samples: int) -> dict:
    """In a fresh process: seconds of one plain forward pass, of interpret's work for one
    prediction, of that work with region ablation, and with the occlusion map too (each the
    fastest of `samples` runs, after one untimed run of them all)."""
    import numpy as np
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from interpret import capture, effects, inputs
    from interpret.attention import forward, grid_of
    from interpret.choice import choose

    torch.set_num_threads(1)
    plain = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32).eval()
    model = AutoModelForImageTextToText.from_pretrained(
        model_dir, dtype=torch.float32, attn_implementation=capture.register()
    ).eval()
    capture.label_vision_layers(model)
    processor = AutoProcessor.from_pretrained(model_dir)
    pixels = np.random.default_rng(0).integers(0, 256, (frames, size, size, 3), dtype=np.uint8)
    enc = inputs.encode(processor, None, inputs.Sent(pixels, list(range(frames)), 4.0, frames))
    choices = ["pushing", "pulling", "dropping", "lifting"]

    def interpret(ablate: bool, occlude: bool = False) -> None:
        forward(model, enc)  # the question's pass
        forward(model, enc)  # the generic question's (the same length here)
        choose(model, processor.tokenizer, enc, choices)
        if ablate:
            scorer = effects.Scorer.of(model, processor.tokenizer, enc, choices, "text")
            quarters = np.array_split(np.random.default_rng(0).permutation(scorer.tokens), 4)
            for region in quarters:
                for draws in effects.targets_of(scorer, np.sort(region), 0).values():
                    list(effects.removals(scorer, draws, {}, "ablation"))
            if occlude:
                effects.occlusion(scorer, 0, grid_of(model, enc))

    def seconds(work) -> float:
        """The fastest of `samples` runs: what the work costs, without what ran beside it."""
        times = []
        for _ in range(samples):
            start = time.perf_counter()
            work()
            times.append(time.perf_counter() - start)
        return min(times)

    with torch.no_grad():
        once = seconds(lambda: plain(**enc))
    interpret(True, True)  # untimed: the first ablation pays for set-up the others do not
    return {
        "plain": once,
        "interpret": seconds(lambda: interpret(False)),
        "effects": seconds(lambda: interpret(True)),
        "drawn": seconds(lambda: interpret(True, True)),
    }


def occlusion_peak(model_dir: str, size: int, frames: int, samples: int) -> dict:
    """In a fresh process: video tokens, and the peak RSS (MiB) the occlusion map adds to what
    the model's forward pass already took."""
    import numpy as np
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from interpret import capture, effects, inputs
    from interpret.attention import grid_of

    torch.set_num_threads(1)
    model = AutoModelForImageTextToText.from_pretrained(
        model_dir, dtype=torch.float32, attn_implementation=capture.register()
    ).eval()
    processor = AutoProcessor.from_pretrained(model_dir)
    pixels = np.random.default_rng(0).integers(0, 256, (frames, size, size, 3), dtype=np.uint8)
    enc = inputs.encode(processor, None, inputs.Sent(pixels, list(range(frames)), 4.0, frames))
    scorer = effects.Scorer.of(model, processor.tokenizer, enc, ["pushing", "pulling"], "text")
    effects.ablations(scorer, [np.arange(effects.BATCH)] * effects.BATCH)  # one batch: what any pass needs
    before = resident()
    Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) from here on
    effects.occlusion(scorer, 0, grid_of(model, enc))
    return {"tokens": scorer.tokens, "added": peak() - before}


def _status(field: str) -> float:
    """A /proc/self/status figure (kB) in MiB."""
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(field + ":"))
    return int(line.split()[1]) / 1024


def resident() -> float:
    return _status("VmRSS")


def peak() -> float:
    return _status("VmHWM")


def fresh(*args, work=None) -> dict:
    """`measure` in a process of its own (its peak RSS its own), forked from a fork server that
    has imported what every such process imports (torch, transformers) once."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["interpret.capture", "interpret.inputs", "transformers.models.auto.modeling_auto"])
    with context.Pool(1) as pool:
        return pool.apply(work or measure, args)


app = cli.app(__doc__)


@command(app, BenchOptions, callback=True)
def bench(o: BenchOptions) -> None:
    """Time the capturing forward pass and weigh what it keeps, at two frame sizes."""
    if len(o.sizes) != 2:
        cli.fail(f"--sizes {','.join(map(str, o.sizes))}: give two sizes, e.g. 128,512")
    got = {}
    for size in o.sizes:
        ours = fresh(str(o.model), size, o.frames, o.samples, False)
        eager = fresh(str(o.model), size, o.frames, 1, True)
        got[size] = (ours, eager)
        print(
            f"frames {size}x{size} ({o.frames}): {ours['tokens']} prompt tokens; {ours['rate']:.2f} samples/s; "
            f"peak RSS {ours['peak']:.0f} MiB (eager, every L x L kept: {eager['peak']:.0f} MiB); attention kept "
            f"{ours['kept'] / 1024:.1f} KiB (eager: {eager['kept'] / 1024:.0f} KiB)"
        )
    (a, ea), (b, eb) = got[o.sizes[0]], got[o.sizes[1]]
    print(
        f"prompt x{b['tokens'] / a['tokens']:.2f} from {o.sizes[0]} to {o.sizes[1]} px; language attention kept: "
        f"capture x{b['kept'] / a['kept']:.2f}, eager x{eb['kept'] / ea['kept']:.2f}; peak RSS: capture "
        f"x{b['peak'] / a['peak']:.2f}, eager x{eb['peak'] / ea['peak']:.2f}"
    )
    occ = [fresh(str(o.model), size, o.frames, 1, work=occlusion_peak) for size in o.sizes]
    print(
        f"occlusion map: video tokens x{occ[1]['tokens'] / occ[0]['tokens']:.2f} ({occ[0]['tokens']} -> "
        f"{occ[1]['tokens']}); peak RSS it adds: {occ[0]['added']:.1f} -> {occ[1]['added']:.1f} MiB "
        f"(every ablated input at once would hold tokens^2 x dim: x{(occ[1]['tokens'] / occ[0]['tokens']) ** 2:.0f})"
    )
    c = fresh(str(o.model), o.sizes[0], o.frames, o.samples, work=cost)
    print(
        f"one prediction at {o.sizes[0]} px: plain forward pass {c['plain']:.3f} s; interpret {c['interpret']:.3f} s "
        f"(x{c['interpret'] / c['plain']:.1f}); with --effects ablation {c['effects']:.3f} s "
        f"(x{c['effects'] / c['plain']:.1f}), drawn (its occlusion map too) {c['drawn']:.3f} s "
        f"(x{c['drawn'] / c['plain']:.1f})"
    )


if __name__ == "__main__":
    cli.main(app)
