"""The `testtime` commands that make a base model: `pretrain` (or continue pretraining, or fine-tune an HF LM to
the task format), `generate` (a corpus of generated tasks to pretrain on), `average` (one model from several),
`quantize` (a model in int8, half the room) and `ship` (whether a pretraining stretch replaces the shipped
model). `cli.py` registers them; like every command they only map flags to library calls.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer


def pretrain_command(
    config: Annotated[Path, typer.Option(help="Pretraining config JSON (configs/pretrain-base.json).")] = Path("configs/pretrain-base.json"),
    run_dir: Annotated[Path, typer.Option(help="Run folder; an existing checkpoint/ there is continued.")] = Path("runs/pretrain"),
    max_minutes: Annotated[float | None, typer.Option(help="Wall clock for this call; then save and exit (run again to continue).")] = None,
    steps: Annotated[int | None, typer.Option(help="Override total_steps (the length of the schedule).")] = None,
    fit_minutes: Annotated[float | None, typer.Option(help="Fit the schedule into this many minutes (steps timed "
                                                           "during warmup; total_steps is then the cap).")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cuda or cpu.")] = None,
    lr: Annotated[float | None, typer.Option(help="Override the peak learning rate.")] = None,
    optimizer: Annotated[str | None, typer.Option(help="Override the optimizer: adamw or muon.")] = None,
    export: Annotated[bool, typer.Option("--export", help="Write RUN_DIR/model even if the schedule is not done.")] = False,
    fresh: Annotated[bool, typer.Option("--fresh", help="Ignore an existing checkpoint and start over.")] = False,
    profile_steps: Annotated[int, typer.Option(min=0, help="Profile this many steps once the schedule is fitted (100 "
                                                           "steps in at least): where a step's time goes, in "
                                                           "RUN_DIR/profile.json.")] = 0,
) -> None:
    """Pretrain (or continue pretraining) the base model on augmented ARC training tasks.

    A config with `init_from` fine-tunes an existing Hugging Face LM instead (configs/finetune-gemma3-arc.json).
    """
    from testtime.core.config import with_overrides
    from testtime.recipes import step_profile
    from testtime.recipes.pretrain import PretrainConfig, pretrain

    cfg = PretrainConfig.from_json(config)
    flags = {"max_minutes": ("--max-minutes", max_minutes), "total_steps": ("--steps", steps), "device": ("--device", device),
             "fit_minutes": ("--fit-minutes", fit_minutes), "lr": ("--lr", lr), "optimizer": ("--optimizer", optimizer)}
    given = {k: v for k, (_, v) in flags.items() if v is not None}
    cfg = with_overrides(cfg, given, names={k: flag for k, (flag, _) in flags.items()})
    main_rank = os.environ.get("RANK", "0") == "0"
    with step_profile.for_run(cfg, profile_steps if main_rank else 0, run_dir, typer.echo) as hook:
        res = pretrain(cfg, run_dir, resume=not fresh, export=export or None, on_step=hook)
    if not main_rank:  # under torchrun, rank 0 speaks for the run
        return
    state = "finished" if res.finished else "stopped (run again to continue)"
    typer.echo(f"{state} at step {res.step}/{res.total_steps}; log {run_dir / 'log.jsonl'}, plot {run_dir / 'loss.png'}")
    if res.model_dir is not None:
        typer.echo(f"model written to {res.model_dir}")
    if res.best_val is not None:
        typer.echo(f"lowest held-out loss {res.best_val:.4f}; that model is in {run_dir / 'best'}")


def generate_command(
    out: Annotated[Path, typer.Option(help="The corpus (.npz, RE-ARC's format); pretrain on it as \"gen:OUT\".")] = Path("runs/gen/gen.npz"),
    tasks: Annotated[int, typer.Option(help="Tasks to keep.")] = 20_000,
    pairs: Annotated[int, typer.Option(help="Pairs a task keeps (pretraining draws 2-5 demos and a query from them).")] = 24,
    seed: Annotated[int, typer.Option(help="The corpus for a seed is the same whatever the workers.")] = 0,
    per_name: Annotated[int, typer.Option(help="At most this many tasks per program description.")] = 8,
    workers: Annotated[int, typer.Option(help="Processes drawing tasks; 0: one per CPU core.")] = 0,
    gallery: Annotated[int, typer.Option(help="Also write OUT.html: this many of its tasks, to look at.")] = 24,
) -> None:
    """Generate pretraining tasks: programs of grid primitives on generated inputs, filtered (data/gen_corpus.py)."""
    from testtime.data import gen_corpus

    cfg = gen_corpus.CorpusConfig(tasks=tasks, pairs=pairs, seed=seed, per_name=per_name, workers=workers)
    typer.echo(gen_corpus.generate_corpus(cfg, out).line())
    if gallery:
        typer.echo(f"wrote {gen_corpus.gallery(out, out.with_suffix('.html'), gallery, seed)}")


def average_command(
    models: Annotated[list[Path], typer.Argument(help="Model folders of one architecture (two or more).")],
    out: Annotated[Path, typer.Option(help="The averaged model's folder (new, or empty).")],
    weights: Annotated[str | None, typer.Option(help="A weight a model, comma-separated (default: equal).")] = None,
) -> None:
    """Average models' weights tensor by tensor into one model (a model soup: stretches of one pretraining)."""
    from testtime.model.averaging import average_models
    from testtime.model.model_folder import ModelError

    mix = None
    if weights is not None:
        try:
            mix = [float(w) for w in weights.split(",")]
        except ValueError:
            raise ModelError(f"--weights {weights!r}: not numbers separated by commas") from None
    typer.echo(f"wrote {average_models(models, out, mix)}")


def quantize_command(
    model: Annotated[Path, typer.Argument(help="A model folder (safetensors; bf16 or float32).")],
    out: Annotated[Path, typer.Option(help="The int8 model's folder (new, or empty).")],
) -> None:
    """Store a model's weights as int8 with a scale a row (half of bf16's room); every command loads it, read back."""
    from testtime.model.int8 import quantize_model

    written = quantize_model(model, out)
    size = sum(f.stat().st_size for f in written.iterdir() if f.name.endswith(".safetensors"))
    typer.echo(f"wrote {written}: weights {size / 1e6:.1f} MB")


def ship_command(
    shipped: Annotated[Path, typer.Argument(help="The shipped model's run on the 400 with TTT.")],
    stretch: Annotated[Path, typer.Argument(help="The stretch's run of the same tasks and settings.")],
    guard: Annotated[list[str] | None, typer.Option(
        help="NAME:SHIPPED:STRETCH, a check's two runs (ARC-AGI-2, the 400 without TTT); with any, the last line "
             "decides.")] = None,
) -> None:
    """The campaign's ship rule: the stretch against the shipped model on the 400, then each check (a guard)."""
    from testtime.core.store import read_results
    from testtime.report.ship import decide, yardstick
    from testtime.report.ship import guard as guard_verdict

    guards = []
    for spec in guard or []:
        name, *runs = spec.split(":")
        if len(runs) != 2 or not all([name, *runs]):
            raise ValueError(f"--guard {spec!r}: not NAME:SHIPPED:STRETCH")
        guards.append((name, *runs))
    verdicts = [yardstick(read_results(shipped), read_results(stretch))]
    verdicts += [guard_verdict(name, read_results(a), read_results(b)) for name, a, b in guards]
    for v in verdicts:
        typer.echo(v.line)
    if guards:
        typer.echo(decide(verdicts))
