"""What one pretraining step computes: the loss over target tokens (padded batches, or rows of packed documents
under a block mask), the optimizer, the DDP wrapper, and the FLOPs that MFU counts; what the held-out tasks say of
the model as it trains (their loss, and how many greedy decoding solves)."""

from __future__ import annotations

from collections.abc import Sequence

from testtime.data.pretrain_data import Batch
from testtime.model.loading import head_logits

PEAK_BF16_FLOPS = 989e12  # dense bf16 of an H100 or H200 (the two share the chip), the datasheet's figure
HEAD_CHUNK = 2048  # target rows per output-head chunk in `loss_sum_targets`


def loss_sum(model, input_ids, labels, attention_mask=None, task_index=None):
    """Summed next-token cross entropy over target positions, in fp32.

    The vocabulary has 32 entries, so logits for every position cost less memory than the hidden states;
    computing them all keeps shapes static for torch.compile (no data-dependent gather). `attention_mask`: a block
    mask of packed documents (`testtime.model.attention.document_mask`), or None for causal attention over each
    whole row. `task_index`: each token's task row, for a model with a per-task embedding.
    """
    import torch.nn.functional as F

    tasks = {} if task_index is None else {"task_index": task_index}
    hidden = model.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **tasks).last_hidden_state
    logits = model.lm_head(hidden).float()
    return F.cross_entropy(logits.view(-1, logits.size(-1)), labels.view(-1), ignore_index=-100, reduction="sum")


def _head_loss(model, hidden, targets):
    import torch.nn.functional as F

    return F.cross_entropy(head_logits(model, hidden), targets, reduction="sum")


def loss_sum_targets(model, input_ids, labels, attention_mask=None):
    """`loss_sum` for a large vocabulary (an LLM's 256k tokens): the output head runs only on target positions,
    in chunks whose logits are recomputed in the backward pass, so no [tokens x vocab] tensor is ever held."""
    from torch.utils.checkpoint import checkpoint

    hidden = model.get_decoder()(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
    sel = labels != -100
    h, y = hidden[sel], labels[sel]
    return sum(checkpoint(_head_loss, model, h[i: i + HEAD_CHUNK], y[i: i + HEAD_CHUNK], use_reentrant=False)
               for i in range(0, len(y), HEAD_CHUNK))


def validate(model, batches: Sequence[Batch], device: str, autocast, fn=None) -> float:
    """Mean next-token loss on the validation targets."""
    import torch

    was_training = model.training
    model.eval()
    total, n = 0.0, 0
    with torch.no_grad(), autocast:
        for b in batches:
            total += float((fn or loss_sum)(model, b.input_ids.to(device), b.labels.to(device)))
            n += b.n_targets
    model.train(was_training)
    return total / max(1, n)


OPTIMIZERS = ("adamw", "muon")


def make_optimizer(model, lr: float, betas: tuple[float, float], weight_decay: float, fused: bool,
                   kind: str = "adamw"):
    """AdamW, decaying matrices only (norms and biases keep their scale); or, for `kind="muon"`, Muon on the
    transformer body's matrices and AdamW on the rest.

    Muon orthogonalizes each matrix's momentum (Newton-Schulz); it only suits hidden 2-D matrices, so the
    embedding (tied to the head here), a task table, norms and biases stay with AdamW. Both read the one `lr` and
    weight decay; Muon's best lr is its own (twice AdamW's on the CPU proxy, results/cpu-muon-2026-12-05.md).
    """
    import torch

    from testtime.model.optimizers import Optimizers, body_matrices, muon

    if kind not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, not {kind!r}")
    trained = [p for p in model.parameters() if p.requires_grad]
    matrices = {id(p) for p in body_matrices(model)} if kind == "muon" else set()
    decay = [p for p in trained if p.dim() >= 2 and id(p) not in matrices]
    no_decay = [p for p in trained if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    kw = {"fused": True} if fused else {}
    adamw = torch.optim.AdamW(groups, lr=lr, betas=betas, **kw)
    if kind == "adamw":
        return adamw
    return Optimizers(adamw=adamw, muon=muon([p for p in trained if id(p) in matrices], lr, weight_decay))


def flops_per_token(layers: int, hidden: int, n: int, attended: float) -> float:
    """Training FLOPs a token costs: 6 x (matmul) params, plus causal attention over the tokens it attends to.

    `attended`: the mean, over tokens, of the length of the sequence a token belongs to (sum of squared lengths
    over sum of lengths), so attention counts what the model needs, whether a batch pads or packs: a causal
    sequence of n tokens costs 2 matmuls x 2 FLOPs x n^2/2 x hidden a layer forward, 3x that with the backward.
    No activation recomputation is counted (none is done). `n` excludes an LLM's embedding (a lookup, and its
    tied head runs only on target tokens), so an init_from run's MFU is a slight underestimate."""
    return 6 * n + 6 * layers * hidden * attended


def loss_module(model, fn=None):
    """`model` with `fn` (default `loss_sum`) as its forward: DistributedDataParallel syncs gradients of forward
    calls only."""
    from torch import nn

    class LossModule(nn.Module):
        def __init__(self, inner) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, labels, attention_mask=None, **tasks):
            return (fn or loss_sum)(self.inner, input_ids, labels, attention_mask, **tasks)

    return LossModule(model)


def ddp_loss(module):
    """`fn(model, ids, labels[, mask], [task_index=])` through a DDP-wrapped `loss_module`, so gradients are
    all-reduced."""
    return lambda _model, ids, labels, *mask, **tasks: module(ids, labels, *mask, **tasks)


def over_ranks(loss, real: int, padded: int, attended: int, world: int):
    """Under DDP, a log interval's loss summed over its steps, averaged over ranks; token counts summed over ranks."""
    import torch
    import torch.distributed as tdist

    t = torch.cat([loss.detach().reshape(1).double(),
                   torch.tensor([real, padded, attended], dtype=torch.float64, device=loss.device)])
    tdist.all_reduce(t)
    loss_mean, real_sum, padded_sum, attended_sum = t.tolist()
    return torch.tensor(loss_mean / world, device=loss.device), int(real_sum), int(padded_sum), int(attended_sum)


def held_out_solved(model, tasks: Sequence, codec, max_len: int) -> float:
    """How many of `tasks` greedy decoding solves with no TTT (the sum of `held_out_shares`)."""
    return sum(held_out_shares(model, tasks, codec, max_len))


def held_out_shares(model, tasks: Sequence, codec, max_len: int) -> list[float]:
    """Each task's share of its test inputs that greedy decoding answers exactly with no TTT, as ARC scores a single
    attempt: each test input answered once, under the identity view, through the generation engine (all of them
    batched)."""
    from testtime.data.tasks import grids_equal
    from testtime.stages.predict import PredictConfig, predict_tasks

    was_training = model.training
    model.eval()
    try:
        preds, _ = predict_tasks(model, tasks, codec, PredictConfig(views=1, max_len=max_len))
    finally:
        model.train(was_training)
    shares = []
    for task, tp in zip(tasks, preds, strict=True):
        hits = [bool(p) and grids_equal(p[0].grid, ex.output) for p, ex in zip(tp.predictions, task.test, strict=True)]
        shares.append(sum(hits) / max(1, len(hits)))
    return shares
