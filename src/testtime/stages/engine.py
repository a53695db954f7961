"""The generation engine, shared by every task kind: batched greedy decoding and sequence scoring.

Prompts of many tasks decode together: left-padded, in length-sorted batches under a token budget, with a
KV cache allocated once per batch, a per-row stop (an end token or the row's answer size), and on a GPU the
decode step replayed as one CUDA graph. Each row may go through its own LoRA adapter (`lora.Adapters`).
`sequence_scores` scores continuations of shared prefixes under teacher forcing, reading each prefix once: their
log-probability, and whether greedy decoding would produce them (one forward pass instead of a decode loop).

The position ids of a prompt and of each decoded token come from `prompt_positions` and `next_positions`
alone, so a model with its own position scheme changes those two functions and nothing else.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from transformers import DynamicCache, StaticCache

from testtime.data.encode import Codec, Encoded, grid_positions, next_grid_position
from testtime.model.grid_model import cache_kw, is_grid_model
from testtime.model.lora import Adapters
from testtime.stages.cuda_graphs import capture_graph, warm_up


def cache_keyword(model: nn.Module) -> str:
    """The keyword `model`'s forward takes its KV cache by (`cache`, or `past_key_values` before transformers 5.2x),
    read from the signature of its class (through a peft wrapper, whose forward takes anything)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return cache_kw(type(base).forward)


def kv_bytes_per_token(model: nn.Module) -> int:
    """Bytes of KV cache one token takes in `model` (every layer's keys and values, in its dtype)."""
    cfg = model.config.get_text_config()
    heads = cfg.num_attention_heads
    kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    itemsize = next(model.parameters()).element_size()
    return cfg.num_hidden_layers * 2 * kv_heads * head_dim * itemsize


def available_memory(device: torch.device) -> int:
    """Free bytes on a GPU, or the RAM Linux says is available (8 GiB assumed where it cannot tell)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 << 30


def auto_token_budget(model: nn.Module) -> int:
    """Prompt+answer tokens per generation batch, sized so the batch's KV cache takes a share of free memory.

    A quarter of a GPU's free memory, at most 1M tokens (which keeps an H100 busy with our model); a tenth
    of a CPU's available RAM, since there the prefill's activations and every step's reads grow with the
    batch too, and running out of memory kills the process instead of raising an error.
    """
    device = next(model.parameters()).device
    share = 0.25 if device.type == "cuda" else 0.10
    budget = int(available_memory(device) * share) // kv_bytes_per_token(model)
    return max(4096, min(1 << 20, budget))


# A batch decoding fewer steps than this runs its step uncaptured: capturing and instantiating a graph costs a few
# eager steps (its first use in a process more), which a short answer does not repay. An estimate, not a fit:
# `benchmarks/bench_latency.py cold` on a GPU times the decode with and without graphs.
GRAPH_MIN_STEPS = 32


@dataclass
class Generated:
    tokens: list[int]
    logprob: float


def budget_batches(widths: Sequence[int], budget: int, max_rows: int | None = None) -> list[list[int]]:
    """Indices by increasing width, cut into batches whose rows times widest row stay within `budget`
    (a row wider than the budget goes alone), and of at most `max_rows` rows."""
    batches: list[list[int]] = []
    cur: list[int] = []
    for i in sorted(range(len(widths)), key=lambda i: widths[i]):
        if cur and ((len(cur) + 1) * widths[i] > budget or (max_rows is not None and len(cur) >= max_rows)):
            batches.append(cur)
            cur = []
        cur.append(i)
    if cur:
        batches.append(cur)
    return batches


def left_pad(seqs: Sequence[np.ndarray], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids padded on the left to one width, with their attention mask, so every row's next token sits
    in the last column."""
    width = max(len(x) for x in seqs)
    ids = np.full((len(seqs), width), pad_id, dtype=np.int64)
    attn = np.zeros((len(seqs), width), dtype=np.int64)
    for r, x in enumerate(seqs):
        ids[r, width - len(x):] = x
        attn[r, width - len(x):] = 1
    return torch.from_numpy(ids).to(device), torch.from_numpy(attn).to(device)


