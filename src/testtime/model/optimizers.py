"""Optimizers that training builds beyond plain AdamW: Muon for a transformer body's matrices, and several
optimizers stepped, scheduled and checkpointed as one."""

from __future__ import annotations

from collections import ChainMap

import torch
from torch import nn


def muon(params: list, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """torch's Muon, its update scaled to AdamW's RMS (Moonshot's `match_rms_adamw`), meant to let AdamW's lr and
    weight decay carry over; on our CPU proxy Muon still wanted twice AdamW's lr (results/cpu-muon-2026-12-05.md)."""
    from testtime.core.config import ConfigError

    cls = getattr(torch.optim, "Muon", None)
    if cls is None:
        raise ConfigError(f"optimizer muon needs torch.optim.Muon (torch >= 2.9); this torch is {torch.__version__}")
    return cls(params, lr=lr, weight_decay=weight_decay, momentum=0.95, nesterov=True, adjust_lr_fn="match_rms_adamw")


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
