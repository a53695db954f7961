"""One grid<->tokens convention: tokenizers save and load, every ARC answer survives a round trip,
the loss mask covers exactly the targets, the length budget is deterministic, and bad model output
decodes to an error instead of raising."""

import numpy as np
import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from testtime.data.encode import (
    BOS,
    END,
    EOS,
    INPUT,
    NEWLINE,
    OUTPUT,
    PAD,
    GridCodec,
    TextCodec,
    TooLongError,
    build_grid_tokenizer,
    codec_for,
    encode_example,
    is_grid_tokenizer,
    load_codec,
)
from testtime.data.tasks import Example, freeze, load_tasks

TEXT_CHARS = list("0123456789\n") + sorted(set(TextCodec.INPUT_TEXT + TextCodec.OUTPUT_TEXT) - set("\n"))


def char_tokenizer() -> PreTrainedTokenizerFast:
    """A character-level tokenizer built locally: one token per character, plus eos/pad/unk."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    vocab = {"<pad>": 0, "<unk>": 1, "<eos>": 2, **{c: i + 3 for i, c in enumerate(TEXT_CHARS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>", unk_token="<unk>")


def bpe_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on grid text, so tokens merge several digits and newlines (like real LLM tokenizers)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    rng = np.random.default_rng(0)
    corpus = [TextCodec.INPUT_TEXT, TextCodec.OUTPUT_TEXT]
    for _ in range(300):
        h, w = rng.integers(1, 12, size=2)
        g = rng.integers(0, 10, size=(h, w)) * (rng.random((h, w)) < 0.4)
        corpus.append(TextCodec.grid_text(g))
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<bos>", "<eos>", "<unk>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", unk_token="<unk>")


@pytest.fixture(scope="module")
def arc1():
    return load_tasks("arc1/train") + load_tasks("arc1/eval")


@pytest.fixture(scope="module", params=["grid", "text-char", "text-bpe"])
def codec(request):
    if request.param == "grid":
        return GridCodec()
    return TextCodec(char_tokenizer() if request.param == "text-char" else bpe_tokenizer())


def g(rows) -> np.ndarray:
    return freeze(np.asarray(rows, dtype=np.uint8))


# ---------------------------------------------------------------- tokenizers


def test_grid_tokenizer_save_and_load(tmp_path):
    tok = build_grid_tokenizer()
    tok.save_pretrained(tmp_path)
    back = AutoTokenizer.from_pretrained(str(tmp_path))
    assert back.get_vocab() == tok.get_vocab()
    for t in (tok, back):
        assert is_grid_tokenizer(t) and isinstance(codec_for(t), GridCodec)
        assert (t.bos_token_id, t.eos_token_id, t.pad_token_id) == (BOS, EOS, PAD)
        assert t.convert_tokens_to_ids(["<input>", "<output>", "<end>", "\n"]) == [INPUT, OUTPUT, END, NEWLINE]
        # The tokenizer and the numpy codec agree on what a grid looks like.
        grid = g([[0, 1, 2], [7, 8, 9]])
        codec = GridCodec()
        text = "<input>" + TextCodec.grid_text(grid) + "<output>"
        ids = t.encode(text, add_special_tokens=False)
        assert ids == [*codec.input_piece(grid).tolist(), *codec.output_marker().tolist()]
        assert t.decode(codec.grid_ids(grid).tolist()) == TextCodec.grid_text(grid)
    assert isinstance(load_codec(tmp_path), GridCodec)


def test_text_tokenizer_save_and_load(tmp_path):
    tok = char_tokenizer()
    tok.save_pretrained(tmp_path)
    back = AutoTokenizer.from_pretrained(str(tmp_path))
    assert not is_grid_tokenizer(back)
    codec = load_codec(tmp_path)
    assert isinstance(codec, TextCodec) and codec.eos == tok.eos_token_id
    grid = g([[3, 0], [0, 3]])
    assert codec.decode_grid(codec.answer_piece(grid)).grid.tolist() == grid.tolist()


def test_text_codec_needs_eos():
    tok = char_tokenizer()
    tok.eos_token = None
    with pytest.raises(ValueError, match="no eos token"):
        TextCodec(tok)


# ---------------------------------------------------------------- round trips


def test_every_arc1_answer_round_trips(codec, arc1):
    n = 0
    for task in arc1:
        for query in task.test:
            enc = encode_example(codec, task.train, query, max_len=100_000)
            answer = enc.input_ids[enc.prompt_len :]
            assert answer[-1] in codec.stop_ids
            dec = codec.decode_grid(answer)
            assert dec.valid and dec.error is None, (task.id, dec.error)
            assert dec.grid.dtype == np.uint8 and np.array_equal(dec.grid, query.output), task.id
            n += 1
        for e in task.train:
            assert np.array_equal(codec.decode_grid(codec.answer_piece(e.output)).grid, e.output)
    assert n >= 800


def test_prompt_is_answer_free(codec, arc1):
    task = arc1[0]
    with_answer = encode_example(codec, task.train, task.test[0])
    prompt_only = encode_example(codec, task.train, Example(task.test[0].input))
    assert prompt_only.prompt_len == len(prompt_only) == with_answer.prompt_len
    assert np.array_equal(prompt_only.input_ids, with_answer.input_ids[: with_answer.prompt_len])
    assert not encode_example(codec, task.train, Example(task.test[0].input), loss_on_demos=False).loss_mask.any()


# ---------------------------------------------------------------- loss mask


def _demo(seed: int, h: int, w: int) -> Example:
    rng = np.random.default_rng(seed)
    x = g(rng.integers(0, 10, size=(h, w)))
    return Example(x, g(np.ascontiguousarray(x[::-1])))


@pytest.mark.parametrize("loss_on_demos", [True, False])
def test_loss_mask_covers_exactly_the_targets(codec, loss_on_demos):
    demos = [_demo(0, 2, 3), _demo(1, 3, 1), _demo(2, 1, 4)]
    query = _demo(3, 2, 2)
    enc = encode_example(codec, demos, query, loss_on_demos=loss_on_demos)
    # Rebuild the expected mask piece by piece.
    expected = [False] * len(codec.bos())
    for n, d in enumerate(demos):
        expected += [False] * (len(codec.input_piece(d.input)) + len(codec.output_marker()))
        expected += [loss_on_demos and n > 0] * len(codec.answer_piece(d.output))
    expected += [False] * (len(codec.input_piece(query.input)) + len(codec.output_marker()))
    assert len(expected) == enc.prompt_len
    expected += [True] * len(codec.answer_piece(query.output))
    assert enc.loss_mask.tolist() == expected
    assert enc.input_ids.dtype == np.int64 and enc.loss_mask.dtype == bool
    # The masked tokens at the end are exactly the answer.
    answer = enc.input_ids[enc.loss_mask][-len(codec.answer_piece(query.output)) :]
    assert np.array_equal(codec.decode_grid(answer).grid, query.output)
    assert enc.demos_used == (0, 1, 2) and enc.dropped == ()


# ---------------------------------------------------------------- length budget


def test_budget_drops_longest_demos_deterministically():
    codec = GridCodec()
    demos = [_demo(0, 2, 2), _demo(1, 5, 5), _demo(2, 3, 3), _demo(3, 5, 5), _demo(4, 1, 1)]
    query = _demo(5, 2, 2)
    full = encode_example(codec, demos, query)
    size = {i: len(codec.input_piece(d.input)) + 1 + len(codec.answer_piece(d.output)) for i, d in enumerate(demos)}
    # Room for everything but one 5x5 demo: the later of the two equal ones goes first.
    enc = encode_example(codec, demos, query, max_len=len(full) - 1)
    assert enc.dropped == (3,) and enc.demos_used == (0, 1, 2, 4)
    assert len(enc) == len(full) - size[3] <= len(full) - 1
    # Tighter: both 5x5 demos, then the 3x3 one.
    enc = encode_example(codec, demos, query, max_len=len(full) - size[1] - size[3] - 1)
    assert enc.dropped == (1, 2, 3) and enc.demos_used == (0, 4)
    again = encode_example(codec, demos, query, max_len=len(full) - size[1] - size[3] - 1)
    assert np.array_equal(again.input_ids, enc.input_ids) and again.dropped == enc.dropped
    # Kept demos keep their order, and the mask still ends on the answer.
    assert enc.loss_mask[enc.prompt_len :].all()


def test_budget_reserves_room_for_an_unknown_answer():
    codec = GridCodec()
    demos = [_demo(0, 4, 4), _demo(1, 2, 2)]
    query = Example(_demo(2, 2, 2).input)
    reserve = codec.answer_budget(demos, query.input)
    assert reserve == 4 * 5 + 1
    prompt = encode_example(codec, demos, query)
    assert encode_example(codec, demos, query, max_len=len(prompt) + reserve).dropped == ()
    assert encode_example(codec, demos, query, max_len=len(prompt) + reserve - 1).dropped == (0,)


def test_budget_impossible_raises():
    codec = GridCodec()
    demos = [_demo(0, 10, 10), _demo(1, 10, 10)]
    query = _demo(2, 10, 10)
    with pytest.raises(TooLongError, match=r"with 1 demo\(s\), over the budget of 100"):
        encode_example(codec, demos, query, max_len=100)
    with pytest.raises(TooLongError, match="with 2 demo"):
        encode_example(codec, demos, query, max_len=300, min_demos=2)


# ---------------------------------------------------------------- malformed model output

BAD_GRID_OUTPUT = {
    "ragged rows": ([1, 2, NEWLINE, 3, NEWLINE, END], "ragged: row 1 has 1 cells"),
    "no end token": ([1, 2, NEWLINE], "no end token"),
    "nothing at all": ([], "no end token"),
    "junk token": ([1, INPUT, NEWLINE, END], f"unexpected token {INPUT} inside a grid"),
    "out of vocabulary": ([1, 999, NEWLINE, END], "unexpected token 999"),
    "empty": ([END], "empty output"),
    "empty row": ([NEWLINE, END], "empty row"),
    "too many rows": ([1, NEWLINE] * 31 + [END], "31 rows, more than 30"),
    "too many columns": ([1] * 31 + [NEWLINE, END], "31 columns, more than 30"),
    "unterminated last row": ([1, NEWLINE, 2, END], "last row not terminated"),
}


@pytest.mark.parametrize("kind", list(BAD_GRID_OUTPUT))
def test_grid_codec_decodes_bad_output_to_error(kind):
    ids, message = BAD_GRID_OUTPUT[kind]
    dec = GridCodec().decode_grid(ids)
    assert dec.grid is None and not dec.valid and message in dec.error


def test_grid_codec_stops_at_first_stop_token():
    assert GridCodec().decode_grid([1, NEWLINE, EOS, 5, 5]).grid.tolist() == [[1]]
    assert GridCodec().decode_grid(np.array([1, 2, NEWLINE, END, 9], dtype=np.int64)).grid.tolist() == [[1, 2]]


BAD_TEXT_OUTPUT = {
    "ragged rows": ("12\n3\n", True, "ragged: row 1 has 1 cells"),
    "no end token": ("12\n", False, "no end token"),
    "junk characters": ("1t\n", True, "row 0 is '1t', not digits"),
    "empty": ("", True, "empty output"),
    "blank row": ("1\n\n", True, "not digits"),
    "too many rows": ("1\n" * 31, True, "31 rows, more than 30"),
    "too many columns": ("1" * 31 + "\n", True, "31 columns, more than 30"),
    "unterminated last row": ("1\n2", True, "last row not terminated"),
}


@pytest.mark.parametrize("kind", list(BAD_TEXT_OUTPUT))
@pytest.mark.parametrize("make", [char_tokenizer, bpe_tokenizer], ids=["char", "bpe"])
def test_text_codec_decodes_bad_output_to_error(kind, make):
    text, ended, message = BAD_TEXT_OUTPUT[kind]
    tok = make()
    codec = TextCodec(tok)
    ids = tok.encode(text, add_special_tokens=False) + ([codec.eos] if ended else [])
    dec = codec.decode_grid(ids)
    assert dec.grid is None and message in dec.error


@pytest.mark.parametrize("junk", ["<unk>", "<pad>", 999, -1, 10**12])
def test_text_codec_rejects_special_and_out_of_vocab_tokens_inside_answer(junk):
    tok = char_tokenizer()
    codec = TextCodec(tok)
    one, nl = tok.convert_tokens_to_ids(["1", "\n"])
    bad = tok.convert_tokens_to_ids(junk) if isinstance(junk, str) else junk
    dec = codec.decode_grid([one, bad, nl, codec.eos])
    assert dec.grid is None and "unexpected token" in dec.error
