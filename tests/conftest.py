"""Shared fixtures: tiny models and task factories (CPU, no download). Factories are fixtures that return a
function, so a test builds as many models or tasks as it needs, each seeded."""

from __future__ import annotations

import contextlib
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from testtime.core.config import with_overrides
from testtime.data.encode import GridCodec
from testtime.data.tasks import Example, Task
from testtime.model.loading import ModelConfig, build_model
from testtime.recipes.grid import EvalConfig, config_from_dict


def _tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=32, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=2048,
                      initializer_range=0.3)  # large enough that a frozen head can express sharp outputs
    return LlamaForCausalLM(cfg).eval()


def _tiny_grid_model(seed: int = 0):
    torch.manual_seed(seed)
    # A large init makes a random model's greedy tokens vary, so decoding checks are not all one token.
    cfg = ModelConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, max_position_embeddings=2048,
                      initializer_range=0.5)
    return build_model(cfg).eval()


def _flip_task(seed: int = 0, tid: str = "t", shape: tuple[int, int] = (3, 4), tests: int = 1) -> Task:
    """Three demos and `tests` test inputs of random grids, each output the input mirrored left to right."""
    rng = np.random.default_rng(seed)

    def ex() -> Example:
        g = rng.integers(0, 10, size=shape).astype(np.uint8)
        return Example(g, np.ascontiguousarray(g[:, ::-1]))

    return Task(tid, (ex(), ex(), ex()), tuple(ex() for _ in range(tests)))


def _synthetic_tasks(n: int = 8) -> list[Task]:
    """n mirror tasks t0.. of varied grid sizes and demo counts."""
    rng = np.random.default_rng(0)
    tasks = []
    for k in range(n):
        h, w = 2 + k % 4, 3 + k % 3
        demos = []
        for _ in range(2 + k % 2):
            g = rng.integers(0, 10, size=(h, w)).astype(np.uint8)
            demos.append(Example(g, np.ascontiguousarray(g[:, ::-1])))
        q = rng.integers(0, 10, size=(h, w)).astype(np.uint8)
        tasks.append(Task(f"t{k}", tuple(demos), (Example(q, np.ascontiguousarray(q[:, ::-1])),)))
    return tasks


def _tiny_pretrain_config(**kw):
    """A pretraining config that runs in seconds on the CPU: the tiny model, 6 steps of 4,096 tokens; `kw` overrides."""
    from testtime.recipes.pretrain import PretrainConfig

    base = dict(model=ModelConfig.tiny(), max_len=1024, token_budget=4096, pool_size=24, pad_multiple=64, lr=3e-3,
                warmup_steps=2, total_steps=6, log_every=1, device="cpu", seed=3)
    return PretrainConfig(**{**base, **kw})


def _small_cfg(**kw) -> EvalConfig:
    """An evaluation config that keeps a tiny model's run fast: 2 samples, 1 epoch, rank 2, one view."""
    cfg = config_from_dict({"max_group": 4, "ttt_cfg": {"samples": 2, "epochs": 1, "rank": 2},
                            "predict_cfg": {"views": 1, "max_len": 320}})
    return with_overrides(cfg, kw)


@pytest.fixture(scope="session")
def tiny_llama():
    """tiny_llama(seed=0): a 2-layer random Llama over 32 tokens."""
    return _tiny_llama


@pytest.fixture(scope="session")
def noisy_lora():
    """noisy_lora(model, n, std, seed): n LoRA adapters attached to `model`, their B factors random (a fresh adapter
    is a no-op), so each slot changes the model's outputs in its own way."""
    from testtime.model.lora import attach_multi_lora

    def attach(model, n: int, std: float = 0.3, seed: int = 1):
        lora = attach_multi_lora(model, n, rank=4, alpha=8)
        with torch.no_grad():
            for layer in lora.layers.values():
                layer.lora_B.normal_(0, std, generator=torch.Generator().manual_seed(seed))
        return lora

    return attach


@pytest.fixture(scope="session")
def tiny_grid_model():
    """tiny_grid_model(seed=0): a 2-layer random grid-aware model ((grid, row, column) positions)."""
    return _tiny_grid_model


@pytest.fixture()
def tiny():
    """The grid model's tiny config, random, with its codec."""
    torch.manual_seed(0)
    return build_model(ModelConfig.tiny()).eval(), GridCodec()


@pytest.fixture(scope="session")
def flip_task():
    return _flip_task


@pytest.fixture(scope="session")
def synthetic_tasks():
    return _synthetic_tasks


@pytest.fixture(scope="session")
def small_cfg():
    return _small_cfg


