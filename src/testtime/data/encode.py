"""The one place where tasks become token ids and generated tokens become grids again.

Two codecs share one sequence layout:

    [bos] (<input> grid <output> grid <end>)* <input> query <output> | answer <end>

- `GridCodec`: our compact tokenizer, one token per cell, built locally (no download).
- `TextCodec`: any Hugging Face tokenizer; grids are rows of digits, as in the paper.

Training, TTT, inference and scoring all go through `encode_example`/`decode_grid`, so
there is exactly one grid<->tokens convention in the project.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from testtime.core import jsonio
from testtime.data.tasks import MAX_SIDE, N_COLORS, Example, Grid, freeze

# Compact vocabulary: token id == color for 0..9, so grids encode with numpy alone.
NEWLINE, INPUT, OUTPUT, END, BOS, EOS, PAD, UNK = range(10, 18)
SPECIAL_TOKENS = {"\n": NEWLINE, "<input>": INPUT, "<output>": OUTPUT, "<end>": END,
                  "<bos>": BOS, "<eos>": EOS, "<pad>": PAD, "<unk>": UNK}
GRID_VOCAB = {**{str(c): c for c in range(N_COLORS)}, **SPECIAL_TOKENS}
GRID_TOKENIZER_MARK = "testtime-grid"
# Longest answer a query can have: 30 rows of 30 cells and a newline, plus the end token.
MAX_ANSWER_TOKENS = MAX_SIDE * (MAX_SIDE + 1) + 1


def build_grid_tokenizer():
    """A real `PreTrainedTokenizerFast` for the compact vocabulary, made locally from a `tokenizers` model."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(GRID_VOCAB, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        additional_special_tokens=["<input>", "<output>", "<end>"],
        name_or_path=GRID_TOKENIZER_MARK,
    )
    fast.init_kwargs["testtime_codec"] = "grid"
    return fast


@dataclass(frozen=True)
class Encoded:
    """One sequence: token ids, which tokens carry loss, and what had to be left out."""

    input_ids: np.ndarray  # int64 [T]
    loss_mask: np.ndarray  # bool [T]: True where the token is a target to learn
    prompt_len: int  # ids[:prompt_len] is the prompt; the query's answer starts there
    demos_used: tuple[int, ...]  # indices into the demos given, in sequence order
    dropped: tuple[int, ...] = ()  # demos left out to fit the length budget

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass(frozen=True)
class Decoded:
    grid: Grid | None
    error: str | None = None

    @property
    def valid(self) -> bool:
        return self.grid is not None


class TooLongError(ValueError):
    pass


class Codec(Protocol):
    pad_id: int
    stop_ids: frozenset[int]

    def bos(self) -> list[int]: ...
    def input_piece(self, grid: Grid) -> np.ndarray: ...
    def output_marker(self) -> np.ndarray: ...
    def answer_piece(self, grid: Grid) -> np.ndarray: ...
    def decode_grid(self, ids: Sequence[int]) -> Decoded: ...
    def answer_budget(self, demos: Sequence[Example], query: Grid) -> int: ...


def _parse_rows(rows: list[list[int]]) -> Decoded:
    """Shared validity check for decoded rows (both codecs end here)."""
    if not rows:
        return Decoded(None, "empty output")
    if len(rows) > MAX_SIDE:
        return Decoded(None, f"{len(rows)} rows, more than {MAX_SIDE}")
    width = len(rows[0])
    if width == 0:
        return Decoded(None, "empty row")
    for i, r in enumerate(rows):
        if len(r) != width:
            return Decoded(None, f"ragged: row {i} has {len(r)} cells, row 0 has {width}")
    if width > MAX_SIDE:
        return Decoded(None, f"{width} columns, more than {MAX_SIDE}")
    return Decoded(freeze(np.asarray(rows, dtype=np.uint8)))


