"""Attention over packed documents: several training sequences share one row, and each attends only to itself.

Pretraining packs sequences into rows of a fixed length (`testtime.data.pretrain_data.PackedStream`) instead of
padding each to its bucket's length: no padded tokens, one shape for the whole run (one compiled graph). A row's
tokens carry a document index; `document_mask` turns those into a FlexAttention block mask (causal, and within
one document), whose empty blocks the kernel skips, so a row costs what its documents would cost alone, give or
take the blocks it computes whole. `document_spans` (a config's `"attention": "varlen"`) turns them instead into
spans of the flattened rows for FlashAttention's variable-length kernel, which computes no pair across documents.

The model reaches the block mask through transformers' attention registry: `DOCUMENT_ATTENTION` is registered
once at import, and `use_document_attention` switches a model to it for the span of a training run. The function
hands any ordinary mask (or none) to SDPA unchanged, so scoring and validation inside that span behave as before.
"""

from __future__ import annotations

import inspect
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

try:  # FlexAttention arrived in torch 2.5; without it packing is refused by the config, not here
    from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention
except ImportError:  # pragma: no cover
    create_block_mask = flex_attention = None

    class BlockMask:  # nothing is ever one
        pass

try:  # FlashAttention over variable-length spans (torch 2.9+; CUDA only)
    from torch.nn.attention.varlen import varlen_attn

    # its causal switch changed name across torch versions: is_causal=True, later window_size=(-1, 0)
    _VARLEN_PARAMS = frozenset(inspect.signature(varlen_attn).parameters)
except ImportError:  # pragma: no cover
    varlen_attn, _VARLEN_PARAMS = None, frozenset()

DOCUMENT_ATTENTION = "testtime_documents"
KINDS = ("flex", "varlen")  # how packed rows attend: FlexAttention's block mask, or FlashAttention's spans


def flex_available() -> bool:
    return flex_attention is not None


# FlexAttention's kernel tiles must divide the block mask's blocks, and its default tiles on a GPU (128 queries
# forward) do not divide 64-token blocks: those get tiles that do (the backward's M1/N1/M2/N2 as well). Some torch
# versions drop the backward's default configurations that do not divide the blocks before they read these options
# (pytorch issue 176025), and then find none: 64-token blocks are for a machine where the GPU lane's test of them
# passed (tests/test_gpu.py; `FLEX=1` of scripts/gpu_campaign.sh runs it).
BLOCK_SIZES = (64, 128)
SMALL_TILES = {"BLOCK_M": 64, "BLOCK_N": 64, "bwd_BLOCK_M1": 32, "bwd_BLOCK_N1": 64, "bwd_BLOCK_M2": 64,
               "bwd_BLOCK_N2": 32}


def tile_options(block_size: int | tuple[int, int], device_type: str) -> dict[str, int] | None:
    """FlexAttention's kernel options for a block mask of `block_size` (a BlockMask's BLOCK_SIZE): None for the
    default tiles (128-token blocks, or a CPU, whose kernel picks its own)."""
    q, kv = (block_size, block_size) if isinstance(block_size, int) else block_size
    if device_type != "cuda" or min(q, kv) >= 128:
        return None
    if min(q, kv) != 64:
        raise ValueError(f"block masks of {q} x {kv} tokens: only {' or '.join(map(str, BLOCK_SIZES))} have tiles")
    return dict(SMALL_TILES)  # a copy: no caller can change the next one's


@dataclass(frozen=True)
class DocumentSpans:
    """Packed rows' documents as spans of the rows flattened into one sequence of B*T tokens, for FlashAttention's
    variable-length kernel, which computes each span's causal attention and no pair across spans (no block is
    computed whole). `cu` (int32 [S+1]): the spans' offsets, padded to a power of two by repeating the last (empty
    spans, so that even where marking their count dynamic fails a compiled step sees few shapes); `longest`: a bound
    on a span's length, the row's (one static value: a tighter one would recompile the step for each)."""

    cu: torch.Tensor
    longest: int


def document_spans(doc_ids: torch.Tensor, device: torch.device | str | None = None) -> DocumentSpans:
    """`doc_ids` [B, T] (as `document_mask` reads them; padding, -1, a span of its own) as `DocumentSpans` on
    `device`: computed where `doc_ids` lie (the loader's pinned host memory: no device sync), then moved."""
    b, t = doc_ids.shape
    starts = torch.ones(b, t, dtype=torch.bool, device=doc_ids.device)  # each row starts a span
    starts[:, 1:] = doc_ids[:, 1:] != doc_ids[:, :-1]
    edges = torch.cat([starts.flatten().nonzero().flatten(), torch.tensor([b * t], device=doc_ids.device)])
    size = 1 << (len(edges) - 1).bit_length()
    cu = torch.cat([edges, edges[-1:].expand(size - len(edges))]).to(torch.int32)
    device = torch.device(device if device is not None else doc_ids.device)
    if device.type == "cuda" and cu.device.type == "cpu":
        cu = cu.pin_memory()  # an asynchronous copy, as the batch's own
    cu = cu.to(device, non_blocking=True)
    torch._dynamo.maybe_mark_dynamic(cu, 0)  # one compiled step for every count of spans
    return DocumentSpans(cu, t)