def prompt_positions(model: nn.Module, ids: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
    """Position ids of left-padded prompts: packed (grid, row, column) for a grid-aware model (padding leaves them
    unchanged), else 0 at each row's first real token (padding at 0 too)."""
    return grid_positions(ids) if is_grid_model(model) else (attn.cumsum(1) - 1).clamp(min=0)


def next_positions(model: nn.Module, pos: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
    """Position ids [b, 1] of the tokens that follow `token` [b, 1], which sat at `pos` [b, 1]."""
    return next_grid_position(pos, token) if is_grid_model(model) else pos + 1


def full_attention_only(config) -> bool:
    """True when every layer attends to the whole context, so one prepared mask serves every layer."""
    types = getattr(config, "layer_types", None)
    if types:
        return all(t == "full_attention" for t in types)
    return getattr(config, "sliding_window", None) is None or getattr(config, "use_sliding_window", True) is False


@dataclass(frozen=True)
class MaskLayout:
    """The masks a fixed-buffer decode step hands the model: one 4D mask, or (with per-layer `layer_types`)
    one per kind of layer. `window` is the sliding window (keys more than `window` back are hidden)."""

    window: int | None = None
    kinds: tuple[str, ...] | None = None  # None: a single mask for every layer


def mask_layout(config) -> MaskLayout | None:
    """How to mask a fixed-buffer decode step for this model, or None where HF's own loop must run
    (chunked attention, layers that share another layer's cache...)."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    if full_attention_only(text):
        return MaskLayout()
    window = getattr(text, "sliding_window", None)
    types = getattr(text, "layer_types", None)
    if window is None or (types and not set(types) <= {"full_attention", "sliding_attention"}):
        return None
    return MaskLayout(int(window), tuple(sorted(set(types))) if types else None)


def fixed_buffers(layout: MaskLayout | None, graphs: bool) -> bool:
    """Whether to decode over fixed buffers. Full attention: always. A sliding window: only where the step
    becomes a CUDA graph, since without one HF's rolling window cache reads fewer keys (on the CPU, Gemma 3
    270M decoded 2352-token prompts in 31.2 s that way against 33.6 s over full-length buffers)."""
    return layout is not None and (layout.window is None or graphs)


def _decode_cache(model: nn.Module, layout: MaskLayout | None, length: int):
    """A cache allocated once for the whole answer (a growing cache copies itself at every step). For the
    fixed-buffer decode of a sliding-window model every layer keeps the whole context (HF's sliding layers
    keep a rolling window, whose slots move): the window lives in the mask instead."""
    if layout is None or layout.window is None:
        return StaticCache(config=model.config, max_cache_len=length)
    from transformers.cache_utils import Cache, StaticLayer

    return Cache(layers=[StaticLayer(max_cache_len=length) for _ in range(model.config.get_text_config().num_hidden_layers)])


@torch.no_grad()
def greedy_generate(
    model: nn.Module,
    prompts: Sequence[np.ndarray],
    max_new: Sequence[int],
    codec: Codec,
    *,
    token_budget: int | None = None,
    adapters: Adapters | None = None,
    progress: Callable[[int], None] | None = None,
    cuda_graphs: bool = True,
) -> list[Generated]:
    """Greedy decoding of many prompts at once; prompt i goes through `adapters` slot i (if any). Prompts go in
    length-sorted batches of at most `token_budget` (prompt + answer) tokens (None: auto_token_budget).

    The answer is decoded one token a step for the whole batch. On a GPU a step of a small model is
    mostly kernel-launch overhead, so (with `cuda_graphs`; see `mask_layout` for the models it covers) each batch's step
    is captured once as a CUDA graph and replayed: the picking of the next token, the cache write and
    the forward pass then cost one launch (for batches of GRAPH_MIN_STEPS steps or more). Every step reads and
    writes only fixed buffers for this.
    """
    device = next(model.parameters()).device
    token_budget = token_budget or auto_token_budget(model)
    stop = torch.tensor(sorted(codec.stop_ids), device=device)
    results: list[Generated | None] = [None] * len(prompts)
    batches = budget_batches([len(p) + m for p, m in zip(prompts, max_new, strict=True)], token_budget)
    cuda = device.type == "cuda"
    layout = mask_layout(model.config)
    if not fixed_buffers(layout, cuda_graphs and cuda):
        layout = None
    graphs = [cuda_graphs and cuda and layout is not None]
    kw = cache_keyword(model)
    for batch in batches:
        b = len(batch)
        ids_t, attn_t = left_pad([prompts[i] for i in batch], codec.pad_id, device)
        pos = prompt_positions(model, ids_t, attn_t)
        width = ids_t.shape[1]
        limit = torch.tensor([max_new[i] for i in batch], device=device)
        if adapters is not None:
            adapters.use(batch, device)
        steps = int(limit.max())
        cache = _decode_cache(model, layout, width + steps)
        with _autocast(device, model):
            out = model(input_ids=ids_t, attention_mask=attn_t, position_ids=pos, **{kw: cache},
                        use_cache=True, logits_to_keep=1, cache_position=torch.arange(width, device=device))
        first_pos = next_positions(model, pos[:, -1:], ids_t[:, -1:])
        state = _Decode(model, b, steps, width, limit, stop, codec.pad_id, out.logits[:, -1], first_pos, device)
        del out
        if layout is not None:
            _decode_static(model, cache, attn_t, state, graphs if steps >= GRAPH_MIN_STEPS else [False], layout, kw)
        else:
            _decode_plain(model, cache, attn_t, state, kw)
        toks_l = state.toks.cpu().tolist()
        logp_l = state.logp.cpu().tolist()
        for r, i in enumerate(batch):
            results[i] = Generated(toks_l[r][: max_new[i]], logp_l[r])
        if progress:
            progress(b)
        del cache, state
    if adapters is not None:
        adapters.use(None, device)
    return results  # type: ignore[return-value]


def _autocast(device: torch.device, model: nn.Module):
    """bf16 autocast on a GPU for a bf16 model (its float32 LoRA slots run in bf16), none for a float32 model
    (pretraining's master weights): under autocast its rotated keys stay float32 while its values come out
    bf16, and a static cache holds one dtype (the first arch runs crashed on it at their held-out solve count)."""
    # No weight-cast cache: a CUDA graph must not capture casts that autocast would skip on replay.
    fp32 = next(model.parameters()).dtype == torch.float32
    if device.type == "cuda" and not fp32:
        return torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False)
    return torch.autocast(device.type, enabled=False)


class _Decode:
    """A batch's decoding state, all on the device, updated in place (so a CUDA graph can own it)."""

    def __init__(self, model: nn.Module, b: int, steps: int, width: int, limit: torch.Tensor, stop: torch.Tensor,
                 pad: int, logits: torch.Tensor, first_pos: torch.Tensor, device: torch.device) -> None:
        self.model = model
        self.steps, self.width, self.limit, self.stop, self.pad = steps, width, limit, stop, pad
        self.logits = logits.float().clone()  # [b, vocab]: the latest step's next-token logits
        self.toks = torch.full((b, steps), pad, dtype=torch.long, device=device)
        self.logp = torch.zeros(b, device=device)
        self.done = torch.zeros(b, dtype=torch.bool, device=device)
        self.s = torch.zeros(1, dtype=torch.long, device=device)  # the step about to pick its token
        self.pos = first_pos.clone()  # [b, 1] position id of the token to feed next
        self.nxt = torch.full((b, 1), pad, dtype=torch.long, device=device)

    def pick(self) -> None:
        """Take step s's token from the logits; rows already done emit padding."""
        lp = torch.log_softmax(self.logits, -1)
        best, nxt = lp.max(-1)
        nxt = torch.where(self.done, self.pad, nxt)
        self.toks.index_copy_(1, self.s, nxt[:, None])
        self.logp += torch.where(self.done, 0.0, best)
        self.done |= torch.isin(nxt, self.stop) | (self.s + 1 >= self.limit)
        self.nxt.copy_(nxt[:, None])

    def advance(self) -> None:
        """After a step's forward pass: the next token's position, and the step counter."""
        self.pos.copy_(next_positions(self.model, self.pos, self.nxt))
        self.s += 1

    def finished(self, s: int) -> bool:
        # One host sync every 8 steps keeps the GPU queue full while still stopping early.
        return s + 1 == self.steps or (s % 8 == 7 and bool(self.done.all()))


def _decode_plain(model: nn.Module, cache: StaticCache, attn: torch.Tensor, st: _Decode, kw: str) -> None:
    """The decode loop as HF models expect it: a growing 2D mask, HF builds each layer's mask."""
    b, device = attn.shape[0], attn.device
    for s in range(st.steps):
        st.pick()
        if st.finished(s):
            break
        attn = torch.cat([attn, torch.ones(b, 1, dtype=attn.dtype, device=device)], 1)
        with _autocast(device, model):
            out = model(input_ids=st.nxt, attention_mask=attn, position_ids=st.pos, **{kw: cache},
                        use_cache=True, cache_position=st.width + st.s)
        st.logits.copy_(out.logits[:, -1])
        st.advance()


def _decode_static(model: nn.Module, cache, attn: torch.Tensor, st: _Decode, graphs: list[bool],
                   layout: MaskLayout, kw: str) -> None:
    """The decode loop over fixed buffers: prepared 4D masks (padding, causality and the sliding window
    from the step counter), one per kind of layer where the model has several.

    `graphs[0]` says whether to capture the step as a CUDA graph; a model whose step cannot be captured
    (a host sync inside its forward) clears it, and this and later batches run the same step uncaptured.
    """
    b, device = attn.shape[0], attn.device
    keys = torch.cat([attn.bool(), torch.ones(b, st.steps, dtype=torch.bool, device=device)], 1)  # [b, L]
    key_pos = torch.arange(keys.shape[1], device=device)

    def step() -> None:
        st.pick()
        cache_pos = st.width + st.s  # [1]: where the fed token's keys go
        full = keys & (key_pos <= cache_pos)
        mask = full[:, None, None, :]
        if layout.window is not None:
            sliding = (full & (key_pos > cache_pos - layout.window))[:, None, None, :]
            mask = {"full_attention": mask, "sliding_attention": sliding} if layout.kinds else sliding
        with _autocast(device, model):
            out = model(input_ids=st.nxt, attention_mask=mask, position_ids=st.pos, **{kw: cache},
                        use_cache=True, cache_position=cache_pos)
        st.logits.copy_(out.logits[:, -1])
        st.advance()

    # The last step's forward pass writes the cache at width + steps - 1, still inside it, and its
    # logits are never read: every step may run the same body.
    graph = None
    for s in range(st.steps):
        if graph is not None:
            graph.replay()
        elif s == 0 and graphs[0]:
            warm_up(step, device)
        else:
            step()
        if st.finished(s):
            break
        if s == 0 and graphs[0]:
            graph = _capture(step, device, graphs)


def _capture(step: Callable[[], None], device: torch.device, graphs: list[bool]):
    """`step` as a CUDA graph, or None (and graphs switched off) if it cannot be captured."""
    graph = capture_graph(step, device, "decode step", "decoding without graphs")
    if graph is None:
        graphs[0] = False
    return graph


@dataclass(frozen=True)
class Score:
    """A sequence's masked tokens under teacher forcing."""

    logprob: float  # their summed log-probability
    exact: bool  # each is the argmax where it stands: greedy decoding from the prefix would pick them all


def sequence_logprobs(model, seqs: Sequence[Encoded], pad_id: int, *, adapters: Adapters | None = None,
                      token_budget: int = 1 << 17) -> list[float]:
    """Summed log-probability of each sequence's masked tokens (see `sequence_scores`)."""
    return [s.logprob for s in sequence_scores(model, seqs, pad_id, adapters=adapters, token_budget=token_budget)]


@torch.no_grad()
def sequence_scores(
    model,
    seqs: Sequence[Encoded],
    pad_id: int,
    *,
    adapters: Adapters | None = None,
    token_budget: int = 1 << 17,
    stop_ids: Collection[int] = (),
) -> list[Score]:
    """Each sequence's masked tokens scored under teacher forcing; sequence i through `adapters` slot i (if any).

    Sequences that share everything before their first masked token (one query's answer options)
    read that prefix once: its KV cache is copied for each continuation, so ranking k options of a long
    few-shot prompt costs about one prompt, not k. Prefixes run in length-sorted batches under
    `token_budget` (prefix plus longest continuation, per row).

    `exact` tells, from this one forward pass, whether `greedy_generate` given a sequence up to its first masked
    token would decode the rest, where the masked tokens are the whole tail (an answer): decoding picks the argmax
    over the whole vocabulary at each step, with no constraint, and as long as each pick is the target the
    context of the next step is the teacher-forced one. `stop_ids` are the tokens decoding stops on: where a
    masked token is one, any of them counts as its argmax (decoding ends there whichever it picks). What it does
    not see: a codec that spells one answer several ways (a text tokenizer's digits) lets decoding reach it by
    another spelling, so there exact is sufficient, not necessary; decoding stops after `max_new` tokens (the
    caller compares the answer's length); and it runs other kernels (one step at a time from a cache; on a GPU
    under bfloat16 autocast), so where two logits nearly tie the two argmaxes may differ.
    """
    device = next(model.parameters()).device
    stops = torch.tensor(sorted(stop_ids), dtype=torch.long, device=device)
    groups: dict[tuple[int, bytes], list[int]] = {}  # (adapter, prefix tokens) -> sequences
    starts = []
    for i, s in enumerate(seqs):
        first = int(np.argmax(s.loss_mask)) if s.loss_mask.any() else len(s.input_ids)
        starts.append(max(first, 1))  # the first token has no logit: it can only be context
        key = (adapters.slot(i) if adapters is not None else -1, s.input_ids[: starts[-1]].tobytes())
        groups.setdefault(key, []).append(i)
    members = list(groups.values())
    widths = [starts[g[0]] + max(len(seqs[i].input_ids) - starts[i] for i in g) for g in members]
    out = [Score(0.0, True)] * len(seqs)
    for cut in budget_batches(widths, token_budget):
        batch = [members[k] for k in cut]
        if adapters is not None:
            adapters.use([g[0] for g in batch], device)
        if all(len(g) == 1 for g in batch):
            _score_whole_batch(model, seqs, [g[0] for g in batch], pad_id, stops, device, out)
        else:
            _score_prefix_batch(model, seqs, starts, batch, pad_id, stops, device, out)
    if adapters is not None:
        adapters.use(None, device)
    return out


def _score_whole_batch(model, seqs: Sequence[Encoded], rows: list[int], pad_id: int, stops: torch.Tensor, device,
                       out: list[Score]) -> None:
    """Sequences that share no prefix (a leave-one-out check's held-out demos): each read whole in one forward pass,
    right-padded and without a mask as in training (under causal attention no real token sees the padding), with
    the output head on the masked positions only. Half the time of reading a prefix, then its continuation
    through a copy of its cache behind a padding mask."""
    from testtime.model.loading import head_logits
    from testtime.model.training import pad_right

    ids, mask = pad_right([seqs[i] for i in rows], pad_id, device)
    hidden = model.get_decoder()(input_ids=ids, use_cache=False).last_hidden_state
    sel = mask[:, 1:]  # position t predicts token t+1
    lp = torch.log_softmax(head_logits(model, hidden[:, :-1][sel]), -1)
    target = ids[:, 1:][sel]
    best = lp.argmax(-1)
    hit = (best == target) | (torch.isin(best, stops) & torch.isin(target, stops))
    row_of = torch.arange(len(rows), device=device)[:, None].expand_as(sel)[sel]
    sums = torch.zeros(len(rows), device=device).index_add_(0, row_of, lp.gather(1, target[:, None])[:, 0]).tolist()
    misses = torch.zeros(len(rows), device=device).index_add_(0, row_of, (~hit).float()).tolist()
    for r, i in enumerate(rows):
        out[i] = Score(sums[r], misses[r] == 0)


def _score_prefix_batch(model, seqs: Sequence[Encoded], starts: list[int], batch: list[list[int]], pad_id: int,
                        stops: torch.Tensor, device, out: list[Score]) -> None:
    """One batch of prefix groups: each prefix once (left-padded), then the groups' j-th continuations together."""
    b = len(batch)
    ids, attn_t = left_pad([seqs[g[0]].input_ids[: starts[g[0]]] for g in batch], pad_id, device)
    pos = prompt_positions(model, ids, attn_t)
    cache = DynamicCache(config=model.config)
    kw = cache_keyword(model)
    first = model(input_ids=ids, attention_mask=attn_t, position_ids=pos,
                  **{kw: cache}, use_cache=True, logits_to_keep=1).logits[:, -1].float()
    first_lp = torch.log_softmax(first, -1)  # [b, vocab]: what the prefix predicts next
    last = max(len(g) for g in batch) - 1
    for j in range(last + 1):
        rows = [g[j] if j < len(g) else None for g in batch]
        cw = max(len(seqs[i].input_ids) - starts[i] for i in rows if i is not None)
        cont = np.full((b, cw), pad_id, dtype=np.int64)
        cmask = np.zeros((b, cw), dtype=np.int64)
        tmask = np.zeros((b, cw), dtype=bool)
        for r, i in enumerate(rows):
            if i is not None:
                c = seqs[i].input_ids[starts[i]:]
                cont[r, : len(c)] = c
                cmask[r, : len(c)] = 1
                tmask[r, : len(c)] = seqs[i].loss_mask[starts[i]:]
        cont_t = torch.from_numpy(cont).to(device)
        tmask_t = torch.from_numpy(tmask).to(device)
        attn_all = torch.cat([attn_t, torch.from_numpy(cmask).to(device)], 1)
        # The continuation's positions are those of the whole sequence (a grid model's depend on every token).
        cont_pos = prompt_positions(model, torch.cat([ids, cont_t], 1), attn_all)[:, ids.shape[1]:]
        # The last continuation may extend the prefix's cache itself: nothing reads it afterwards.
        past = cache if j == last else copy.deepcopy(cache)
        logits = model(input_ids=cont_t, attention_mask=attn_all, position_ids=cont_pos,
                       **{kw: past}, use_cache=True).logits.float()
        # Token t of the continuation is predicted by position t-1, and token 0 by the prefix's last.
        lp = torch.cat([first_lp[:, None], torch.log_softmax(logits[:, :-1], -1)], 1)
        tok_lp = lp.gather(2, cont_t[..., None])[..., 0]
        sums = (tok_lp * tmask_t).sum(1).tolist()
        best = lp.argmax(-1)
        hit = (best == cont_t) | (torch.isin(best, stops) & torch.isin(cont_t, stops))
        exact = (hit | ~tmask_t).all(1).tolist()
        for r, i in enumerate(rows):
            if i is not None:
                out[i] = Score(sums[r], exact[r])