@pytest.fixture(scope="session")
def write_rearc():
    """A writer of tiny files in RE-ARC's format (README of ../shared/data/re-arc): each pair's output flips its input."""
    import io
    import lzma

    def _write_rearc(path: Path, task_ids: list[str], pairs_per_task: int = 6, seed: int = 0,
                    extra: list[tuple[int, np.ndarray, np.ndarray]] = ()) -> Path:
        """A tiny file in RE-ARC's format (README of ../shared/data/re-arc): each pair's output flips its input."""
        rng = np.random.default_rng(seed)
        pair_task, shapes, cells = [], [], []
        pairs = [(t, g := rng.integers(0, 10, (int(rng.integers(2, 6)), int(rng.integers(2, 6)))), g[:, ::-1])
                 for t in range(len(task_ids)) for _ in range(pairs_per_task)]
        for t, a, b in [*pairs, *extra]:
            pair_task.append(t)
            for g in (a, b):
                shapes.append(g.shape)
                cells.append(np.asarray(g, dtype=np.uint8).ravel())
        buf = io.BytesIO()
        np.savez(buf, task_ids=np.array(task_ids), pair_task=np.array(pair_task, dtype=np.uint16),
                 shapes=np.array(shapes, dtype=np.uint8), cells=np.concatenate(cells))
        path.write_bytes(lzma.compress(buf.getvalue()) if path.suffix == ".xz" else buf.getvalue())
        return path

    return _write_rearc


@contextlib.contextmanager
def _deadline(seconds: float):
    """Raise TimeoutError in the main thread after `seconds` (a hung read of a FIFO fails the test, not the run)."""

    def on_alarm(signum, frame):
        raise TimeoutError(f"still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="session")
def deadline():
    """`with deadline(5): ...` fails with TimeoutError when the block runs past 5 seconds."""
    return _deadline


def _check_one_line_error(result, *fragments: str) -> str:
    """A CliRunner result that is a user error: exit code 2, one stderr line `error: ...` holding every fragment,
    no traceback. Returns that line."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]


@pytest.fixture(scope="session")
def one_line_error():
    """one_line_error(result, *fragments): assert a CliRunner result is a one-line `error: ...`, exit code 2."""
    return _check_one_line_error


@pytest.fixture(scope="session")
def tok():
    """A tiny byte-level BPE tokenizer (`testtime.model.tiny_lm`) for the text kind's tests."""
    from testtime.model.tiny_lm import byte_bpe_tokenizer

    return byte_bpe_tokenizer()


@pytest.fixture(scope="session")
def fmt(tok):
    """The text kind's prompt format over `tok`."""
    from testtime.text.encode import TextFormat

    return TextFormat(tok)


def _naive_greedy(model, prompt, max_new: int, stop_ids) -> list[int]:
    """Greedy decoding the slow, obvious way: the whole sequence through the model for every token, no cache."""
    seq, out = torch.tensor(prompt)[None], []
    with torch.no_grad():
        for _ in range(max_new):
            nxt = int(model(seq).logits[0, -1].argmax())
            out.append(nxt)
            if nxt in stop_ids:
                break
            seq = torch.cat([seq, torch.tensor([[nxt]])], 1)
    return out


@pytest.fixture(scope="session")
def naive_greedy():
    """naive_greedy(model, prompt, max_new, stop_ids): the reference the engine's cached, batched decoding must equal."""
    return _naive_greedy


@pytest.fixture()
def runner_checkout(tmp_path):
    """A folder laid out as gpu_eval.sh's runner expects a checkout (its scripts, the folders it snapshots, a wheel
    that does not install, so the runs fall back on this Python's packages), for tests that run it in the
    foreground: `bash scripts/gpu_eval.sh --runner SPEC...` with SNAP_ROOT pointing into tmp_path."""
    repo = Path(__file__).resolve().parents[1]
    for d in ("src", "benchmarks", "models", "scripts", ".whl", "runs"):
        (tmp_path / d).mkdir()
    for name in ("gpu_eval.sh", "gpu_wheels.sh"):
        (tmp_path / "scripts" / name).write_text((repo / "scripts" / name).read_text())
    (tmp_path / ".whl/broken-1.0-py3-none-any.whl").write_bytes(b"not a zip")
    return tmp_path


@pytest.fixture()
def two_models(tmp_path, monkeypatch):
    """Two models that answer differently, in tmp_path: `a` (the shipped one, linked) and `b` (the shipped one with
    its last layer zeroed, stored as int8 by `testtime quantize`; `b16` its bf16 folder), and `tasks/` with the two
    smallest ARC-AGI-1 evaluation tasks. A random tiny model answers nothing, and attempts that are all empty (or all
    equal) would combine the same whatever the code did. The CPU budget's pace is fixed, so a slow machine cuts
    nothing (tests/test_golden.py)."""
    from testtime.data.tasks import load_tasks, save_task
    from testtime.model.int8 import quantize_model
    from testtime.model.loading import DEFAULT_MODEL_DIR, load_model, save_model
    from testtime.stages import budget

    pace = budget.Speed(row_token=1e-3, step=0.02)
    monkeypatch.setattr(budget, "measure_speed", lambda model, *a, **k: pace)
    (tmp_path / "a").symlink_to(DEFAULT_MODEL_DIR)
    other = load_model(DEFAULT_MODEL_DIR)
    with torch.no_grad():
        for name, p in other.model.named_parameters():
            if name.startswith("model.layers.7."):  # another model, still one that answers in grids
                p.zero_()
    quantize_model(save_model(other.model, other.tokenizer, tmp_path / "b16", dtype=torch.bfloat16), tmp_path / "b")
    by_id = {t.id: t for t in load_tasks("arc1/eval")}
    for tid in ("66e6c45b", "00576224"):
        save_task(by_id[tid], tmp_path / "tasks" / f"{tid}.json")
    return tmp_path
