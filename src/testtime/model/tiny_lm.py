"""Tiny randomly initialised causal LMs of several architectures, with a tokenizer built locally.

For tests and smoke runs of the bring-your-own-model path: no download, a few seconds on a CPU.

    tok = byte_bpe_tokenizer()
    model = tiny_causal_lm("qwen3", tok)
    save_tiny(model, tok, folder)        # a standard Hugging Face folder; load_model(folder) reads it
"""

from __future__ import annotations

from pathlib import Path

# Text the BPE merges are learned from: grid rows, the text-task prompt words, a little English.
_CORPUS = [
    "input:\n0123\n4567\n89\noutput:\n",
    "Input: not ( True and False ) or True\nOutput: True\n",
    "Input: ( [ { < > } ] )\nOutput: ) ]\n",
    "Sort the following words alphabetically: apple banana cherry\n",
    "Answer with the option that fits. yes no A B C D",
] * 4

ARCHITECTURES = ("llama", "qwen2", "qwen3", "mistral", "gemma3")


def byte_bpe_tokenizer(vocab_size: int = 320, pad: bool = True, bos: bool = True):
    """A byte-level BPE `PreTrainedTokenizerFast` trained on a tiny corpus: any text encodes, merges are real.

    `pad=False` gives a tokenizer without a pad token (as many released LMs ship); `bos=False` one without bos.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>"] + (["<|pad|>"] if pad else []) + (["<|bos|>"] if bos else [])
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|endoftext|>",
        pad_token="<|pad|>" if pad else None,
        bos_token="<|bos|>" if bos else None,
    )


def tiny_causal_lm(arch: str, tokenizer, *, hidden: int = 32, layers: int = 2, seed: int = 0, **overrides):
    """A random `*ForCausalLM` of the named architecture sized for the tokenizer (fp32, eval mode).

    Gemma 3 gets alternating sliding-window/full layers with a short window, so prompts cross it.
    """
    import torch
    import transformers as tf

    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=4096,
        initializer_range=0.2,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    if arch == "llama":
        cfg = tf.LlamaConfig(**common)
    elif arch == "qwen2":
        cfg = tf.Qwen2Config(**common, tie_word_embeddings=True)
    elif arch == "qwen3":
        cfg = tf.Qwen3Config(**common, head_dim=16)
    elif arch == "mistral":
        cfg = tf.MistralConfig(**common, sliding_window=24)
    elif arch == "gemma3":
        cfg = tf.Gemma3TextConfig(
            **common,
            head_dim=16,
            sliding_window=16,
            query_pre_attn_scalar=16,
            layer_types=["sliding_attention", "full_attention"] * (layers // 2) + ["sliding_attention"] * (layers % 2),
        )
    else:
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(ARCHITECTURES)}")
    for k, v in overrides.items():
        setattr(cfg, k, v)
    torch.manual_seed(seed)
    return tf.AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa").eval()


def save_tiny(model, tokenizer, path: str | Path) -> Path:
    path = Path(path)
    model.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path
