"""Many LoRA adapters in one model: each sequence of a batch goes through its own task's adapter.

`attach_multi_lora(model, n_adapters, ...)` wraps the target `nn.Linear` layers in place.
Each wrapped layer holds stacked low-rank factors A [n, r, in] and B [n, out, r]; a shared
`AdapterContext` says which adapter each row of the batch uses. Training many tasks'
adapters in one batch then costs one forward/backward instead of one per task, and since
each task's loss only reaches its own slice of A and B (and AdamW is elementwise), the
result equals training every task alone.

With `kind="full"` each slot is instead a full-weight update D [n, out, in] of the same layers
(`MultiFullLinear`), batched the same way; both kinds share `MultiAdapterLinear`'s routing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from testtime.model.training import task_seed


@dataclass
class AdapterContext:
    index: torch.Tensor | None = None  # [batch] adapter per row, or None for the bare base model
    single: int | None = None  # the adapter of every row, when they all share one (no per-row gather then)
    # On the CPU: rows sorted by adapter, as (adapter, start, end) runs, with the sort and its inverse (None where
    # the rows come sorted already, as TTT's lockstep batches do).
    segments: list[tuple[int, int, int]] | None = None
    order: torch.Tensor | None = None
    inverse: torch.Tensor | None = None


class MultiAdapterLinear(nn.Module):
    """A frozen nn.Linear plus a per-adapter update: row r of a batch gets `_delta(x_r, k)` of adapter k =
    `ctx.index[r]`. Subclasses say what the update is (`_delta` for one adapter, `_gather` for a batch of them)."""

    kind = ""
    gather = True  # whether a GPU batch of mixed adapters gathers each row's weights (else: loops over adapters)

    def __init__(self, base: nn.Linear, ctx: AdapterContext) -> None:
        super().__init__()
        self.base = base
        self.ctx = ctx

    @property
    def n_adapters(self) -> int:
        return self.adapter_parameters()[0].shape[0]

    def adapter_parameters(self) -> list[nn.Parameter]:
        raise NotImplementedError

    def reset(self, generators: list[torch.Generator]) -> None:
        raise NotImplementedError

    def state(self, adapter: int) -> dict[str, torch.Tensor]:
        """One adapter's weights, by their names in `MultiLoRA.state` (without the module's prefix)."""
        raise NotImplementedError

    def _delta(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """Adapter k's update of the output for inputs x [..., in]."""
        raise NotImplementedError

    def _gather(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """The update of row r of x [b, t, in] through adapter idx[r], all rows at once."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        idx = self.ctx.index
        if idx is None:
            return y
        if self.ctx.single is not None:  # one adapter for the whole batch (solving one task): plain matmuls
            return y + self._delta(x, self.ctx.single)
        shape = x.shape
        if self.ctx.segments is not None:  # one matmul per adapter reads its weights once
            xs = x.reshape(shape[0], -1, shape[-1])
            if self.ctx.order is not None:
                xs = xs[self.ctx.order]
            delta = torch.cat([self._delta(xs[s:e], k) for k, s, e in self.ctx.segments])
            if self.ctx.inverse is not None:
                delta = delta[self.ctx.inverse]
            return y + delta.reshape(*shape[:-1], -1)
        return y + self._gather(x.reshape(shape[0], -1, shape[-1]), idx).reshape(*shape[:-1], -1)


class MultiLoRALinear(MultiAdapterLinear):
    """LoRA: adapter k adds x A_k^T B_k^T * alpha/rank, with A [n, r, in] and B [n, out, r]."""

    kind = "lora"

    def __init__(self, base: nn.Linear, n_adapters: int, rank: int, alpha: float, ctx: AdapterContext) -> None:
        super().__init__(base, ctx)
        self.rank = rank
        self.scale = alpha / rank
        dev, dtype = base.weight.device, torch.float32
        self.lora_A = nn.Parameter(torch.zeros(n_adapters, rank, base.in_features, device=dev, dtype=dtype))
        self.lora_B = nn.Parameter(torch.zeros(n_adapters, base.out_features, rank, device=dev, dtype=dtype))

    def adapter_parameters(self) -> list[nn.Parameter]:
        return [self.lora_A, self.lora_B]

    def reset(self, generators: list[torch.Generator]) -> None:
        # The usual LoRA start: A like nn.Linear's default init, B zero, so the adapter starts as a no-op.
        # One generator per slot: a task's start does not depend on which tasks share its batch.
        bound = 1 / math.sqrt(self.base.in_features)  # kaiming_uniform(a=sqrt(5)) bound
        with torch.no_grad():
            for k, g in enumerate(generators):
                a = torch.empty(self.lora_A.shape[1:], dtype=torch.float32).uniform_(-bound, bound, generator=g)
                self.lora_A[k].copy_(a)
            self.lora_B.zero_()

    def state(self, adapter: int) -> dict[str, torch.Tensor]:
        return {"lora_A.weight": self.lora_A[adapter].detach().clone(),
                "lora_B.weight": self.lora_B[adapter].detach().clone()}

    def _delta(self, x: torch.Tensor, k: int) -> torch.Tensor:
        h = x @ self.lora_A[k].to(x.dtype).t()
        return (h @ self.lora_B[k].to(x.dtype).t()) * self.scale

    def _gather(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        a = self.lora_A[idx].to(x.dtype)  # [b, r, in]
        b = self.lora_B[idx].to(x.dtype)  # [b, out, r]
        return torch.bmm(torch.bmm(x, a.transpose(1, 2)), b.transpose(1, 2)) * self.scale


class MultiFullLinear(MultiAdapterLinear):
    """Full-weight updates: adapter k adds x D_k^T, with D [n, out, in] in float32, zero at the start (a no-op).

    The update is its own matmul rather than merged into the weight: added to a bfloat16 weight, an update
    smaller than the weight's rounding step would vanish. Rank and alpha do not apply.
    """

    kind = "full"
    # Gathering a copy of the weight per row would cost rows x out x in memory (and keep it for the backward);
    # a loop over the batch's adapters reads each update once, on any device.
    gather = False

    def __init__(self, base: nn.Linear, n_adapters: int, ctx: AdapterContext) -> None:
        super().__init__(base, ctx)
        self.delta = nn.Parameter(torch.zeros(n_adapters, base.out_features, base.in_features,
                                              device=base.weight.device, dtype=torch.float32))

    def adapter_parameters(self) -> list[nn.Parameter]:
        return [self.delta]

    def reset(self, generators: list[torch.Generator]) -> None:
        with torch.no_grad():  # a zero start needs no random stream: every slot starts as the base model
            self.delta.zero_()

    def state(self, adapter: int) -> dict[str, torch.Tensor]:
        return {"delta": self.delta[adapter].detach().clone()}

    def _delta(self, x: torch.Tensor, k: int) -> torch.Tensor:
        return x @ self.delta[k].to(x.dtype).t()

    def _gather(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return torch.bmm(x, self.delta[idx].to(x.dtype).transpose(1, 2))


ADAPTER_KINDS = ("lora", "full")


def find_target_modules(model: nn.Module) -> list[str]:
    """Leaf names of the linear layers inside the transformer blocks (q_proj, ..., down_proj for Llama).

    Found from the architecture rather than hard-coded, so any causal LM works; the output
    head and embeddings are left alone.
    """
    names = set()
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear) and ".layers." in f".{name}" and "lm_head" not in name:
            names.add(name.rsplit(".", 1)[-1])
    if not names:  # architectures that name their blocks otherwise (h., blocks.)
        names = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear) and "lm_head" not in n}
    return sorted(names)


def target_linears(model: nn.Module, targets: Sequence[str] | None = None) -> list[tuple[str, nn.Linear]]:
    """The linear layers adapters attach to, with their names: those whose leaf name is in `targets` (default
    `find_target_modules`), never the output head."""
    names = set(targets or find_target_modules(model))
    return [(name, mod) for name, mod in model.named_modules()
            if isinstance(mod, nn.Linear) and name.rsplit(".", 1)[-1] in names and "lm_head" not in name]


@dataclass
class MultiLoRA:
    """Handle on the adapters attached to a model: a bank of LoRA adapters, or of full-weight ones (`kind`)."""

    model: nn.Module
    ctx: AdapterContext
    layers: dict[str, MultiAdapterLinear] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return next(iter(self.layers.values())).kind

    @property
    def n_adapters(self) -> int:
        return next(iter(self.layers.values())).n_adapters

    def parameters(self) -> list[nn.Parameter]:
        return [p for layer in self.layers.values() for p in layer.adapter_parameters()]

    @property
    def _gathers(self) -> bool:
        return all(layer.gather for layer in self.layers.values())

    def reset(self, seed: int, keys: Sequence[str] | None = None) -> None:
        """Fresh adapters; slot k starts from a stream seeded by (seed, keys[k]), e.g. its task id."""
        keys = list(keys or []) + [f"#{k}" for k in range(len(keys or []), self.n_adapters)]
        gens = [torch.Generator().manual_seed(task_seed(seed, key)) for key in keys]
        for name in sorted(self.layers):
            self.layers[name].reset(gens)

    def use(self, index: torch.Tensor | None) -> None:
        self.ctx.index = index
        # One host sync per batch (not per layer or step): rows of a single task skip the per-row gather.
        first = None if index is None or index.numel() == 0 else int(index[0])
        self.ctx.single = first if first is not None and bool((index == first).all()) else None
        self.ctx.segments = self.ctx.order = self.ctx.inverse = None
        if index is not None and self.ctx.single is None and (index.device.type == "cpu" or not self._gathers):
            # Gathering a weight copy per row costs a CPU more than the matmuls themselves; a loop over the
            # batch's adapters does not. (On a GPU the gather of LoRA factors is cheap and one launch beats a loop.)
            # Rows that come sorted skip both gathers, each a copy of the layer's activations (and, backward, an
            # accumulating scatter): 13% of a CPU TTT step with two adapters (results/cpu-2026-12-07-a2.md).
            ordered = index
            if not bool((index[1:] >= index[:-1]).all()):
                order = torch.argsort(index, stable=True)
                self.ctx.order, self.ctx.inverse, ordered = order, torch.argsort(order), index[order]
            keys, counts = torch.unique_consecutive(ordered, return_counts=True)
            ends = counts.cumsum(0).tolist()
            self.ctx.segments = [(int(k), e - int(c), e) for k, c, e in zip(keys, counts, ends, strict=True)]

    def state(self, adapter: int) -> dict[str, torch.Tensor]:
        """One adapter's weights, named like peft's (`<module>.lora_A.weight`; full: `<module>.delta`), for saving
        or comparing."""
        return {f"{name}.{key}": value for name, layer in self.layers.items()
                for key, value in layer.state(adapter).items()}

    def detach(self) -> None:
        """Put the original linear layers back."""
        for name, layer in self.layers.items():
            parent_name, _, leaf = name.rpartition(".")
            parent = self.model.get_submodule(parent_name) if parent_name else self.model
            setattr(parent, leaf, layer.base)
        self.layers.clear()


def attach_multi_lora(
    model: nn.Module, n_adapters: int, *, rank: int = 32, alpha: float = 32.0, targets: list[str] | None = None,
    seed: int = 0, kind: str = "lora",
) -> MultiLoRA:
    """`n_adapters` adapter slots in the target linear layers: LoRA of `rank` and `alpha`, or (`kind="full"`) a
    full-weight update of each layer, where rank and alpha do not apply."""
    if kind not in ADAPTER_KINDS:
        raise ValueError(f"adapter kind must be one of {', '.join(ADAPTER_KINDS)}, got {kind!r}")
    targets = targets or find_target_modules(model)
    for p in model.parameters():
        p.requires_grad_(False)
    ctx = AdapterContext()
    handle = MultiLoRA(model, ctx)
    for name, mod in target_linears(model, targets):
        parent_name, _, leaf = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        wrapped: MultiAdapterLinear = (MultiLoRALinear(mod, n_adapters, rank, alpha, ctx) if kind == "lora"
                                       else MultiFullLinear(mod, n_adapters, ctx))
        setattr(parent, leaf, wrapped)
        handle.layers[name] = wrapped
    if not handle.layers:
        raise ValueError(f"no linear layers named {targets} in the model")
    handle.reset(seed)
    return handle


@dataclass(frozen=True)
class Adapters:
    """Which adapter each item (a task, a prompt, a sequence) goes through: item i through slot `slots[i]` of
    `lora`. The one handle that training, generation and scoring take instead of loose index arguments."""

    lora: MultiLoRA
    slots: tuple[int, ...]

    @classmethod
    def per_item(cls, lora: MultiLoRA, n: int) -> Adapters:
        """Item i through slot i."""
        return cls(lora, tuple(range(n)))

    def slot(self, item: int) -> int:
        return self.slots[item]

    def take(self, items: Sequence[int]) -> Adapters:
        """The handle of a selection: its k-th item is item `items[k]` of this one."""
        return Adapters(self.lora, tuple(self.slots[i] for i in items))

    def use(self, items: Sequence[int] | None, device) -> None:
        """Route a batch's rows (row r is item `items[r]`) through their adapters; None: no adapter."""
        self.lora.use(None if items is None else torch.tensor([self.slots[i] for i in items], device=device))
