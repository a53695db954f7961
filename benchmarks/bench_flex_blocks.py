"""Packed pretraining's attention: how much of FlexAttention's work its block mask wastes, and what other block
sizes and kernel settings cost, on the campaign's own batches (issue 30's 40% MFU goal).

A block mask computes every (query block, key block) pair in which any query may see any key. A document shorter
than a few blocks, or one that straddles a block's edge, makes the kernel compute pairs no document needs. MFU
counts only the needed ones (`pretrain_step.flops_per_token`), so this waste lowers MFU at the same tokens/s,
and batches of short documents waste the most (the campaign's pool groups documents of like length into a
batch). On the CPU this script measures the waste alone: computed pairs over needed pairs, by block size, over
the batches the config's packed stream draws. On a GPU it also times FlexAttention's forward and backward on
those batches' masks at the model's shapes (random queries, keys and values in bf16), for each variant:

    128       the campaign's block mask (128 x 128) and the kernel's default tiles
    64        64 x 64 blocks, tiles that divide them (`attention.tile_options`, as pretraining passes them with
              `"attention_block": 64`)
    128-tune  128 x 128 blocks, compiled with mode="max-autotune-no-cudagraphs" (Inductor tries the kernel's
              tile configurations and keeps the fastest; minutes of compilation)
    64-tune   the same with 64 x 64 blocks: where the backward's one default tile configuration does not divide
              64-token blocks (torch filters its defaults before it reads `bwd_` options: pytorch issue 176025),
              autotuning's list has some that do
    varlen    no block mask: FlashAttention's variable-length kernel over the rows' document spans
              (`attention.span_attention`, as pretraining runs it with `"attention": "varlen"`)

The GPU section first lists the backward's default tile configurations for the model's head size, which say
whether the plain "64" variant can compile here.

`--variants` picks them (128 and 64 unless asked: the autotuned one compiles for minutes). A variant that does not
compile on this device is reported with its error, not fatal.

    python benchmarks/bench_flex_blocks.py --config configs/data-gen50.json --batches 12 --out results/x.md
    python benchmarks/bench_flex_blocks.py --config configs/data-gen50.json --device cpu --batches 4   # waste only
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

VARIANTS = {
    "128": {"block": 128},
    "64": {"block": 64},
    "128-tune": {"block": 128, "mode": "max-autotune-no-cudagraphs"},
    "64-tune": {"block": 64, "mode": "max-autotune-no-cudagraphs"},
    "varlen": {"block": None},
}


def block_pairs(docs: np.ndarray, block: int) -> int:
    """(query block, key block) pairs a document-causal block mask computes over one row of document ids: those
    where the key block is not after the query block and both hold a token of one document (padding, id -1, is a
    document of its own there, as in `attention.document_mask`)."""
    per_block = [set(np.unique(docs[i: i + block]).tolist()) for i in range(0, len(docs), block)]
    return sum(1 for i, q in enumerate(per_block) for k in per_block[: i + 1] if q & k)


def needed_pairs(docs: np.ndarray) -> int:
    """(query, key) pairs the documents need: n (n + 1) / 2 for each real document of n tokens."""
    _, counts = np.unique(docs[docs >= 0], return_counts=True)
    return int((counts * (counts + 1) // 2).sum())


def waste(doc_ids: np.ndarray, block: int) -> float:
    """Computed (query, key) pairs over needed ones, for a batch of rows [B, T]."""
    computed = sum(block_pairs(row, block) for row in doc_ids) * block * block
    return computed / max(1, sum(needed_pairs(row) for row in doc_ids))


def draw_batches(config: Path, n: int) -> list[np.ndarray]:
    """The document ids of the first `n` batches the config's packed stream draws (its sources and seed)."""
    from testtime.data.encode import GridCodec
    from testtime.data.pretrain_data import SequenceSampler, batch_stream
    from testtime.data.sources import load_sources
    from testtime.recipes.pretrain import PretrainConfig

    cfg = PretrainConfig.from_json(config)
    if not cfg.packing:
        raise SystemExit(f"error: {config}: not a packed config (\"packing\": false), so no block mask")
    sampler = SequenceSampler(load_sources(cfg.datasets), cfg.max_len, cfg.seed, cfg.dataset_weights,
                              codec=GridCodec())
    stream = batch_stream(sampler, cfg)
    return [stream.next().doc_ids.numpy() for _ in range(n)]


