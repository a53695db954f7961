"""Optimizers that training builds beyond plain AdamW: Muon for a transformer body's matrices, and several
optimizers stepped, scheduled and checkpointed as one."""

from __future__ import annotations

import math
import warnings
from collections import ChainMap

import torch
from torch import nn


def muon(params: list, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """torch's Muon, its update scaled to AdamW's RMS (Moonshot's `match_rms_adamw`), meant to let AdamW's lr and
    weight decay carry over; on our CPU proxy Muon still wanted twice AdamW's lr (results/cpu-muon-2026-12-05.md).
    Stepped a shape at a time (`GroupedMuon`): the same update as torch's, in a few batched kernels."""
    from testtime.core.config import ConfigError

    if getattr(torch.optim, "Muon", None) is None:
        raise ConfigError(f"optimizer muon needs torch.optim.Muon (torch >= 2.9); this torch is {torch.__version__}")
    return GroupedMuon(params, lr=lr, weight_decay=weight_decay, momentum=0.95, nesterov=True,
                       adjust_lr_fn="match_rms_adamw")


def newton_schulz(stack: torch.Tensor, coefficients: tuple[float, float, float], steps: int,
                  eps: float) -> torch.Tensor:
    """torch's Muon orthogonalization (its quintic Newton-Schulz in bfloat16) on a stack of same-shaped matrices
    at once: each matrix scaled by its own norm, then `steps` batched iterations."""
    a, b, c = coefficients
    x = stack.bfloat16()
    tall = x.size(-2) > x.size(-1)
    if tall:
        x = x.mT
    x = x / x.norm(dim=(-2, -1), keepdim=True).clamp(min=eps)
    for _ in range(steps):
        gram = x @ x.mT
        x = torch.baddbmm(x, torch.baddbmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.mT if tall else x


def _muon_ratio(shape: torch.Size, adjust_lr_fn: str | None) -> float:
    # torch.optim.Muon's lr adjustment for a matrix of this shape (its `_adjust_lr`, as a ratio).
    rows, cols = shape[:2]
    if adjust_lr_fn is None or adjust_lr_fn == "original":
        return math.sqrt(max(1.0, rows / cols))
    return 0.2 * math.sqrt(max(rows, cols)) if adjust_lr_fn == "match_rms_adamw" else 1.0


# The group options the stacked step knows: torch's Muon of 2.9-2.13. A group with others (a later torch's) takes
# torch's own step, which knows what they mean.
# `initial_lr` is a learning-rate scheduler's own record, which the step never reads: pretraining's scheduler sets
# it on every group, and left out of this set it sent every pretraining step to torch's loop (2026-12-07's rematch).
KNOWN_OPTIONS = frozenset({"params", "lr", "weight_decay", "momentum", "nesterov", "ns_coefficients", "eps",
                           "ns_steps", "adjust_lr_fn", "initial_lr"})


def stacks_on(device: torch.device, batched: bool | None) -> bool:
    """Whether GroupedMuon stacks its matrices: as asked, else on a GPU only."""
    return batched if batched is not None else device.type == "cuda"


# An older torch (no Muon) can still import this module; `muon()` then says what it needs.
class GroupedMuon(torch.optim.Muon if hasattr(torch.optim, "Muon") else torch.optim.Optimizer):
    """torch.optim.Muon, stepped one stack of same-shaped matrices at a time.

    torch's Muon loops over the matrices one by one (it has no foreach path): about 30 small kernels each, some
    1,700 launches a step for our 56 body matrices, so the step is bound by launches on a GPU; the shipped model's
    Muon ran at 0.99M tokens/s against AdamW's 1.18M (results/h100-arch-adapters-2026-12-06.md). Here the momentum,
    weight decay and update are foreach ops and Newton-Schulz is batched over each shape's stack (about 150 launches
    for 3 shapes): the same arithmetic, the same state (`momentum_buffer` per parameter), so checkpoints move
    between the two. `batched` (default: on a GPU) picks the stacks; on a CPU torch's loop is as fast or faster
    (nothing there is bound by launches: benchmarks/muon_step.py). The lr is read as a float, as our schedules set it.
    """

    def __init__(self, params, *args, batched: bool | None = None, **kw) -> None:
        super().__init__(params, *args, **kw)
        self.batched = batched

    def __getstate__(self):  # torch's keeps only defaults, state and groups: a copy would lose `batched`
        return {**super().__getstate__(), "batched": self.batched}

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        first = next((p for g in self.param_groups for p in g["params"]), None)
        stacks = first is not None and stacks_on(first.device, self.batched)
        unknown = sorted({k for g in self.param_groups for k in g} - KNOWN_OPTIONS)
        if stacks and unknown:  # said once a process: a silent fallback cost a whole rematch (2026-12-07)
            warnings.warn(f"GroupedMuon: group options {unknown} unknown to its stacked step; torch's loop steps "
                          "instead", stacklevel=2)
        if not stacks or unknown:
            # torch's step without its hook wrapper, which torch adds once a Muon exists: this step's own wrapper ran
            # the optimizer's hooks already
            step = torch.optim.Muon.step
            return (step.__wrapped__ if getattr(step, "hooked", False) else step)(self, closure)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            for p in params:
                if "momentum_buffer" not in self.state[p]:
                    self.state[p]["momentum_buffer"] = torch.zeros_like(p.grad)
            lr = float(group["lr"])
            shapes: dict[tuple, list[torch.Tensor]] = {}
            for p in params:
                shapes.setdefault((p.shape, p.dtype, p.device), []).append(p)
            for (shape, dtype, device), ps in shapes.items():
                gs, bs = [p.grad for p in ps], [self.state[p]["momentum_buffer"] for p in ps]
                torch._foreach_lerp_(bs, gs, 1 - group["momentum"])
                update = torch._foreach_lerp(gs, bs, group["momentum"]) if group["nesterov"] else bs
                stack = torch.empty((len(ps), *shape), dtype=torch.bfloat16, device=device)
                torch._foreach_copy_(list(stack.unbind(0)), update)  # rounded to bfloat16 as torch's Muon does
                ortho = newton_schulz(stack, group["ns_coefficients"], group["ns_steps"], group["eps"])
                # In the parameters' dtype and layout (exact from bfloat16), so the add takes foreach's fast path.
                ortho = ortho.to(dtype).contiguous()
                torch._foreach_mul_(ps, 1 - lr * group["weight_decay"])
                torch._foreach_add_(ps, list(ortho.unbind(0)), alpha=-lr * _muon_ratio(shape, group["adjust_lr_fn"]))
        return loss


def body_matrices(model) -> list:
    """The weights of the linear layers inside the transformer body: everything Muon should train. The output
    head is left out (tied to the embedding in our model, and a classifier either way)."""
    head = model.get_output_embeddings()
    tables = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    if head is not None:
        tables.add(id(head.weight))
    return [m.weight for m in model.modules()
            if isinstance(m, nn.Linear) and m.weight.requires_grad and id(m.weight) not in tables]


class Optimizers(torch.optim.Optimizer):
    """Several optimizers stepped, scheduled and checkpointed as one (Muon beside AdamW).

    A learning-rate scheduler and the checkpoint need one `torch.optim.Optimizer`: this one's `param_groups` are
    its parts' own group dicts, in order, so a scheduler's lr reaches every part; its state dict holds one entry
    per part.
    """

    def __init__(self, **parts) -> None:  # no super().__init__: the parts own the parameters and their state
        self.parts = parts
        self.defaults: dict = {}

    @property
    def param_groups(self):  # type: ignore[override]
        # Read from the parts each time: loading a state dict gives each part new group dicts.
        return [g for opt in self.parts.values() for g in opt.param_groups]

    @property
    def state(self):  # type: ignore[override]
        return ChainMap(*(opt.state for opt in self.parts.values()))

    def step(self, closure=None):  # type: ignore[override]
        for opt in self.parts.values():
            opt.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.parts.values():
            opt.zero_grad(set_to_none=set_to_none)

    def state_dict(self):  # type: ignore[override]
        return {name: opt.state_dict() for name, opt in self.parts.items()}

    def load_state_dict(self, state_dict) -> None:  # type: ignore[override]
        if set(state_dict) != set(self.parts):
            raise ValueError(f"optimizer state holds {sorted(state_dict)}, this optimizer {sorted(self.parts)}")
        for name, opt in self.parts.items():
            opt.load_state_dict(state_dict[name])

    def __repr__(self) -> str:
        return f"Optimizers({', '.join(self.parts)})"