def span_attention(query, key, value, spans: DocumentSpans, scale: float | None) -> torch.Tensor:
    """Causal attention within each span: q, k, v [B, H, T, D] -> [B, T, H, D]. On a GPU FlashAttention's
    variable-length kernel; elsewhere SDPA span by span, the same arithmetic, for the CPU's tests and runs."""
    b, h, t, d = query.shape
    if key.shape[1] != h:  # grouped keys and values: each query head's own copy
        key, value = (x.repeat_interleave(h // key.shape[1], dim=1) for x in (key, value))
    q, k, v = (x.transpose(1, 2).reshape(b * t, h, d) for x in (query, key, value))
    if q.device.type == "cuda":  # packed_mask refuses "varlen" where this torch has no such kernel
        # FlashAttention takes one half-precision dtype, and the kernel has no autocast rule of its own: under
        # autocast a float32 model's rotated queries and keys arrive in float32 beside bf16 values
        dt = torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda") else v.dtype
        if dt not in (torch.bfloat16, torch.float16):
            raise ValueError(f"varlen attention runs in bf16 or fp16 (autocast), not {dt}")
        q, k, v = (x.to(dt) for x in (q, k, v))
        causal = {"window_size": (-1, 0)} if "window_size" in _VARLEN_PARAMS else {"is_causal": True}
        if "scale" in _VARLEN_PARAMS:
            causal["scale"] = scale
        elif scale is not None:  # an older kernel scales by 1/sqrt(D) itself
            q = q * (scale * d**0.5)
        out = varlen_attn(q, k, v, spans.cu, spans.cu, spans.longest, spans.longest, **causal)
    else:
        k, v = k.to(q.dtype), v.to(q.dtype)
        out = torch.empty_like(q)
        cu = spans.cu.tolist()
        for s, e in zip(cu[:-1], cu[1:], strict=True):
            if e > s:
                out[s:e] = F.scaled_dot_product_attention(*(x[s:e].transpose(0, 1) for x in (q, k, v)),
                                                          is_causal=True, scale=scale).transpose(0, 1)
    return out.reshape(b, t, h, d)


def document_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers' attention signature: q, k, v [B, H, T, D]; returns ([B, T, H, D], None)."""
    if isinstance(attention_mask, DocumentSpans):
        return span_attention(query, key, value, attention_mask, scaling), None
    if not isinstance(attention_mask, BlockMask):
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                      **kwargs)
    out = flex_attention(query, key, value, block_mask=attention_mask, scale=scaling,
                         enable_gqa=query.shape[1] != key.shape[1],
                         kernel_options=tile_options(attention_mask.BLOCK_SIZE, query.device.type))
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register(DOCUMENT_ATTENTION, document_attention)
AttentionMaskInterface.register(DOCUMENT_ATTENTION, sdpa_mask)  # an ordinary mask is built as SDPA's


def document_mask(doc_ids: torch.Tensor, block_size: int = 128):
    """The attention mask of rows of packed documents: token q sees token k iff k <= q and both lie in one document.
    `block_size` (one of BLOCK_SIZES): the block mask's blocks, whose pairs FlexAttention computes whole.

    `doc_ids` [B, T] (int): each token's document index within its row. On a GPU, a FlexAttention block mask,
    built compiled (a Python mask function over B*T*T positions would take seconds a step otherwise). Elsewhere
    FlexAttention has no backward pass, so the same mask comes dense, [B, 1, T, T] booleans for SDPA: exact, and
    its T^2 memory is no matter at the lengths a CPU trains on.
    """
    if doc_ids.device.type != "cuda":
        return dense_document_mask(doc_ids)
    b, t = doc_ids.shape

    def same_document_causal(batch, head, q, k):
        return (doc_ids[batch, q] == doc_ids[batch, k]) & (k <= q)

    return create_block_mask(same_document_causal, b, None, t, t, device=doc_ids.device, BLOCK_SIZE=block_size,
                             _compile=True)


def packed_mask(doc_ids: torch.Tensor, device: torch.device | str, kind: str = "flex", block_size: int = 128):
    """What packed rows attend through, on `device`: `document_spans` (kind "varlen") or `document_mask`."""
    if kind not in KINDS:
        raise ValueError(f"packed attention {kind!r}: one of {', '.join(KINDS)}")
    if kind == "varlen":
        if torch.device(device).type == "cuda" and varlen_attn is None:
            raise ValueError(f"packed attention varlen: torch {torch.__version__} has no torch.nn.attention.varlen")
        return document_spans(doc_ids, device)
    return document_mask(doc_ids.to(device, non_blocking=True), block_size)


def dense_document_mask(doc_ids: torch.Tensor) -> torch.Tensor:
    """`document_mask` as [B, 1, T, T] booleans (True: attend)."""
    t = doc_ids.shape[1]
    causal = torch.ones(t, t, dtype=torch.bool, device=doc_ids.device).tril()
    return ((doc_ids[:, :, None] == doc_ids[:, None, :]) & causal)[:, None]


@contextmanager
def use_document_attention(model):
    """Route `model`'s attention through `document_attention` inside the block, then restore what it had."""
    configs = {id(c): c for c in (model.config, model.config.get_text_config())}.values()
    before = [(c, c._attn_implementation) for c in configs]
    try:
        for c, _ in before:
            c._attn_implementation = DOCUMENT_ATTENTION
        yield model
    finally:
        for c, impl in before:
            c._attn_implementation = impl