def time_variant(name: str, batches: list[np.ndarray], heads: int, head_dim: int, repeats: int) -> dict:
    """Median milliseconds of one forward and backward of the variant's attention per batch, on the GPU."""
    import torch
    from torch.nn.attention.flex_attention import flex_attention

    from testtime.model.attention import document_mask, document_spans, span_attention, tile_options

    spec = VARIANTS[name]
    varlen = spec["block"] is None
    fn = torch.compile(span_attention if varlen else flex_attention, **({"mode": spec["mode"]} if "mode" in spec else {}))
    b, t = batches[0].shape
    # [B, T, H, D] in memory, seen as [B, H, T, D]: as the model's projections hand them to attention
    leaves = [torch.randn(b, t, heads, head_dim, device="cuda", dtype=torch.bfloat16, requires_grad=True)
              for _ in range(3)]
    q, k, v = (x.transpose(1, 2) for x in leaves)
    grad = torch.randn_like(q)
    times = []
    start = time.perf_counter()
    try:
        for i, docs in enumerate(batches):
            if varlen:
                spans = document_spans(torch.from_numpy(docs), "cuda")
            else:
                mask = document_mask(torch.from_numpy(docs).cuda(), block_size=spec["block"])
            for r in range(repeats + (1 if i == 0 else 0)):  # the first call compiles
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                if varlen:  # [B, T, H, D] out
                    fn(q, k, v, spans, None).backward(grad.transpose(1, 2))
                else:
                    fn(q, k, v, block_mask=mask, kernel_options=tile_options(spec["block"], "cuda")).backward(grad)
                torch.cuda.synchronize()
                if not (i == 0 and r == 0):
                    times.append(time.perf_counter() - t0)
    except Exception as e:  # a tile configuration this device or Triton refuses
        cause = e.__cause__ or e  # dynamo wraps the compiler's own error, whose first line says what failed
        lines = [ln for ln in str(cause).splitlines() if ln.strip()]
        return {"variant": name, "error": f"{type(cause).__name__}: {lines[0] if lines else ''}"[:240]}
    # the first calls' compilation, with the masks' building and the syncs: an approximation
    return {"variant": name, "ms": 1000 * statistics.median(times), "compile_s": time.perf_counter() - start
            - sum(times)}


def backward_defaults(head_dim: int) -> str:
    """The backward's default tile configurations on this GPU for bf16 at `head_dim` (torch's own heuristic)."""
    import torch

    try:
        from torch._inductor.choices import InductorChoices

        return str(InductorChoices().get_flex_attention_bwd_configs(head_dim, torch.bfloat16, "cuda"))
    except Exception as e:  # a private API: another torch may have moved it
        return f"not found ({type(e).__name__})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=Path("configs/data-gen50.json"))
    ap.add_argument("--batches", type=int, default=12, help="batches of the config's stream to measure on")
    ap.add_argument("--variants", default="128,64", help=f"among {', '.join(VARIANTS)} (128-tune compiles for minutes)")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per batch (after the first, which compiles)")
    ap.add_argument("--device", default="auto", help="cpu: the waste alone")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    import torch
    from provenance import header, publish

    variants = [v for v in args.variants.split(",") if v]
    if not variants or set(variants) - set(VARIANTS):
        raise SystemExit(f"error: --variants: choose among {', '.join(VARIANTS)}")
    if args.batches < 1:
        raise SystemExit("error: --batches: at least 1")
    cuda = args.device != "cpu" and torch.cuda.is_available()
    from testtime.core.config import ConfigError

    try:
        batches = draw_batches(args.config, args.batches)
    except (ConfigError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}") from None
    lines = header(f"FlexAttention's block masks on {args.batches} batches of {args.config}", "cuda" if cuda else "cpu")
    mean_len = [float((d >= 0).sum()) / max(1, sum(len(np.unique(row[row >= 0])) for row in d)) for d in batches]
    lines += ["", f"Documents' mean length by batch: median {statistics.median(mean_len):.0f} tokens "
                  f"({min(mean_len):.0f}-{max(mean_len):.0f}).", "",
              "| block | computed / needed pairs, median | min | max |", "|---|---|---|---|"]
    for block in sorted({VARIANTS[v]["block"] for v in variants} - {None}, reverse=True):
        ratios = [waste(d, block) for d in batches]
        lines.append(f"| {block} x {block} | {statistics.median(ratios):.2f} | {min(ratios):.2f} | "
                     f"{max(ratios):.2f} |")
    if cuda:
        from testtime.recipes.pretrain import PretrainConfig

        model = PretrainConfig.from_json(args.config).model
        heads, head_dim = model.num_heads, model.hidden_size // model.num_heads
        lines += ["", f"The backward's default tiles here: {backward_defaults(head_dim)}."]
        lines += ["", f"Forward and backward of attention, {heads} heads of {head_dim}, bf16, median of "
                      f"{args.repeats} calls a batch:", "", "| variant | ms | compile s (about) | note |", "|---|---|---|---|"]
        for name in variants:
            got = time_variant(name, batches, heads, head_dim, args.repeats)
            lines.append(f"| {name} | {got['ms']:.2f} | {got['compile_s']:.0f} | |" if "ms" in got
                         else f"| {name} | - | - | {got['error']} |")
            torch.cuda.empty_cache()
    publish(lines, args.out)


if __name__ == "__main__":
    main()
