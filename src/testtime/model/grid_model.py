"""A grid-aware Llama: rotary positions over (grid, row, column) instead of one flat index.

A flat index tells a model that the cell above is "30 tokens back" only for 29-wide grids; with positions
per axis, the same cell of the previous grid, or the cell above, is one fixed offset for every grid size.
mdlARC measured this at 44% against 24% for flat positions. The model stays a standard `transformers`
causal LM: `AutoModelForCausalLM.from_pretrained` loads it once `testtime` is imported (the classes are
registered under model_type "testtime_grid"), peft attaches LoRA to it, safetensors on disk.

Positions arrive packed in one integer per token (`testtime.data.encode.grid_positions`), so callers pass
`position_ids` of the usual [batch, time] shape; with none given, the model computes them from the token ids.
Each rotary frequency serves one axis, the three interleaved (row, column, grid, row, ...), so every axis
gets fast and slow frequencies.

Two optional levers (off in the shipped model, whose config names neither):
- `loops` (LoopViT's and HRM's lever, more compute per parameter): the stack of `num_hidden_layers / loops` unique
  layers runs `loops` times with shared weights. `num_hidden_layers` counts the layers the computation passes through,
  so a KV cache built from the config (static, dynamic, the engine's) has one entry per layer per pass.
- `task_names` (mdlARC's lever): a learned vector per pretraining task, added to every token's input embedding
  (`TaskEmbedding`); a sequence names its task by `task_index`, and a task the table does not know gets the mean of
  its rows. Test time learns a new task's vector beside its adapter (`testtime.model.task_vectors`).
"""

from __future__ import annotations

import inspect

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, LlamaModel
from transformers.masking_utils import create_causal_mask
from transformers.modeling_outputs import BaseModelOutputWithPast
from transformers.models.llama.modeling_llama import LlamaDecoderLayer

from testtime.data.encode import MAX_GRID_INDEX, grid_positions, unpack_positions
from testtime.model.attention import DOCUMENT_ATTENTION, BlockMask, DocumentSpans

MODEL_TYPE = "testtime_grid"
# Attention implementations whose kernel applies causality itself when given no mask (SDPA's is_causal).
_IS_CAUSAL_IMPLS = ("sdpa", DOCUMENT_ATTENTION)


def cache_kw(fn) -> str:
    """The keyword `fn` takes a KV cache by: transformers renamed `past_key_values` to `cache` (5.2x, the old name
    removed in 5.40); speak whichever this install speaks, so the tested range (pyproject.toml) stays warning-free."""
    return "cache" if "cache" in inspect.signature(fn).parameters else "past_key_values"


# Read once at import: the forward pass (every decoding step on a CPU) should not inspect signatures.
_MASK_CACHE_KW = cache_kw(create_causal_mask)
_LAYER_CACHE_KW = cache_kw(LlamaDecoderLayer.forward)
_OUT_CACHE_KW = "cache" if "cache" in BaseModelOutputWithPast.__dataclass_fields__ else "past_key_values"


class GridLlamaConfig(LlamaConfig):
    model_type = MODEL_TYPE


