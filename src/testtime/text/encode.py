"""The one place text tasks become token ids, and generated tokens become answers again.

Layout (each piece tokenized on its own, so the loss mask falls exactly on answers):

    [bos] instruction "\\n\\n"  ("Input: " x "\\nOutput:" | " " y "\\n" | "\\n")*  "Input: " q "\\nOutput:" | " " answer "\\n"

An answer ends with its newline (targets are one line), so decoding stops at the first token
holding a newline (or eos), and ranking options scores the newline too: a prefix of a longer
option does not win by being short.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from testtime.data.encode import Encoded, TokenCache, TooLongError, special_ids


class TextFormat:
    """Prompt format for text tasks over any Hugging Face tokenizer; also what `greedy_generate` needs of a codec."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.eos, self.pad_id, self._bos = special_ids(tokenizer)
        self.ids = TokenCache(tokenizer)
        self._stop: frozenset[int] | None = None

    @property
    def stop_ids(self) -> frozenset[int]:
        """eos and every token whose text holds a newline (built once, on first use)."""
        if self._stop is None:
            vocab = self.tokenizer.get_vocab()
            ids = sorted(vocab.values())
            texts = self.tokenizer.batch_decode([[i] for i in ids])
            self._stop = frozenset({self.eos, *(i for i, t in zip(ids, texts, strict=True) if "\n" in t)})
        return self._stop

    def head(self, instruction: str) -> np.ndarray:
        text = instruction.strip() + "\n\n" if instruction.strip() else ""
        return np.concatenate([np.asarray(self._bos, dtype=np.int64), self.ids(text) if text else []]).astype(np.int64)

    def question(self, x: str, first: bool) -> np.ndarray:
        return self.ids(("" if first else "\n") + f"Input: {x}\nOutput:")

    def answer(self, y: str) -> np.ndarray:
        return self.ids(f" {y.strip()}\n")

    def encode(
        self,
        instruction: str,
        demos: Sequence[tuple[str, str]],
        query: str | None = None,
        answer: str | None = None,
        *,
        max_len: int = 8192,
        answer_room: int = 0,
        loss_on_demos: bool = True,
    ) -> Encoded:
        """Instruction, demos in the order given, then the query (its answer appended when given).

        Loss covers every demo answer (with `loss_on_demos`) and the query's answer. With `query=None`
        the sequence is the demos alone (a TTT sequence). Demos are dropped, longest first, to fit
        `max_len` with `answer_room` tokens kept free for an answer still to be generated.
        """
        head = self.head(instruction)
        blocks = [(self.question(x, n == 0), self.answer(y)) for n, (x, y) in enumerate(demos)]
        q = self.question(query, not demos) if query is not None else np.zeros(0, dtype=np.int64)
        a = self.answer(answer) if answer is not None else np.zeros(0, dtype=np.int64)
        sizes = [len(p) + len(b) for p, b in blocks]
        keep = list(range(len(blocks)))
        total = len(head) + len(q) + len(a) + answer_room + sum(sizes)
        dropped = []
        while total > max_len and len(keep) > (0 if query is not None else 1):
            longest = max(keep, key=lambda i: (sizes[i], i))
            keep.remove(longest)
            dropped.append(longest)
            total -= sizes[longest]
        if total > max_len:
            raise TooLongError(f"text sequence needs {total} tokens with {len(keep)} demo(s), over {max_len}")
        ids, mask = [head], [np.zeros(len(head), dtype=bool)]
        for i in keep:
            p, b = blocks[i]
            ids += [p, b]
            mask += [np.zeros(len(p), dtype=bool), np.full(len(b), loss_on_demos)]
        ids.append(q)
        mask.append(np.zeros(len(q), dtype=bool))
        prompt_len = int(sum(len(x) for x in ids))
        ids.append(a)
        mask.append(np.ones(len(a), dtype=bool))
        return Encoded(
            np.concatenate(ids).astype(np.int64), np.concatenate(mask), prompt_len, tuple(keep), tuple(sorted(dropped))
        )

    def decode_answer(self, tokens: Sequence[int]) -> str:
        """Generated tokens -> the answer text: up to the first newline or eos, stripped."""
        toks = [int(t) for t in tokens]
        if self.eos in toks:
            toks = toks[: toks.index(self.eos)]
        text = self.tokenizer.decode(toks, skip_special_tokens=True)
        return text.split("\n", 1)[0].strip()


def normalize(answer: str | None) -> str:
    """What exact match compares: whitespace collapsed."""
    return " ".join((answer or "").split())
