"""One model from several of one architecture: their weights averaged, tensor by tensor (a model soup).

The campaign's stretches continue one another from one pretrained start, so their weights lie close; averaged, they
may answer better than either, at one model's test-time cost. Pooling two stretches' predictions instead solves
+11.5 to +12 tasks of the 400 over the better one, at twice the cost (results/h100-campaign-2026-12-06i.md).

    average_models([Path("models/testtime-grid-base"), Path("candidate")], Path("soup"), weights=[0.5, 0.5])

The result keeps the first model's files beside its weights (config, tokenizer) and its sharding; its weights are
the weighted mean in float32, stored in the first model's dtype.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

from testtime.model.model_folder import ModelError, check_model_dir

# What makes two folders one architecture: a tensor-by-tensor mean of two others has no meaning.
SHAPE_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
              "intermediate_size", "vocab_size")
# The first model's files that travel with the weights (not its model card: it describes another model).
KEPT_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
              "special_tokens_map.json", "tokenizer.model", "chat_template.jinja")


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
    total = sum(weights)
    return [w / total for w in weights]


def architecture(path: Path) -> dict:
    cfg = json.loads((path / "config.json").read_text())
    text = cfg.get("text_config") or cfg
    return {k: text.get(k, cfg.get(k)) for k in SHAPE_KEYS}


def average_models(paths: Sequence[Path], out: Path, weights: Sequence[float] | None = None) -> Path:
    """Write to `out` the weighted mean of the models in `paths` (equal weights by default); return `out`.

    Every model must have the first's architecture, tensor names and shapes; `out` must not hold a model already."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    paths = [Path(p) for p in paths]
    mix = mixing_weights(weights, len(paths))
    files = [check_model_dir(p) for p in paths]
    first = architecture(paths[0])
    for p in paths[1:]:
        other = architecture(p)
        bad = [k for k in SHAPE_KEYS if other[k] != first[k]]
        if bad:
            raise ModelError(f"{p}: another architecture than {paths[0]}'s ({', '.join(bad)})")
    out = Path(out)
    if out.resolve() in {p.resolve() for p in paths}:
        raise ModelError(f"{out}: is one of the models averaged (write the mean elsewhere)")
    if out.exists() and any(out.iterdir()):
        raise ModelError(f"{out}: exists and is not empty (a model there would be overwritten)")
    with ExitStack() as stack:
        # Each tensor is read from whichever file of each model holds it: two models may shard differently.
        where: list[dict[str, object]] = []
        for fs in files:
            names: dict[str, object] = {}
            for f in fs:
                sf = stack.enter_context(safe_open(str(f), framework="pt"))
                names.update(dict.fromkeys(sf.keys(), sf))
            where.append(names)
        for p, names in zip(paths[1:], where[1:], strict=True):
            if names.keys() != where[0].keys():
                diff = sorted(names.keys() ^ where[0].keys())
                raise ModelError(f"{p}: other tensors than {paths[0]}'s ({len(diff)} differ, first {diff[0]})")
            for key, sf in names.items():
                shape = sf.get_slice(key).get_shape()  # type: ignore[attr-defined]
                want = where[0][key].get_slice(key).get_shape()  # type: ignore[attr-defined]
                if shape != want:
                    raise ModelError(f"{p}: tensor {key} is {tuple(shape)}, {paths[0]}'s {tuple(want)}")
        out.mkdir(parents=True, exist_ok=True)
        for shard in files[0]:  # the first model's shards, one at a time: one shard's tensors in memory
            with safe_open(str(shard), framework="pt") as sf:
                keys, meta = list(sf.keys()), sf.metadata()
            mean: dict[str, torch.Tensor] = {}
            for key in keys:
                parts = [names[key].get_tensor(key) for names in where]  # type: ignore[attr-defined]
                total = sum((t.float() * w for t, w in zip(parts, mix, strict=True)), torch.zeros(()))
                mean[key] = total.to(parts[0].dtype).contiguous()
            save_file(mean, str(out / shard.name), metadata=meta or {"format": "pt"})
    for name in (*KEPT_FILES, "model.safetensors.index.json"):
        if (paths[0] / name).exists():
            shutil.copy2(paths[0] / name, out / name)
    check_model_dir(out)
    return out