@dataclass
class GridCodec:
    """Codec for the compact grid tokenizer: ids are built with numpy, no tokenizer call."""

    pad_id: int = PAD
    stop_ids: frozenset[int] = field(default=frozenset({END, EOS}))

    def bos(self) -> list[int]:
        return [BOS]

    @staticmethod
    def grid_ids(grid: Grid) -> np.ndarray:
        h, w = grid.shape
        out = np.empty((h, w + 1), dtype=np.int64)
        out[:, :w] = grid
        out[:, w] = NEWLINE
        return out.ravel()

    def input_piece(self, grid: Grid) -> np.ndarray:
        return np.concatenate([[INPUT], self.grid_ids(grid)])

    def output_marker(self) -> np.ndarray:
        return np.array([OUTPUT], dtype=np.int64)

    def answer_piece(self, grid: Grid) -> np.ndarray:
        return np.concatenate([self.grid_ids(grid), [END]])

    def answer_budget(self, demos: Sequence[Example], query: Grid) -> int:
        # Outputs in ARC are rarely larger than the largest grid the task shows; keep room for that.
        sides = [g.shape for e in demos for g in (e.input, e.output) if g is not None] + [query.shape]
        h = max(s[0] for s in sides)
        w = max(s[1] for s in sides)
        return min(MAX_ANSWER_TOKENS, h * (w + 1) + 1)

    def decode_grid(self, ids: Sequence[int]) -> Decoded:
        rows: list[list[int]] = []
        row: list[int] = []
        for t in ids:
            t = int(t)
            if t in self.stop_ids:
                break
            if t == NEWLINE:
                rows.append(row)
                row = []
            elif 0 <= t < N_COLORS:
                row.append(t)
            else:
                return Decoded(None, f"unexpected token {t} inside a grid")
        else:
            return Decoded(None, "no end token: output was cut off")
        if row:
            return Decoded(None, "last row not terminated by a newline")
        return _parse_rows(rows)


class TokenCache:
    """Token ids of the texts a format keeps re-encoding (markers, recurring grids), each tokenized once."""

    LIMIT = 100_000  # entries; past it new texts are tokenized but not kept

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self._ids: dict[str, np.ndarray] = {}

    def __call__(self, text: str) -> np.ndarray:
        ids = self._ids.get(text)
        if ids is None:
            ids = np.asarray(self.tokenizer.encode(text, add_special_tokens=False), dtype=np.int64)
            if len(self._ids) < self.LIMIT:
                self._ids[text] = ids
        return ids


