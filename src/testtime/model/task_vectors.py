"""A new task's vector, learned at test time beside its adapter, for a model with a per-task embedding.

A model pretrained with `task_embedding` (`grid_model.TaskEmbedding`) knows a vector for each of its training tasks;
a task it has never seen gets the mean of them. At test time each adapter slot gets a vector of its own, starting
from that mean (the model's prediction without one, so a fresh slot changes nothing), trained with the slot's LoRA
(or full-weight) update by the same optimizer, and used wherever the slot is: decoding, scoring, the leave-one-out
check. It rides in the adapters' bank (`MultiLoRA.layers`), so the bank's routing, reset, per-adapter clipping and
detach serve it unchanged:

    lora = attach_multi_lora(model, n)
    attach_task_vectors(lora)          # False (and nothing attached) for a model without a per-task embedding
"""

from __future__ import annotations

import torch
from torch import nn

from testtime.model.grid_model import TaskEmbedding
from testtime.model.lora import AdapterContext, MultiAdapterLinear, MultiLoRA


class TaskVectorSlots(MultiAdapterLinear):
    """The model's `TaskEmbedding` with a vector per adapter slot: a row routed to slot k gets vector k in place of
    the table's; with no slots in use (`ctx.index` None) the table answers as before."""

    kind = "task_vector"

    def __init__(self, base: TaskEmbedding, n_adapters: int, ctx: AdapterContext) -> None:
        super().__init__(base, ctx)  # type: ignore[arg-type]  (the base is the embedding, not a linear layer)
        hidden = base.table.weight.shape[1]
        self.vectors = nn.Parameter(torch.zeros(n_adapters, hidden, device=base.table.weight.device,
                                                dtype=torch.float32))

    def adapter_parameters(self) -> list[nn.Parameter]:
        return [self.vectors]

    def reset(self, generators: list[torch.Generator]) -> None:
        with torch.no_grad():  # every slot starts where an unknown task stands: the mean of the pretrained vectors
            self.vectors.copy_(self.base.mean().float().expand_as(self.vectors))

    def state(self, adapter: int) -> dict[str, torch.Tensor]:
        return {"vector": self.vectors[adapter].detach().clone()}

    def forward(self, embeds: torch.Tensor, task_index: torch.Tensor | None = None) -> torch.Tensor:
        idx = self.ctx.index
        if idx is None:
            return self.base(embeds, task_index)
        vec = self.vectors[self.ctx.single][None] if self.ctx.single is not None else self.vectors[idx]
        return embeds + vec[:, None].to(embeds.dtype)


def attach_task_vectors(lora: MultiLoRA) -> bool:
    """Give every slot of `lora` a task vector where its model has a per-task embedding (reset with the slots);
    returns whether it has one."""
    for name, module in lora.model.named_modules():
        if isinstance(module, TaskEmbedding):
            parent_name, _, leaf = name.rpartition(".")
            slots = TaskVectorSlots(module, lora.n_adapters, lora.ctx)
            setattr(lora.model.get_submodule(parent_name), leaf, slots)
            lora.layers[name] = slots
            slots.reset([])
            return True
    return False
