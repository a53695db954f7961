"""Model folders stored in 8-bit integers, read back to floating point at load: two checkpoints in the room of one.

The device carries the working tree (64 MiB) and the shipped model takes 51 MB in bf16; two campaign checkpoints'
runs combined solve 7 to 10.5 more of the 400 than one (results/h100-campaign-2026-12-07e.md). Rounded to int8
with one scale per output row, a model takes half the room and, read back, scores the evaluation answers as the
bf16 one does (results/cpu-2026-12-07-int8.md).

    quantize_model(Path("models/testtime-grid-base"), Path("grid-int8"))   # or: testtime quantize MODEL --out DIR
    load_model("grid-int8")                                               # read back, as any model folder

Every 2-D floating weight (the linear layers, the embeddings) is stored as int8 `round(w / s)` with `s` the row's
largest magnitude over 127 (symmetric, so zero stays zero), its scales as float32 under `NAME` + `SCALE_SUFFIX`;
the rest (norms) as they were. config.json says so under `CONFIG_KEY`, which is how `load_model` knows to read the
folder here rather than through transformers, which would take the integers for weights. A model read back from
such a folder is an ordinary model: saved again, it is a plain floating-point folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from testtime.model.model_folder import ModelError, check_model_dir, check_new_folder, copy_side_files, written_beside

CONFIG_KEY = "testtime_int8"
SCHEME = "absmax-per-row"
SCALE_SUFFIX = ".int8_scale"


def quantize_tensor(w) -> tuple[Any, Any]:
    """`w` (2-D, floating) as int8 values and a float32 scale a row, so that `values * scale` reads it back within
    half a step of each row."""
    import torch

    scale = w.float().abs().amax(dim=1, keepdim=True).clamp(min=torch.finfo(torch.float32).tiny) / 127.0
    return (w.float() / scale).round().clamp(-127, 127).to(torch.int8), scale


def dequantize_tensor(values, scale, dtype=None):
    """The int8 `values` read back with their row `scale` (float32, or `dtype`)."""
    out = values.float() * scale.float()
    return out if dtype is None else out.to(dtype)


def read_config(path: Path) -> dict:
    return json.loads((path / "config.json").read_text())


def is_int8(path: Path) -> bool:
    """Whether a (checked) model folder holds int8 weights written by `quantize_model`."""
    return CONFIG_KEY in read_config(path)


def quantize_model(src: Path, out: Path) -> Path:
    """Write `src`'s weights to `out` as int8 with a scale a row (the same shards, config and tokenizer; not its
    model card); return `out`. `out` must be new or empty and outside `src`; it is written beside and moved there
    once whole, so a failure leaves nothing at `out`."""
    src, out = Path(src), Path(out)
    files = check_model_dir(src)
    cfg = read_config(src)
    if CONFIG_KEY in cfg:
        raise ModelError(f"{src}: already int8 (config.json has {CONFIG_KEY})")
    check_new_folder(out, [src], "the model quantized (write it elsewhere)")
    with written_beside(out, "writing the int8 model failed") as work:
        weight_map = {}
        for f in files:
            for key in write_shard(f, work / f.name):
                weight_map[key] = f.name
        copy_side_files(src, work, skip=("config.json", "model.safetensors.index.json"))
        cfg[CONFIG_KEY] = {"scheme": SCHEME, "scale_suffix": SCALE_SUFFIX}
        (work / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
        if (src / "model.safetensors.index.json").exists():
            index = {"metadata": {"total_size": sum((work / f.name).stat().st_size for f in files)},
                     "weight_map": dict(sorted(weight_map.items()))}
            (work / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
        try:  # a model whose tensors transformers renames at load would be written, then fail every load
            load_int8(work, check_model_dir(work), None)
        except ModelError as e:
            raise ModelError(f"{src}: cannot be stored as int8 ({str(e).removeprefix(f'{work}: ')})") from None
    return out


def write_shard(src: Path, dst: Path) -> list[str]:
    """One safetensors file of `src` as int8 at `dst`; the names it holds there."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    stored = {}
    with safe_open(str(src), framework="pt") as h:
        for key in h.keys():
            if key.endswith(SCALE_SUFFIX):
                raise ModelError(f"{src}: tensor {key} ends as int8 scales do; not a float model")
            t = h.get_tensor(key)
            if t.ndim == 2 and t.is_floating_point():
                stored[key], stored[key + SCALE_SUFFIX] = quantize_tensor(t)
            else:
                stored[key] = t
        meta = h.metadata() or {"format": "pt"}
    save_file({k: v.contiguous() for k, v in stored.items()}, str(dst), metadata=meta)
    return list(stored)


def read_state(path: Path, files: list[Path], dtype) -> dict:
    """The folder's weights read back to `dtype`, by name; an int8 tensor without its scale, or a scale without its
    tensor, is a one-line ModelError."""
    import torch
    from safetensors import safe_open

    raw = {}
    for f in files:
        with safe_open(str(f), framework="pt") as h:
            raw.update({key: h.get_tensor(key) for key in h.keys()})
    state = {}
    for key, t in raw.items():
        if key.endswith(SCALE_SUFFIX):
            if key[: -len(SCALE_SUFFIX)] not in raw:
                raise ModelError(f"{path}: int8 scales {key} without their weights")
            continue
        scale = raw.get(key + SCALE_SUFFIX)
        if t.dtype == torch.int8:
            if scale is None or scale.shape != (t.shape[0], 1):
                raise ModelError(f"{path}: int8 tensor {key} without a scale for each of its {t.shape[0]} rows")
            state[key] = dequantize_tensor(t, scale, dtype)
        elif scale is not None:
            raise ModelError(f"{path}: tensor {key} has int8 scales but is {t.dtype}, not int8")
        else:
            state[key] = t.to(dtype) if t.is_floating_point() else t
    return state


def load_int8(path: Path, files: list[Path], dtype=None):
    """The causal LM of an int8 folder, read back to `dtype` (None: float32) as `from_pretrained` builds a model of
    that dtype (buffers it makes in float32, as rotary frequencies, stay so); its config no longer says int8, so
    saving it writes a plain floating-point folder."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(str(path))
    spec = getattr(config, CONFIG_KEY, None)
    scheme = spec.get("scheme") if isinstance(spec, dict) else None
    if scheme != SCHEME:
        raise ModelError(f"{path}: config.json {CONFIG_KEY}: unknown scheme {scheme!r} (this testtime reads {SCHEME})")
    delattr(config, CONFIG_KEY)
    dtype = dtype or torch.float32
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa", dtype=dtype)
    state = read_state(path, files, dtype)
    missing, unexpected = model.load_state_dict(state, strict=False)
    tie = getattr(config.get_text_config(), "tie_word_embeddings", False)
    tied = {k for k in missing if tie and k.endswith("lm_head.weight")}
    if set(missing) - tied or unexpected:
        first = sorted(set(missing) - tied) or sorted(unexpected)
        raise ModelError(f"{path}: int8 weights do not fit its config ({len(set(missing) - tied)} missing, "
                         f"{len(unexpected)} unexpected, first {first[0]})")
    model.tie_weights()
    return model
