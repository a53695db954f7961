"""A test-time training step of fixed shapes, which a GPU captures once as a CUDA graph and replays.

A lone task's training step is bound by the host, not the GPU: about 13,000 aten calls take some 50 ms while its
arithmetic takes a few (results/h200-latency-2026-12-05.md). A replayed graph costs the GPU's time alone. Capture
asks for shapes and addresses that never change, so:
- every step's batch is padded to the widest sequence of the whole training set, and to `batch_size` rows per task
  (an epoch's short last batch gets rows of padding, which carry no loss);
- target tokens are gathered by index into a list padded to the most any step has (a boolean mask would make the
  host wait for the device to count them), the padding weighted 0;
- the optimizer keeps its learning rate and step count on the device (AdamW's `capturable`), and the learning rate
  of each step is written into that tensor before the replay.

Under causal attention the right padding never reaches a real token, so each step's loss and gradients are those
of the dynamic step (`model.training.target_loss`) up to the float rounding of other kernel shapes.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from testtime.data.encode import Encoded
from testtime.model.training import static_target_loss
from testtime.stages.cuda_graphs import capture_graph, warm_up

# Real steps on a side stream before the capture: they build what the graph will touch (AdamW's state, cuBLAS
# workspaces, the allocator's blocks). A run with fewer steps than this plus a few is not worth a capture.
WARMUP_STEPS = 2
MIN_GRAPH_STEPS = 8


class StaticBatch:
    """The device buffers of one step: token ids [rows, width], and the target tokens' flat positions, ids and task
    groups [n_tokens], all views of one int64 buffer with the count of real targets at its end, so a step's data
    crosses to a GPU in one copy (from pinned memory, two host buffers in turn: the host fills the next step's while
    the device runs this one). `load` writes a step's sequences into them in place."""

    def __init__(self, n_groups: int, rows: int, width: int, n_tokens: int, pad_id: int, device) -> None:
        self.n_groups, self.rows, self.width, self.pad_id = n_groups, rows, width, pad_id
        self.n_tokens = max(1, n_tokens)
        self.device = torch.device(device)
        size = rows * width + 3 * self.n_tokens + 1
        self.packed = torch.zeros(size, dtype=torch.long, device=device)
        cuts = np.cumsum([rows * width, self.n_tokens, self.n_tokens, self.n_tokens])
        ids, self.pos, self.tgt, self.grp, self.count = torch.tensor_split(self.packed, cuts.tolist())
        self.ids = ids.view(rows, width)
        self.arange = torch.arange(self.n_tokens, device=device)
        pin = self.device.type == "cuda"
        self.host = [torch.zeros(size, dtype=torch.long, pin_memory=pin) for _ in range(2 if pin else 1)]
        self.copied = [None] * len(self.host)  # the event of each host buffer's last copy
        self.turn = 0

    @classmethod
    def fitting(cls, steps: Sequence[tuple[Sequence[Encoded], Sequence[slice]]], rows: int, pad_id: int, device
                ) -> StaticBatch:
        """Buffers wide enough for every step of `steps` ((sequences, the row range of each group) per step)."""
        width = max(len(s) for seqs, _ in steps for s in seqs)
        n_tokens = max(sum(int(s.loss_mask[1:].sum()) for s in seqs) for seqs, _ in steps)
        return cls(len(steps[0][1]), rows, width, n_tokens, pad_id, device)

    def load(self, seqs: Sequence[Encoded], rows: Sequence[slice], slots_rows: Sequence[slice]) -> None:
        """Write one step: group g's sequences seqs[rows[g]] go to the buffer rows `slots_rows[g]` (a group's rows
        beyond its sequences stay padding)."""
        host = self.host[self.turn]
        if self.copied[self.turn] is not None:
            self.copied[self.turn].synchronize()  # its last step's copy has left it
        flat = host.numpy()
        r_w, n_tok = self.rows * self.width, self.n_tokens
        ids = flat[:r_w].reshape(self.rows, self.width)
        pos, tgt, grp = flat[r_w: r_w + n_tok], flat[r_w + n_tok: r_w + 2 * n_tok], flat[r_w + 2 * n_tok: -1]
        ids.fill(self.pad_id)
        for part in (pos, tgt, grp):
            part.fill(0)
        n = 0
        for g, (src, dst) in enumerate(zip(rows, slots_rows, strict=True)):
            for r, s in zip(range(dst.start, dst.stop), seqs[src], strict=False):
                ids[r, : len(s)] = s.input_ids
                t = np.flatnonzero(s.loss_mask[1:])  # position t predicts token t + 1
                pos[n: n + len(t)] = r * (self.width - 1) + t
                tgt[n: n + len(t)] = np.asarray(s.input_ids)[t + 1]
                grp[n: n + len(t)] = g
                n += len(t)
        flat[-1] = n
        self.packed.copy_(host, non_blocking=self.device.type == "cuda")
        if self.device.type == "cuda":
            event = torch.cuda.Event()
            event.record()
            self.copied[self.turn] = event
        self.turn = (self.turn + 1) % len(self.host)

    def loss(self, model: nn.Module) -> torch.Tensor:
        """Each group's mean loss on its target tokens [n_groups] (the padding of the target list weighted 0)."""
        wt = (self.arange < self.count).float()
        return static_target_loss(model, self.ids, self.pos, self.tgt, self.grp, wt, self.n_groups)


class GraphedStep:
    """`body` (one training step over fixed buffers) run as a CUDA graph after `WARMUP_STEPS` real steps on a side
    stream; on the CPU, or where the capture fails (a warning says why), it runs as it is. `replays` counts the
    steps a graph ran."""

    def __init__(self, body: Callable[[], None], zero_grad: Callable[[], None], device: torch.device,
                 enabled: bool) -> None:
        self.body, self.zero_grad, self.device = body, zero_grad, device
        self.enabled = enabled and device.type == "cuda"
        self.graph: torch.cuda.CUDAGraph | None = None
        self.calls = self.replays = 0

    def __call__(self) -> None:
        if self.graph is None and self.enabled and self.calls >= WARMUP_STEPS:
            self.graph = self._capture()
        if self.graph is not None:  # a capture records the step without running it: its own step replays too
            self.graph.replay()
            self.replays += 1
        elif self.enabled:
            with torch.cuda.device(self.device), warnings.catch_warnings():
                # AdamW built for capture warns that it steps uncaptured: these are the warm-up steps it asks for.
                warnings.filterwarnings("ignore", message=".*capturable=True.*")
                warm_up(self._step, self.device)
        else:
            self._step()
        self.calls += 1

    def _step(self) -> None:
        self.body()
        self.zero_grad()

    def _capture(self) -> torch.cuda.CUDAGraph | None:
        self.zero_grad()  # the captured backward then writes its gradients instead of adding to them
        graph = capture_graph(self.body, self.device, "training step", "training without graphs")
        if graph is None:
            self.enabled = False
            self.zero_grad()
        return graph
