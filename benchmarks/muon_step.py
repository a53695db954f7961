"""One Muon step over a model's body matrices: torch.optim.Muon (a matrix at a time) against GroupedMuon (a stack of
same-shaped matrices at a time), the same update either way.

At equal minutes Muon trained the shipped architecture at 0.99M tokens/s against AdamW's 1.18M on one H100
(results/h100-arch-adapters-2026-12-06.md): its step is some 1,700 small kernels. This times the optimizer step
alone on the model's own matrices (gradients drawn once), interleaved over rounds (medians), and says how far the
two steps' weights differ (bfloat16 Newton-Schulz: 0 on a CPU, within rounding on a GPU).

    python benchmarks/muon_step.py [--model PATH | --config PRETRAIN.json] [--device cuda] [--steps 20] [--rounds 5]
                                   [--out FILE]

--config times a fresh model of that pretraining config's shape: a step's time depends on the shapes alone, and a
job that pretrains from scratch carries no weights (scripts/campaign_from.sh --none; gpu_arch.sh's step failed
so on 2026-12-07).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from functools import partial
from pathlib import Path

import torch
from provenance import header, publish

from testtime.model.loading import build_model, load_model
from testtime.model.optimizers import GroupedMuon, body_matrices
from testtime.recipes.pretrain import PretrainConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--model", default=None, help="model folder (default: the shipped base model)")
    src.add_argument("--config", type=Path, default=None, help="a pretraining config: a fresh model of its shape")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, default=20, help="optimizer steps per timing")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", type=Path, default=None, help="append the table to this file")
    args = ap.parse_args()
    dev = torch.device(args.device)
    if args.config is not None:
        model = build_model(PretrainConfig.from_json(args.config).model).to(dev).float()
    else:
        model = load_model(args.model, dev).model.float()
    base = [p.detach() for p in body_matrices(model)]
    gen = torch.Generator(device=dev).manual_seed(0)
    grads = [torch.randn(p.shape, device=dev, generator=gen) * 1e-3 for p in base]
    kw = {"lr": 1.2e-3, "weight_decay": 0.1, "momentum": 0.95, "nesterov": True, "adjust_lr_fn": "match_rms_adamw"}
    makers = {"torch.optim.Muon": torch.optim.Muon, "GroupedMuon": partial(GroupedMuon, batched=True)}

    def built(make, weights: list[torch.Tensor]):
        params = [torch.nn.Parameter(w.detach().clone()) for w in weights]
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        opt = make(params, **kw)
        # scheduled as pretraining schedules it: the scheduler's own key in each group once kept GroupedMuon from
        # stacking there, unseen here
        torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
        return opt

    opts = {name: built(make, base) for name, make in makers.items()}

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    def timed(opt) -> float:
        sync()
        t = time.perf_counter()
        for _ in range(args.steps):
            opt.step()
        sync()
        return (time.perf_counter() - t) / args.steps * 1e3

    for opt in opts.values():  # warm both: buffers allocated, kernels loaded
        timed(opt)
    ms: dict[str, list[float]] = {name: [] for name in opts}
    for _ in range(args.rounds):
        for name, opt in opts.items():
            ms[name].append(timed(opt))
    # One step each from the same weights and momentum (torch's, after its steps above), on the same gradients.
    src = opts["torch.optim.Muon"]
    stepped = []
    for make in makers.values():
        opt = built(make, src.param_groups[0]["params"])
        opt.load_state_dict(copy.deepcopy(src.state_dict()))
        opt.step()
        stepped.append(opt.param_groups[0]["params"])
    diff = max((x - y).abs().max().item() for x, y in zip(*stepped, strict=True))
    shapes = sorted({tuple(p.shape) for p in base})
    lines = header("One Muon step over the body matrices", dev) + [
        "", f"{len(base)} matrices in {len(shapes)} shapes ({', '.join('x'.join(map(str, s)) for s in shapes)}); "
            f"{args.steps} steps a timing, median of {args.rounds} rounds; the two optimizers' weights after one "
            f"step from the same state differ by at most {diff:.2g}.", "",
        "| optimizer | ms a step (median) | min | max |", "|---|---|---|---|"]
    for name, v in ms.items():
        lines.append(f"| {name} | {statistics.median(v):.2f} | {min(v):.2f} | {max(v):.2f} |")
    ratio = statistics.median(ms["GroupedMuon"]) / statistics.median(ms["torch.optim.Muon"])
    lines += ["", f"GroupedMuon's step takes {ratio:.2f}x torch's ({abs(1 - ratio):.0%} "
                  f"{'faster' if ratio < 1 else 'slower'})."]
    publish(lines, args.out)


if __name__ == "__main__":
    main()