def special_ids(tokenizer) -> tuple[int, int, list[int]]:
    """(eos, pad, [bos] or []) of any HF tokenizer; pad falls back to eos, which many LMs lack a pad for."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("tokenizer has no eos token; the text formats need one to end answers")
    pad = tokenizer.pad_token_id
    bos = tokenizer.bos_token_id
    return int(eos), int(pad) if pad is not None else int(eos), [] if bos is None else [int(bos)]


class TextCodec:
    """Codec for any Hugging Face tokenizer: grids as lines of digits, pieces tokenized separately.

    Tokenizing each piece on its own keeps piece boundaries (and so the loss mask) exact,
    whatever merges the tokenizer would make across them.
    """

    INPUT_TEXT = "input:\n"
    OUTPUT_TEXT = "output:\n"

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.eos, self.pad_id, self._bos = special_ids(tokenizer)
        self.stop_ids = frozenset({self.eos})
        # Special tokens (unk, pad, bos...) inside an answer make it malformed; decode() would drop them silently.
        self._special = frozenset(int(i) for i in tokenizer.all_special_ids) - {self.eos}
        self._n_vocab = len(tokenizer)  # ids past it (padded embedding rows) decode to nothing
        self._ids = TokenCache(tokenizer)

    @staticmethod
    def grid_text(grid: Grid) -> str:
        return "".join("".join(map(str, row)) + "\n" for row in grid.tolist())

    def bos(self) -> list[int]:
        return list(self._bos)

    def input_piece(self, grid: Grid) -> np.ndarray:
        return self._ids(self.INPUT_TEXT + self.grid_text(grid))

    def output_marker(self) -> np.ndarray:
        return self._ids(self.OUTPUT_TEXT)

    def answer_piece(self, grid: Grid) -> np.ndarray:
        # Demo answers and query answers end the same way, with eos, so the model learns to stop.
        return np.concatenate([self._ids(self.grid_text(grid)), [self.eos]])

    def answer_budget(self, demos: Sequence[Example], query: Grid) -> int:
        sides = [g.shape for e in demos for g in (e.input, e.output) if g is not None] + [query.shape]
        h = max(s[0] for s in sides)
        w = max(s[1] for s in sides)
        return len(self._ids(self.grid_text(np.zeros((h, w), dtype=np.uint8)))) + 1

    def decode_grid(self, ids: Sequence[int]) -> Decoded:
        ids = [int(t) for t in ids]
        if self.eos not in ids:
            return Decoded(None, "no end token: output was cut off")
        answer = ids[: ids.index(self.eos)]
        junk = next((t for t in answer if t in self._special or not 0 <= t < self._n_vocab), None)
        if junk is not None:
            return Decoded(None, f"unexpected token {junk} inside a grid")
        text = self.tokenizer.decode(answer, skip_special_tokens=True)
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        else:
            return Decoded(None, "last row not terminated by a newline")
        rows = []
        for i, line in enumerate(lines):
            if not line.isdigit() or not line.isascii():
                return Decoded(None, f"row {i} is {line[:40]!r}, not digits")
            rows.append([int(ch) for ch in line])
        return _parse_rows(rows)


def _piece_lengths(codec: Codec, demos: Sequence[Example]) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for e in demos:
        if e.output is None:
            raise ValueError("demonstrations need outputs")
        out.append((np.concatenate([codec.input_piece(e.input), codec.output_marker()]), codec.answer_piece(e.output)))
    return out


def prompt_lengths(codec: Codec, demos: Sequence[Example], query: Grid) -> list[int]:
    """lengths[k-1]: the `max_len` at which `encode_example(codec, demos, Example(query))` keeps k of the demos, for
    every k at once (prefix sums: each demo is encoded once). The encoder drops the longest first and keeps room for
    an answer as large as the largest grid of all of them (not only of those it keeps)."""
    sizes = np.sort(np.array([len(a) + len(b) for a, b in _piece_lengths(codec, demos)], dtype=np.int64))
    prompt = len(codec.input_piece(query)) + len(codec.output_marker())
    base = len(codec.bos()) + prompt + codec.answer_budget(demos, query)
    return (base + np.cumsum(sizes)).tolist()


def prompt_length(codec: Codec, demos: Sequence[Example], query: Grid, keep: int) -> int:
    """The `max_len` at which `encode_example(codec, demos, Example(query))` keeps `keep` of the demos (1 or more;
    see `prompt_lengths`)."""
    return prompt_lengths(codec, demos, query)[keep - 1]


def encode_example(
    codec: Codec,
    demos: Sequence[Example],
    query: Example,
    *,
    max_len: int = 8192,
    loss_on_demos: bool = True,
    min_demos: int = 1,
) -> Encoded:
    """Encode demos plus a query; with `query.output` set, the answer is appended as a target.

    Loss covers the answer and, with `loss_on_demos`, every demo output from the second on
    (the first has no earlier demo to learn from). When the sequence would exceed `max_len`
    (with room kept for the answer when it is unknown), the longest demos are dropped first,
    deterministically, and reported in `dropped`.
    """
    pieces = _piece_lengths(codec, demos)
    head = codec.bos()
    q_prompt = np.concatenate([codec.input_piece(query.input), codec.output_marker()])
    answer = codec.answer_piece(query.output) if query.output is not None else None
    reserve = len(answer) if answer is not None else codec.answer_budget(demos, query.input)
    sizes = [len(a) + len(b) for a, b in pieces]
    total = len(head) + len(q_prompt) + reserve + sum(sizes)
    dropped: list[int] = []
    if total > max_len:
        # The longest first (the later one of equal lengths), each at most once: sorted once, not searched per drop.
        for i in sorted(range(len(demos)), key=lambda i: (sizes[i], i), reverse=True):
            if total <= max_len or len(demos) - len(dropped) <= min_demos:
                break
            dropped.append(i)
            total -= sizes[i]
    gone = set(dropped)
    keep = [i for i in range(len(demos)) if i not in gone]
    if total > max_len:
        raise TooLongError(f"sequence needs {total} tokens with {len(keep)} demo(s), over the budget of {max_len}")

    ids: list[np.ndarray] = [np.asarray(head, dtype=np.int64)]
    mask: list[np.ndarray] = [np.zeros(len(head), dtype=bool)]
    for n, i in enumerate(keep):
        prompt, out = pieces[i]
        ids += [prompt, out]
        mask += [np.zeros(len(prompt), dtype=bool), np.full(len(out), loss_on_demos and n > 0)]
    ids.append(q_prompt)
    mask.append(np.zeros(len(q_prompt), dtype=bool))
    prompt_len = int(sum(len(x) for x in ids))
    if answer is not None:
        ids.append(answer)
        mask.append(np.ones(len(answer), dtype=bool))
    return Encoded(
        input_ids=np.concatenate(ids).astype(np.int64),
        loss_mask=np.concatenate(mask),
        prompt_len=prompt_len,
        demos_used=tuple(keep),
        dropped=tuple(sorted(dropped)),
    )


def is_grid_tokenizer(tokenizer) -> bool:
    return tokenizer.init_kwargs.get("testtime_codec") == "grid" or (
        tokenizer.convert_tokens_to_ids("<input>") == INPUT and tokenizer.convert_tokens_to_ids("<end>") == END
    )


def codec_for(tokenizer) -> Codec:
    """The compact codec for our own tokenizer, the text codec for anyone else's."""
    return GridCodec() if is_grid_tokenizer(tokenizer) else TextCodec(tokenizer)