class GridRotaryEmbedding(nn.Module):
    """cos/sin for packed (grid, row, column) positions; the frequencies follow the config's rope_theta.

    The angles come from a table of every axis value times every frequency, built once, which each call only indexes:
    computed from the positions instead, Inductor folded the pow and cos into every layer's rotary kernel, once per
    head (7.35 of 95.6 ms a pretraining step on an H100). The table's values are the same products, so the same bits
    where it is built on the device that computed them before (a table built on the CPU and moved to a GPU may differ
    from the GPU's own cos in the last bit of a float32).
    """

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.theta = float(config.rope_parameters["rope_theta"])
        # Not saved with the weights (a checkpoint holds none), so loading rebuilds it: `RebuildsRotaryTable`.
        self.register_buffer("table", self.angles(), persistent=False)

    def angles(self, device=None) -> torch.Tensor:
        """[2, values, dim/2]: cos and sin of every axis value (0 .. MAX_GRID_INDEX) times each frequency."""
        half = torch.arange(0, self.dim, 2, device=device, dtype=torch.float)
        inv_freq = 1.0 / (self.theta ** (half / self.dim))
        values = torch.arange(MAX_GRID_INDEX + 1, device=device, dtype=torch.float)
        angles = values[:, None] * inv_freq
        return torch.stack([angles.cos(), angles.sin()])

    # False: compute the angles from the positions in every call, as before 2026-12-07 (benchmarks/bench_pretrain.py
    # times the two).
    from_table = True

    def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        freq = torch.arange(self.dim // 2, device=x.device)
        grid, row, col = unpack_positions(position_ids.long())
        coords = torch.stack([row, col, grid], -1)  # [B, T, 3]: (row, column, grid)
        value = coords[..., freq % 3]  # [B, T, dim/2]: frequency i turns with axis i % 3
        if self.from_table:
            cos, sin = self.table[0][value, freq], self.table[1][value, freq]
        else:
            angles = value.float() * (1.0 / (self.theta ** (2 * freq.float() / self.dim)))
            cos, sin = angles.cos(), angles.sin()
        return torch.cat((cos, cos), dim=-1).to(x.dtype), torch.cat((sin, sin), dim=-1).to(x.dtype)


class LoopedCache:
    """A KV cache as one pass of looped layers sees it: unique layer i of pass p reads and writes entry
    p * unique + i, so each pass keeps its own keys and values (the weights are shared, the activations are not)."""

    def __init__(self, cache, offset: int) -> None:
        self.cache, self.offset = cache, offset

    def update(self, key_states, value_states, layer_idx: int, *args, **kwargs):
        return self.cache.update(key_states, value_states, layer_idx + self.offset, *args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self.cache, name)


class TaskEmbedding(nn.Module):
    """One learned vector per pretraining task, added to every token's input embedding.

    Added rather than prepended as a prefix token: a prefix would need a position of its own in the (grid, row,
    column) scheme, shift every prompt, answer budget and cache length, and change packing's row lengths; a vector
    added to each token leaves the sequence, its positions and every engine path as they are. `task_index` is [B]
    (a task per row) or [B, T] (a task per token: packed rows hold several tasks); -1, or no index at all, means a
    task the table does not know, which gets the mean of the rows (test time starts a new task from there)."""

    def __init__(self, n_tasks: int, hidden: int) -> None:
        super().__init__()
        self.table = nn.Embedding(n_tasks, hidden)

    def mean(self) -> torch.Tensor:
        return self.table.weight.mean(0)

    def forward(self, embeds: torch.Tensor, task_index: torch.Tensor | None = None) -> torch.Tensor:
        if task_index is None:
            return embeds + self.mean().to(embeds.dtype)
        idx = task_index if task_index.dim() == 2 else task_index[:, None]
        vec = torch.where((idx >= 0)[..., None], self.table(idx.clamp(min=0)), self.mean())
        return embeds + vec.to(embeds.dtype)


def unique_layers(config) -> int:
    """Layers with weights of their own: `num_hidden_layers` over `loops`."""
    return config.num_hidden_layers // getattr(config, "loops", 1)


class RebuildsRotaryTable:
    """`from_pretrained` that fills the rotary table: transformers builds the model on the meta device and, at least in
    some versions, never fills a buffer the checkpoint lacks. Mixed into the decoder and the causal LM, so either
    class (or AutoModelForCausalLM, which calls the latter), with or without `output_loading_info`, gets it."""

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        out = super().from_pretrained(*args, **kwargs)
        for module in (out[0] if isinstance(out, tuple) else out).modules():
            if isinstance(module, GridRotaryEmbedding):
                with torch.no_grad():
                    module.table.copy_(module.angles(module.table.device))
        return out


class GridLlamaModel(RebuildsRotaryTable, LlamaModel):
    config_class = GridLlamaConfig
    # True: build transformers' causal mask even for whole sequences with no mask, as before 2026-12
    # (benchmarks/bench_pretrain.py times the two).
    always_build_mask = False

    def __init__(self, config: GridLlamaConfig) -> None:
        super().__init__(config)
        self.rotary_emb = GridRotaryEmbedding(config)
        self.loops = getattr(config, "loops", 1)
        if config.num_hidden_layers % self.loops:
            raise ValueError(f"num_hidden_layers {config.num_hidden_layers} is not a multiple of loops {self.loops}")
        del self.layers[unique_layers(config):]
        # A vector per pass added to the residual stream before it (a Universal Transformer's step embedding), so
        # shared layers can tell their passes apart; zero at the start, so a fresh model is plain weight tying.
        self.loop_embed = nn.Parameter(torch.zeros(self.loops, config.hidden_size)) if self.loops > 1 else None
        names = getattr(config, "task_names", None)
        self.task_embedding = TaskEmbedding(len(names), config.hidden_size) if names else None

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, cache=None, inputs_embeds=None,
                use_cache=None, past_key_values=None, task_index=None, **kwargs) -> BaseModelOutputWithPast:
        cache = cache if cache is not None else past_key_values
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        if use_cache and cache is None:
            from transformers import DynamicCache

            cache = DynamicCache(config=self.config)
        if position_ids is None:
            if input_ids is None or (cache is not None and cache.get_seq_length() > 0):
                raise ValueError("a grid model needs position_ids (testtime.data.encode.grid_positions) to continue a "
                                 "cached sequence or to read embeddings")
            position_ids = grid_positions(input_ids)
        if isinstance(attention_mask, BlockMask | DocumentSpans) or getattr(attention_mask, "ndim", 2) == 4:
            causal_mask = attention_mask  # a prepared mask: packed documents (testtime.model.attention.document_mask)
        elif (attention_mask is None and cache is None and not self.always_build_mask
              and self.config._attn_implementation in _IS_CAUSAL_IMPLS):
            # Whole sequences, no padding mask: SDPA's is_causal runs the flash kernel. create_causal_mask would
            # build a [B, 1, T, T] mask under torch.compile (transformers < 5.25 never skips it while tracing),
            # which sends every layer to a slower kernel that reads that mask.
            causal_mask = None
        else:
            # The mask never sees the packed positions: HF would read their jumps as boundaries of packed documents.
            causal_mask = create_causal_mask(config=self.config, inputs_embeds=inputs_embeds,
                                             attention_mask=attention_mask, position_ids=None,
                                             **{_MASK_CACHE_KW: cache})
        hidden = inputs_embeds
        if self.task_embedding is not None:
            hidden = self.task_embedding(hidden, task_index)
        elif task_index is not None:
            raise ValueError("task_index given to a model without a per-task embedding")
        position_embeddings = self.rotary_emb(hidden, position_ids)
        unique = len(self.layers)
        for p in range(self.loops):
            if self.loop_embed is not None:
                hidden = hidden + self.loop_embed[p].to(hidden.dtype)
            view = cache if cache is None or p == 0 else LoopedCache(cache, p * unique)
            for layer in self.layers:
                hidden = layer(hidden, attention_mask=causal_mask, position_embeddings=position_embeddings,
                               position_ids=position_ids, use_cache=use_cache, **{_LAYER_CACHE_KW: view}, **kwargs)
        return BaseModelOutputWithPast(last_hidden_state=self.norm(hidden), **{_OUT_CACHE_KW: cache})


