"""What a model folder must hold before transformers reads it, checked so that every way it can be wrong is one
line naming the folder (`ModelError`) instead of whatever transformers would raise, or run:

- config.json: a regular file of JSON (testtime.core.jsonio), an object, sizes that are positive integers in range;
- weights: safetensors only (a pickle `pytorch_model.bin` can run code when loaded, so it is refused), every
  file regular and whole (its header matches its size).

`model.load_model` is the one reader. The tools that write a model from others (`averaging`, `int8`) share how:
into a new or empty folder outside their sources (`check_new_folder`), written beside it and moved there once whole
(`written_beside`), with the source's files but its weights and model card (`copy_side_files`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from testtime.core import jsonio
from testtime.core.config import ConfigError, Range, check_value, one_line

PICKLE_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json")
CARD_FILES = ("README.md",)  # a model card and its pictures describe their own model, not one made from it
CARD_SUFFIXES = (".png", ".svg", ".jpg")


class ModelError(ValueError):
    """A model folder that cannot be used. The message is one line naming the path and the problem."""


# A model folder's config.json sizes, where present (architectures name them differently): what transformers
# would otherwise meet as a ZeroDivisionError, an AssertionError or an allocation of petabytes.
SHAPE_LIMITS = {
    **dict.fromkeys(("vocab_size",), Range(1, 2**22)),
    **dict.fromkeys(("hidden_size", "n_embd", "intermediate_size", "n_inner"), Range(1, 2**18)),
    **dict.fromkeys(("num_attention_heads", "num_key_value_heads", "n_head", "head_dim"), Range(1, 4096)),
    **dict.fromkeys(("num_hidden_layers", "n_layer"), Range(1, 4096)),
    **dict.fromkeys(("max_position_embeddings", "n_positions"), Range(1, 2**24)),
}


def check_model_config(path: Path, cfg: Any) -> None:
    """A model folder's config.json (parsed): an object whose sizes are positive integers in range and whose
    heads divide its width; else a one-line ModelError."""
    where = f"{path}: config.json"
    if not isinstance(cfg, dict):
        raise ModelError(f"{where}: expected an object, got {type(cfg).__name__}")
    parts = [cfg]
    if cfg.get("text_config") is not None:  # a multimodal model: its language model's config
        if not isinstance(cfg["text_config"], dict):
            raise ModelError(f"{where}: text_config must be an object")
        parts.append(cfg["text_config"])
    for part in parts:
        for key, limit in SHAPE_LIMITS.items():
            value = part.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ModelError(f"{where}: {key} must be an integer, got {json.dumps(value)[:40]}")
            try:
                check_value(f"{where}: {key}", value, limit)
            except ConfigError as e:
                raise ModelError(str(e)) from None
        width, heads, kv = part.get("hidden_size"), part.get("num_attention_heads"), part.get("num_key_value_heads")
        if width and heads and part.get("head_dim") is None and width % heads:
            raise ModelError(f"{where}: hidden_size {width} is not a multiple of num_attention_heads {heads}")
        if heads and kv and heads % kv:
            raise ModelError(f"{where}: num_attention_heads {heads} is not a multiple of num_key_value_heads {kv}")


def weight_files(path: Path) -> list[Path]:
    """The safetensors files of a model folder; pickle weights (`.bin`) are refused: loading one can run code."""
    index = path / "model.safetensors.index.json"
    if index.exists():
        obj = jsonio.read_json(index, "index", ModelError)
        weight_map = obj.get("weight_map") if isinstance(obj, dict) else None
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) and Path(v).name == v
                                                        for v in weight_map.values()):
            raise ModelError(f"{index}: corrupt checkpoint (no weight_map of tensor name -> file)")
        return [path / name for name in sorted(set(weight_map.values()))]
    if (path / "model.safetensors").exists():
        return [path / "model.safetensors"]
    if any((path / f).exists() for f in PICKLE_FILES):
        raise ModelError(f"{path}: holds pickle weights (pytorch_model.bin), refused: only safetensors are loaded "
                         "(convert it with transformers' save_pretrained)")
    raise ModelError(f"{path}: no weights (expected model.safetensors or a sharded index)")


def check_weights(files: list[Path]) -> None:
    """Every safetensors file regular, whole and readable (its header matches its size); else a ModelError."""
    from safetensors import SafetensorError, safe_open

    for f in files:
        try:
            mode = f.stat().st_mode
        except OSError as e:
            raise ModelError(f"{f}: corrupt checkpoint ({e.strerror})") from None
        if not stat.S_ISREG(mode):
            raise ModelError(f"{f}: corrupt checkpoint (not a regular file)")
        try:
            with safe_open(str(f), framework="pt") as sf:
                sf.keys()
        except (SafetensorError, OSError, ValueError) as e:
            raise ModelError(f"{f}: corrupt checkpoint ({one_line(e, first_line=True)})") from None


def check_model_dir(path: Path) -> list[Path]:
    """Raise ModelError unless `path` is a loadable Hugging Face model folder; return its weight files."""
    if not path.exists():
        raise ModelError(f"{path}: no such model folder")
    if not path.is_dir():
        raise ModelError(f"{path}: not a folder (a model is a folder with config.json and weights)")
    if not (path / "config.json").exists():
        raise ModelError(f"{path}: no config.json (not a Hugging Face model folder)")
    cfg = jsonio.read_json(path / "config.json", "config", ModelError)
    files = weight_files(path)
    check_model_config(path, cfg)
    check_weights(files)
    return files


def check_new_folder(out: Path, sources: Sequence[Path], inside: str) -> None:
    """`out` new or empty and outside every source (`inside` ends the message that names one it lies in); else a
    one-line ModelError."""
    resolved = out.resolve()
    for p in sources:
        if resolved == p.resolve() or p.resolve() in resolved.parents:
            raise ModelError(f"{out}: inside {p}, {inside}")
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise ModelError(f"{out}: exists and is not a folder")
    if out.exists() and any(out.iterdir()):
        raise ModelError(f"{out}: exists and is not empty (a model there would be overwritten)")


@contextlib.contextmanager
def written_beside(out: Path, failed: str) -> Iterator[Path]:
    """A fresh folder beside `out` to write a model into, moved to `out` (new, or empty as `check_new_folder` found
    it) once the block ends; a failure leaves nothing at `out`, and a failed write is a one-line ModelError
    (`failed` says what failed)."""
    from safetensors import SafetensorError

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(work, 0o777 & ~umask)  # mkdtemp's 0700 would stay with the folder others are meant to read
    except OSError as e:
        raise ModelError(f"{out}: cannot write there ({e.strerror})") from None
    try:
        yield work
        if out.exists():
            out.rmdir()
        os.replace(work, out)
    except (OSError, SafetensorError) as e:  # safetensors reports a full disk as its own error
        raise ModelError(f"{out}: {failed} ({getattr(e, 'strerror', None) or e})") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)  # gone already where the move succeeded


def copy_side_files(src: Path, dst: Path, skip: Sequence[str] = ()) -> None:
    """`src`'s files but its weights, its model card and `skip` (config, tokenizer, index...) into `dst`."""
    for f in src.iterdir():
        if f.is_file() and not f.name.endswith(".safetensors") and f.name not in CARD_FILES \
                and f.suffix not in CARD_SUFFIXES and f.name not in skip:
            shutil.copy2(f, dst / f.name)


@contextlib.contextmanager
def held_logs():
    """transformers' log lines and warnings while a folder loads, held back: shown once it has loaded, dropped
    when it fails (its one error line says why, and the promise is one line)."""
    import logging

    from transformers.utils import logging as hf_logging

    logger = hf_logging.get_logger("transformers")  # configured now, so its own handler is in place to restore
    held: list[logging.LogRecord] = []
    catcher = logging.Handler()
    catcher.emit = held.append  # type: ignore[method-assign]
    handlers, propagate = logger.handlers[:], logger.propagate
    logger.handlers, logger.propagate = [catcher], False
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")
            yield
    finally:
        logger.handlers, logger.propagate = handlers, propagate
    for record in held:  # only reached when loading succeeded
        logger.handle(record)
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
