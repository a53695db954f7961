"""What pretraining trains: a fresh grid model (looped, with a per-task embedding, as its config says), the Hugging
Face LM of `init_from`, or a model object handed in; with the shape its MFU is computed from and, for a model with a
per-task embedding, the row of each training task."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from testtime.data.encode import Codec, GridCodec
from testtime.data.sources import Source
from testtime.model.grid_model import flop_params, task_names
from testtime.model.loading import build_model


class Start(NamedTuple):
    """What training starts from, and the shape its MFU is computed with."""

    model: Any
    tokenizer: Any  # None: the grid tokenizer, written at export
    codec: Codec
    matmul_params: int  # parameters less an LLM's input embedding, looped layers once per pass (see flops_per_token)
    layers: int  # layers a token passes through (looped layers once per pass)
    hidden: int


def training_task_names(sources: Sequence[Source]) -> list[str]:
    """The rows of a fresh per-task embedding: every task id of the training sources, once, sorted. A task that
    several sources hold (an ARC-AGI-1 training task and its RE-ARC generator) shares one row."""
    return sorted({i for s in sources for i in s.task_ids()})


def task_rows(model) -> dict[str, int] | None:
    """Each task's row in `model`'s per-task embedding, for the data to tag its sequences; None without one."""
    names = task_names(model)
    return {name: i for i, name in enumerate(names)} if names else None


def init_model(cfg: Any, device: str, start: tuple[Any, Any, Codec] | None = None,
               sources: Sequence[Source] = ()) -> Start:
    """A fresh model from `cfg.model` (a `PretrainConfig`; a per-task embedding gets a row for each task of the
    training `sources`), the Hugging Face LM of `cfg.init_from`, or `start`: (a model object, its tokenizer or None,
    its codec), trained in place."""
    import torch

    from testtime.model.loading import load_model

    if start is not None:
        model, tokenizer, codec = start
        model = model.to(device)
        text = model.config.get_text_config()
        emb = model.get_input_embeddings().weight
        n = flop_params(model) - (emb.numel() if text.vocab_size > 4096 else 0)
        return Start(model, tokenizer, codec, n, text.num_hidden_layers, text.hidden_size)
    if cfg.init_from is None:
        names = training_task_names(sources) if cfg.model.task_embedding else ()
        model = build_model(cfg.model, names).to(device)
        return Start(model, None, GridCodec(), flop_params(model), cfg.model.num_layers * cfg.model.loops,
                     cfg.model.hidden_size)
    loaded = load_model(cfg.init_from, device="cpu", dtype=torch.float32)  # fp32 master weights; autocast runs bf16
    model = loaded.model.to(device)
    emb = model.get_input_embeddings().weight
    if not cfg.train_embeddings:
        for module in (model.get_input_embeddings(), model.get_output_embeddings()):
            for p in module.parameters():
                p.requires_grad_(False)
    text = model.config.get_text_config()
    return Start(model, loaded.tokenizer, loaded.codec, flop_params(model) - emb.numel(), text.num_hidden_layers,
                 text.hidden_size)