class GridLlamaForCausalLM(RebuildsRotaryTable, LlamaForCausalLM):
    config_class = GridLlamaConfig

    def __init__(self, config: GridLlamaConfig) -> None:
        super().__init__(config)
        self.model = GridLlamaModel(config)
        self.post_init()

    def prepare_inputs_for_generation(self, input_ids, **kwargs):
        # HF's generate would pass flat positions; the grid ones come from every token so far.
        inputs = super().prepare_inputs_for_generation(input_ids, **kwargs)
        ids = inputs.get("input_ids")
        if ids is not None:
            inputs["position_ids"] = grid_positions(input_ids)[:, -ids.shape[1]:]
        return inputs


def is_grid_model(model) -> bool:
    return getattr(getattr(model, "config", None), "model_type", None) == MODEL_TYPE


def task_names(model) -> list[str]:
    """The pretraining tasks a model holds a vector for, in table order (none: no per-task embedding)."""
    return list(getattr(model.config.get_text_config(), "task_names", None) or [])


def flop_params(model) -> int:
    """Parameters that cost matmul FLOPs per token, counted once per pass: looped layers count `loops` times, a
    per-task embedding (a lookup) not at all. Equals the parameter count for a model with neither."""
    layers = getattr(getattr(model, "model", None), "layers", None)
    loops = getattr(model.config.get_text_config(), "loops", 1)
    n = sum(p.numel() for p in model.parameters())
    if loops > 1 and layers is not None:
        n += (loops - 1) * sum(p.numel() for p in layers.parameters())
    table = getattr(getattr(model, "model", None), "task_embedding", None)
    return n - (sum(p.numel() for p in table.parameters()) if table is not None else 0)


AutoConfig.register(MODEL_TYPE, GridLlamaConfig, exist_ok=True)
AutoModelForCausalLM.register(GridLlamaConfig, GridLlamaForCausalLM, exist_ok=True)

