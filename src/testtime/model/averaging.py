"""One model from several of one architecture: their weights averaged, tensor by tensor (a model soup).

The campaign's stretches continue one another from one pretrained start, so their weights lie close; averaged, they
may answer better than either, at one model's test-time cost. Pooling two stretches' predictions instead solves
+9.5 to +12 tasks of the 400 over the better one, at twice the cost (results/h100-campaign-2026-12-06i.md, -07c.md).

    average_models([Path("models/testtime-grid-base"), Path("candidate")], Path("soup"), weights=[0.5, 0.5])

The result keeps the first model's other files (config, tokenizer; not its model card, which describes that model)
and its sharding; its weights are the weighted mean in float32, stored in the first model's dtype. One of the first
model's weight files is in memory at a time (with its float32 copies), so a model saved as one large file costs
about three times its size in memory.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

from testtime.model.model_folder import ModelError, check_model_dir, check_new_folder, copy_side_files, written_beside

# What makes two folders one architecture: a tensor-by-tensor mean of two others has no meaning. A tied head and an
# untied one would take the first model's tie whatever the second's weights said.
SHAPE_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
              "intermediate_size", "vocab_size", "tie_word_embeddings")


def mixing_weights(weights: Sequence[float] | None, n: int) -> list[float]:
    """The weights summed to 1: equal by default; else one positive finite number a model."""
    if n < 2:
        raise ModelError(f"averaging needs two models or more, got {n}")
    if weights is None:
        return [1 / n] * n
    if len(weights) != n:
        raise ModelError(f"{len(weights)} weights for {n} models")
    if not all(math.isfinite(w) and w > 0 for w in weights):
        raise ModelError(f"weights must be positive and finite, got {', '.join(f'{w:g}' for w in weights)}")
    top = max(weights)  # scaled first: a sum of two huge weights would overflow to inf, and every weight to 0
    scaled = [w / top for w in weights]
    return [w / sum(scaled) for w in scaled]


def architecture(path: Path) -> dict:
    cfg = json.loads((path / "config.json").read_text())
    text = cfg.get("text_config") or cfg
    return {k: text.get(k, cfg.get(k)) for k in SHAPE_KEYS}


def average_models(paths: Sequence[Path], out: Path, weights: Sequence[float] | None = None) -> Path:
    """Write to `out` the weighted mean of the models in `paths` (equal weights by default); return `out`.

    Every model must have the first's architecture, tensor names and shapes, and the same values in any tensor that
    is not floating point; `out` must be new or empty. The mean is written beside `out` and moved there once whole,
    so a failure leaves nothing at `out`."""
    paths, out = [Path(p) for p in paths], Path(out)
    mix = mixing_weights(weights, len(paths))
    files = [check_model_dir(p) for p in paths]
    first = architecture(paths[0])
    for p in paths[1:]:
        other = architecture(p)
        bad = [k for k in SHAPE_KEYS if other[k] != first[k]]
        if bad:
            raise ModelError(f"{p}: another architecture than {paths[0]}'s ({', '.join(bad)})")
    check_new_folder(out, paths, "a model averaged (write the mean elsewhere)")
    with written_beside(out, "writing the mean failed") as work:
        write_mean(paths, files, mix, work)
        copy_side_files(paths[0], work)
        check_model_dir(work)
    return out


def write_mean(paths: Sequence[Path], files: Sequence[Sequence[Path]], mix: Sequence[float], work: Path) -> None:
    """The mean's weight files in `work`, named and filled as the first model's are."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    with ExitStack() as stack:
        # Each tensor is read from whichever file of each model holds it: two models may shard differently.
        handles = [[stack.enter_context(safe_open(str(f), framework="pt")) for f in fs] for fs in files]
        where = [{key: h for h in hs for key in h.keys()} for hs in handles]
        for p, names in zip(paths[1:], where[1:], strict=True):
            if names.keys() != where[0].keys():
                diff = sorted(names.keys() ^ where[0].keys())
                raise ModelError(f"{p}: other tensors than {paths[0]}'s ({len(diff)} differ, first {diff[0]})")
            for key, h in names.items():
                shape, want = h.get_slice(key).get_shape(), where[0][key].get_slice(key).get_shape()
                if shape != want:
                    raise ModelError(f"{p}: tensor {key} is {tuple(shape)}, {paths[0]}'s {tuple(want)}")
        for shard, h in zip(files[0], handles[0], strict=True):  # one shard's tensors in memory at a time
            mean: dict[str, torch.Tensor] = {}
            for key in h.keys():
                parts = [names[key].get_tensor(key) for names in where]
                if not parts[0].is_floating_point():  # counts or flags: a mean of them means nothing
                    bad = next((p for p, t in zip(paths, parts, strict=True) if not torch.equal(t, parts[0])), None)
                    if bad is not None:
                        raise ModelError(f"{bad}: tensor {key} ({parts[0].dtype}) differs from {paths[0]}'s")
                    mean[key] = parts[0].contiguous()
                    continue
                total = sum((t.float() * w for t, w in zip(parts, mix, strict=True)), torch.zeros(()))
                mean[key] = total.to(parts[0].dtype).contiguous()
            save_file(mean, str(work / shard.name), metadata=h.metadata() or {"format": "pt"})
