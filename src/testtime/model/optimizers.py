"""Optimizers that training builds beyond plain AdamW: Muon for a transformer body's matrices, and several
optimizers stepped, scheduled and checkpointed as one."""

from __future__ import annotations

import math
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


# An older torch (no Muon) can still import this module; `muon()` then says what it needs.
class GroupedMuon(torch.optim.Muon if hasattr(torch.optim, "Muon") else torch.optim.Optimizer):
    """torch.optim.Muon, stepped one stack of same-shaped matrices at a time.

    torch's Muon loops over the matrices one by one (it has no foreach path): about 30 small kernels each, so a
    step of our 56 body matrices is bound by kernel launches on a GPU; the shipped model's Muon ran at 0.99M
    tokens/s against AdamW's 1.18M (results/h100-arch-adapters-2026-12-06.md). Here the momentum, weight decay and
    update are foreach ops and Newton-Schulz is batched over each shape's stack: the same arithmetic, the same
    state (`momentum_buffer` per parameter), so checkpoints move between the two. `batched` (default: on a GPU)
    picks the stacks; on a CPU torch's loop is faster (its bfloat16 batched matmul is slower than its matmul, and
    nothing there is bound by launches: benchmarks/muon_step.py).
    """

    def __init__(self, params, *args, batched: bool | None = None, **kw) -> None:
        super().__init__(params, *args, **kw)
        self.batched = batched

    def __getstate__(self):  # torch's keeps only defaults, state and groups: a copy would lose `batched`
        return {**super().__getstate__(), "batched": self.batched}

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        first = next((p for g in self.param_groups for p in g["params"]), None)
        if not (self.batched if self.batched is not None else first is not None and first.is_cuda):
            return super().step(closure)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            grads = [p.grad for p in params]
            for p in params:
                if "momentum_buffer" not in self.state[p]:
                    self.state[p]["momentum_buffer"] = torch.zeros_like(p.grad)
            bufs = [self.state[p]["momentum_buffer"] for p in params]
            lr = group["lr"].item() if torch.is_tensor(group["lr"]) else group["lr"]
            momentum = group["momentum"]
            shapes: dict[tuple, list[int]] = {}
            for i, p in enumerate(params):
                shapes.setdefault((p.shape, p.dtype, p.device), []).append(i)
            for (shape, _, _), idx in shapes.items():
                ps, gs, bs = [params[i] for i in idx], [grads[i] for i in idx], [bufs[i] for i in idx]
                torch._foreach_lerp_(bs, gs, 1 - momentum)
                update = torch._foreach_lerp(gs, bs, momentum) if group["nesterov"] else bs
                stack = torch.empty((len(idx), *shape), dtype=torch.bfloat16, device=ps[0].device)
                torch._foreach_copy_(list(stack.unbind(0)), update)  # rounded to bfloat16 as torch's Muon does
                ortho = newton_schulz(stack, group["ns_coefficients"], group["ns_steps"], group["eps"])
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
