"""A training run's checkpoint: everything needed to continue bit-exactly (weights, optimizer, schedule, every RNG,
the data stream's position), written atomically so that a kill at any moment leaves the last good one."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from testtime.core import jsonio
from testtime.core.config import ConfigError, typed
from testtime.model.loading import ModelConfig


def rng_state() -> dict[str, Any]:
    """numpy's and Python's global RNG states, as JSON."""
    np_state = np.random.get_state()
    return {"numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]], "python": _jsonable(random.getstate())}


def _jsonable(x: Any) -> Any:
    return [_jsonable(v) for v in x] if isinstance(x, (tuple, list)) else x


def _tuplify(x: Any) -> Any:
    return tuple(_tuplify(v) for v in x) if isinstance(x, list) else x


def set_rng_state(state: dict[str, Any]) -> None:
    n = state["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), *n[2:]))
    random.setstate(_tuplify(state["python"]))


def save_checkpoint(run_dir: Path, model, optimizer, scheduler, meta: dict[str, Any]) -> Path:
    """Write run_dir/checkpoint atomically: a temp folder, then renames (an old one survives a crash)."""
    import torch

    final, tmp, old = run_dir / "checkpoint", run_dir / "checkpoint.tmp", run_dir / "checkpoint.old"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tensors = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    torch.save(tensors, tmp / "trainer.pt")
    (tmp / "state.json").write_text(json.dumps({**meta, "rng": rng_state()}))
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def find_checkpoint(run_dir: Path) -> Path | None:
    for name in ("checkpoint", "checkpoint.old"):
        d = run_dir / name
        if (d / "trainer.pt").is_file() and (d / "state.json").is_file():
            return d
    return None


def read_state(ckpt: Path) -> dict[str, Any]:
    """The checkpoint's state.json (step, stream, config, RNGs), or a one-line error naming it."""
    path = ckpt / "state.json"
    try:
        meta = jsonio.read_json(path)
    except ValueError as e:
        raise ConfigError(f"{path}: corrupt checkpoint ({str(e).removeprefix(f'{path}: ')}); start over with --fresh") from None
    if not isinstance(meta, dict) or not {"step", "stream", "config", "rng"} <= set(meta):
        raise ConfigError(f"{path}: corrupt checkpoint (missing entries); start over with --fresh")
    return meta


def clear_run(run_dir: Path) -> None:
    """A fresh start in a used folder: the last run's log and `stable/` weights would pass for this run's."""
    (run_dir / "log.jsonl").unlink(missing_ok=True)
    shutil.rmtree(run_dir / "stable", ignore_errors=True)


def check_resumable(meta: dict[str, Any], config: dict[str, Any], run_dir: Path) -> None:
    """Refuse to continue a checkpoint (its state `meta`) under another model, optimizer or schedule than `config`
    (the run's, as a dict): its weights or moments would not fit, or its rate would jump mid-run (a scheduler's
    state holds a step, not its function)."""
    if not meta:
        return
    was = meta["config"]
    if typed(ModelConfig, was["model"], "checkpoint model") != typed(ModelConfig, config["model"], "model"):
        raise ConfigError(f"{run_dir}: checkpoint was trained with a different model config; use another run dir")
    keys = [("optimizer", "adamw"), ("schedule", "cosine")]  # the defaults of checkpoints older than the keys
    for key, old in keys + ([("decay_frac", 0.2)] if config["schedule"] == "wsd" else []):
        if was.get(key, old) != config[key]:
            raise ConfigError(f"{run_dir}: checkpoint was trained with {key} {was.get(key, old)}, not {config[key]}; "
                              "use another run dir (or init_from its exported model)")


def load_checkpoint(ckpt: Path, meta: dict[str, Any], model, optimizer, scheduler, device: str) -> None:
    """Restore weights, optimizer, schedule and every RNG from `ckpt` (whose state.json is `meta`)."""
    import torch

    try:
        tensors = torch.load(ckpt / "trainer.pt", map_location=device, weights_only=True)
    except Exception as e:  # a truncated or corrupt file: say which, in one line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"{ckpt / 'trainer.pt'}: corrupt checkpoint ({first}); start over with --fresh") from None
    model.load_state_dict(tensors["model"])
    optimizer.load_state_dict(tensors["optimizer"])
    scheduler.load_state_dict(tensors["scheduler"])
    torch.set_rng_state(tensors["torch_rng"].cpu())
    if device.startswith("cuda") and tensors["cuda_rng"]:
        torch.cuda.set_rng_state_all([s.cpu() for s in tensors["cuda_rng"]])
    set_rng_state(meta["rng"])


def truncate_log(path: Path, step: int) -> None:
    """Drop log lines written after the checkpoint we resume from (they will be written again)."""
    if not path.exists():
        return
    keep = [rec for _, rec in jsonio.read_json_lines(path, "log", ConfigError, complete_only=True)
            if isinstance(rec, dict) and rec.get("step", 0) <= step]
    path.write_text("".join(json.dumps(rec) + "\n" for rec in keep))