def load_codec(model_path: str | Path) -> Codec:
    cfg = Path(model_path) / "tokenizer_config.json"
    if cfg.exists():
        obj = jsonio.read_json(cfg, "tokenizer config")
        if isinstance(obj, dict) and obj.get("testtime_codec") == "grid":
            return GridCodec()
    from transformers import AutoTokenizer

    return codec_for(AutoTokenizer.from_pretrained(str(model_path)))


# ---------------------------------------------------------------- grid positions
# A grid-aware model (testtime.model.grid_model) places each token at (grid, row, column) instead of one flat
# index, so "the same cell of the previous grid" is one fixed relative offset whatever the grid sizes.
# The three coordinates travel packed in one integer, so every caller that passes `position_ids` of
# shape [batch, time] works unchanged: pos = grid << 10 | row << 5 | column.
POS_COL_BITS = POS_ROW_BITS = 5
MAX_GRID_INDEX = 63  # grids past this many in one sequence share the last index
MAX_ROW_COL = (1 << POS_COL_BITS) - 1  # 31: a 30-wide row's newline sits at column 31


def pack_positions(grid, row, col):
    return (grid << (POS_ROW_BITS + POS_COL_BITS)) | (row << POS_COL_BITS) | col


def unpack_positions(pos):
    """(grid, row, column) of packed positions (torch or numpy integers)."""
    return pos >> (POS_ROW_BITS + POS_COL_BITS), (pos >> POS_COL_BITS) & MAX_ROW_COL, pos & MAX_ROW_COL


def _since_reset(reset, reset_value, inc):
    """For each t, the value before token t of a counter that token j sets to reset_value[j] where reset[j]
    and raises by one where inc[j] (reset and inc never both): a causal scan with cumsum and cummax."""
    import torch

    b, t = reset.shape
    idx = torch.arange(t, device=reset.device).expand(b, t)
    last = torch.where(reset, idx, -1).cummax(1).values  # last reset at or before j
    count = inc.long().cumsum(1)  # increments at or before j
    base = torch.where(last >= 0, reset_value.gather(1, last.clamp(min=0)), 0)
    since = count - torch.where(last >= 0, count.gather(1, last.clamp(min=0)), 0)
    after = base + since  # the counter after token j
    return torch.cat([torch.zeros_like(after[:, :1]), after[:, :-1]], 1)  # before token t = after t-1


def grid_positions(ids):
    """Packed (grid, row, column) positions of token ids [B, T] in the compact vocabulary.

    Each token sits where the tokens before it leave the cursor: `<input>`/`<output>` open the next grid at
    row 1, column 1; a newline moves to column 1 of the next row; a cell (or `<end>`) moves one column right;
    `<bos>` sits at (0, 0, 0) and resets there (so packed documents restart as if alone); padding leaves the cursor where it is, so left
    padding changes no real token's position. `next_grid_position` is the same rule one token at a time.
    """
    import torch

    marker = (ids == INPUT) | (ids == OUTPUT)
    bos, newline, pad = ids == BOS, ids == NEWLINE, ids == PAD
    ones = torch.ones_like(ids)
    zeros = torch.zeros_like(ids)
    grid = _since_reset(bos, zeros, marker)
    row = _since_reset(bos | marker, torch.where(bos, zeros, ones), newline)
    col = _since_reset(bos | marker | newline, torch.where(bos, zeros, ones), ~(bos | marker | newline | pad))
    pos = pack_positions(grid.clamp(max=MAX_GRID_INDEX), row.clamp(max=MAX_ROW_COL), col.clamp(max=MAX_ROW_COL))
    # A <bos> itself sits at the origin too: a packed row's later documents then match their positions alone.
    return torch.where(bos, torch.zeros_like(pos), pos)


def next_grid_position(pos, tok):
    """The packed position after feeding token `tok` at packed position `pos` (tensors of one shape)."""
    import torch

    grid, row, col = unpack_positions(pos)
    marker = (tok == INPUT) | (tok == OUTPUT)
    newline = tok == NEWLINE
    moves = ~(marker | newline | (tok == PAD) | (tok == BOS))
    grid = torch.where(marker, (grid + 1).clamp(max=MAX_GRID_INDEX), grid)
    row = torch.where(marker, 1, torch.where(newline, (row + 1).clamp(max=MAX_ROW_COL), row))
    col = torch.where(marker | newline, 1, torch.where(moves, (col + 1).clamp(max=MAX_ROW_COL), col))
    out = pack_positions(grid, row, col)
    return torch.where(tok == BOS, torch.zeros_like(out), out)
