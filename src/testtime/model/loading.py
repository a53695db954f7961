"""The base model: a small Llama-shaped causal LM over the grid vocabulary, and how to load/save any model.

Our checkpoint is a standard `transformers` folder (config.json, safetensors shards, tokenizer), so any
Hugging Face causal LM loads the same way and ours loads in anyone's tools:

    loaded = load_model()                 # the shipped base model (models/testtime-grid-base)
    loaded = load_model("path/or/folder", device="cuda")
    loaded.model, loaded.tokenizer, loaded.codec
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

from testtime.core.config import LENGTH, ConfigError, Range, check, one_line
from testtime.core.distributed import pick_device
from testtime.data.encode import BOS, EOS, GRID_VOCAB, PAD, Codec, build_grid_tokenizer, codec_for
from testtime.model import int8
from testtime.model.model_folder import ModelError, check_model_dir, held_logs

# src/testtime/model/loading.py -> <repo>/models/testtime-grid-base
REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_MODEL_DIR = REPO_ROOT / "models" / "testtime-grid-base"
MODEL_ENV = "TESTTIME_MODEL"
DTYPES = ("float32", "bfloat16", "float16")  # the weights' dtypes a model loads in (float16: a user's own model's)


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the base model. The defaults are the shipped ~26M-parameter grid-aware model."""

    # The grid tokenizer's 18 tokens (GRID_VOCAB) are the least a model of ours holds; 32 keeps matmuls aligned.
    vocab_size: Annotated[int, Range(len(GRID_VOCAB), 2**20)] = 32
    hidden_size: Annotated[int, Range(1, 65536)] = 512
    num_layers: Annotated[int, Range(1, 1024)] = 8
    num_heads: Annotated[int, Range(1, 1024)] = 8  # head dim 64
    intermediate_size: Annotated[int, Range(1, 2**18)] = 1408
    max_position_embeddings: Annotated[int, LENGTH] = 8192
    # per-axis positions stay under 64, so slow frequencies need no 10000
    rope_theta: Annotated[float, Range(0, 1e9, lo_open=True)] = 100.0
    tie_embeddings: bool = True
    initializer_range: Annotated[float, Range(0, 10, lo_open=True)] = 0.02
    # Rotary positions over (grid, row, column) (testtime.model.grid_model) instead of one flat index.
    grid_positions: bool = True
    # The stack of num_layers layers applied this many times with shared weights (looped blocks: num_layers * loops
    # layers of compute for num_layers of parameters; the grid model only).
    loops: Annotated[int, Range(1, 64)] = 1
    # A learned vector per pretraining task added to every token's input embedding (the grid model only): pretraining
    # gives each of its training tasks a row (`grid_model.TaskEmbedding`), test time learns a new task's vector.
    task_embedding: bool = False

    def __post_init__(self) -> None:
        check(self, "model")
        if self.hidden_size % self.num_heads:
            raise ConfigError(f"model: hidden_size {self.hidden_size} is not a multiple of num_heads {self.num_heads}")
        if (self.loops > 1 or self.task_embedding) and not self.grid_positions:
            raise ConfigError("model: loops and task_embedding need the grid model (grid_positions true)")

    @classmethod
    def tiny(cls) -> ModelConfig:
        """A few-thousand-parameter model for tests."""
        return cls(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, max_position_embeddings=2048,
                   rope_theta=10000.0, grid_positions=False)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def llama_config(self, task_names: Sequence[str] = ()):
        """The transformers config; `task_names` are the rows of a per-task embedding (with `task_embedding`)."""
        if self.task_embedding and not task_names:
            raise ConfigError("model: a per-task embedding needs the names of its tasks (pretraining gives them)")
        # Only what differs from a plain grid model is written, so its config.json stays as it was.
        extra: dict[str, Any] = {"loops": self.loops} if self.loops > 1 else {}
        if self.task_embedding:
            extra["task_names"] = list(task_names)
        if self.grid_positions:
            from testtime.model.grid_model import GridLlamaConfig as LlamaConfig
        else:
            from transformers import LlamaConfig

        cfg = LlamaConfig(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_layers * self.loops,
            num_attention_heads=self.num_heads,
            num_key_value_heads=self.num_heads,
            intermediate_size=self.intermediate_size,
            max_position_embeddings=self.max_position_embeddings,
            rope_theta=self.rope_theta,
            tie_word_embeddings=self.tie_embeddings,
            initializer_range=self.initializer_range,
            bos_token_id=BOS,
            eos_token_id=EOS,
            pad_token_id=PAD,
            attention_bias=False,
            mlp_bias=False,
            attention_dropout=0.0,
            **extra,
        )
        cfg._attn_implementation = "sdpa"
        return cfg


def build_model(cfg: ModelConfig | None = None, task_names: Sequence[str] = ()):
    """A freshly initialised `LlamaForCausalLM` (or its grid-aware subclass; fp32; seed torch beforehand for a
    fixed init); `task_names`: the rows of its per-task embedding, where the config asks for one."""
    from transformers import LlamaForCausalLM

    from testtime.model.grid_model import GridLlamaForCausalLM

    cfg = cfg or ModelConfig()
    return (GridLlamaForCausalLM if cfg.grid_positions else LlamaForCausalLM)(cfg.llama_config(task_names))


def head_logits(model, hidden):
    """The output head on `hidden`, in fp32, with the logit soft-capping some models apply (Gemma 2)."""
    import torch

    logits = model.get_output_embeddings()(hidden).float()
    cap = getattr(model.config.get_text_config(), "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


@dataclass
class Loaded:
    model: Any  # a transformers causal LM, in eval mode
    tokenizer: Any
    codec: Codec
    path: Path


def default_model_dir() -> Path:
    env = os.environ.get(MODEL_ENV)
    return Path(env) if env else DEFAULT_MODEL_DIR


def load_model(path: str | Path | None = None, device: str = "cpu", dtype=None) -> Loaded:
    """Load a causal LM folder, its tokenizer and the matching codec: the one way every path (solve, evaluate,
    text tasks, pretraining's init_from) loads a model.

    `path=None` means the shipped base model (or $TESTTIME_MODEL). `dtype` (one of DTYPES, by name or as a torch
    dtype) defaults to bf16 on CUDA, fp32 elsewhere.
    A folder of int8 weights (`testtime.model.int8`) is read back to that dtype.
    Whatever is wrong with the folder (missing, a bad config.json, pickle, empty or cut-short weights) is a
    one-line ModelError naming it, and so is a device that is not there.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import testtime.model.grid_model  # noqa: F401  (registers the grid-aware classes)

    device = pick_device(str(device))
    path = Path(path) if path is not None else default_model_dir()
    files = check_model_dir(path)
    if dtype is None:
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    else:
        name = dtype if isinstance(dtype, str) else str(dtype).removeprefix("torch.")
        if name not in DTYPES:
            raise ConfigError(f"dtype {name!r}: one of {', '.join(DTYPES)}")
        dtype = getattr(torch, name)
    try:
        with held_logs():
            tokenizer = AutoTokenizer.from_pretrained(str(path))
            if int8.is_int8(path):  # testtime's own storage: transformers would take the integers for weights
                model = int8.load_int8(path, files, dtype)
            else:
                model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, attn_implementation="sdpa",
                                                             use_safetensors=True)
            codec = codec_for(tokenizer)
    except ModelError:
        raise
    except Exception as e:  # a user's folder can make transformers raise anything; the folder is named either way
        raise ModelError(f"{path}: cannot load model ({type(e).__name__}: {one_line(e, first_line=True)})") from e
    model.to(device)
    model.eval()
    return Loaded(model=model, tokenizer=tokenizer, codec=codec, path=path)


def save_model(
    model, tokenizer=None, path: str | Path = DEFAULT_MODEL_DIR, max_shard_size: str = "15MB", dtype=None
) -> Path:
    """Write a standard model folder: safetensors shards under 16 MB, config, and the tokenizer.

    `dtype` (e.g. torch.bfloat16) casts a copy of the weights before saving; the model passed in is untouched.
    """
    import copy

    import torch

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if dtype is not None and next(model.parameters()).dtype != dtype:
        model = copy.deepcopy(model).to(dtype)
    with torch.no_grad():
        model.save_pretrained(str(path), max_shard_size=max_shard_size, safe_serialization=True)
    (tokenizer or build_grid_tokenizer()).save_pretrained(str(path))
    return path
