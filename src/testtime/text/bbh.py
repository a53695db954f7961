"""BIG-Bench Hard's 27 tasks, built from the BIG-bench package's own files (the PyPI `bigbench` sdist).

BBH (Suzgun et al. 2022) is a selection of 27 BIG-bench tasks, 250 examples each (fewer where the source has
fewer), in one answer convention per task. No BBH package installs here; BIG-bench's sdist holds the sources:
24 tasks as JSON examples (`benchmark_tasks/NAME/task.json`) and 3 as Python programs that generate examples
(boolean_expressions, multistep_arithmetic, web_of_lies), which this module generates again in BBH's shape.
So these are BIG-bench examples in BBH's conventions, not BBH's own 250-example splits (data/text/README.md).

Answer conventions, as BBH has them (`SPECS`):
- "letters": the choices are appended to the input as "Options:\\n(A) ...\\n(B) ..." and the target is the letter;
  the task's options are the letters, ranked by likelihood. Choices keep the source's order where BBH lists them
  in a fixed order (geometric shapes, colored objects, translation errors), else they are shuffled per example
  (BIG-bench's date and temporal tasks list the right answer first in every example).
- "fixed": one small answer set for every example (Yes/No, valid/invalid, True/False), ranked; renamed where
  BBH names them otherwise (navigate True/False -> Yes/No, sports plausible/implausible -> yes/no).
- "free": generated and scored by exact match (dyck closing sequences, sorted words, counts, arithmetic results).

Every task's demonstrations and queries are drawn, seeded, from one shuffled pool of distinct inputs: the first
`demos` are the demonstrations and the rest (up to `queries`) the queries, so no query is ever a demonstration.
"""

from __future__ import annotations

import ast
import io
import json
import random
import re
import string
import tarfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testtime.text.tasks import TextTask

ROOT = "bigbench-1.0.0/bigbench/benchmark_tasks"


@dataclass(frozen=True)
class Example:
    """A source example before formatting: its text, its choices (None for free answers) and the answer."""

    text: str
    choices: tuple[str, ...] | None
    answer: str  # one of the choices, or the free answer


@dataclass(frozen=True)
class Spec:
    name: str  # BBH's name: the task's id
    source: str  # a BIG-bench folder under ROOT, or "generate:<kind>"
    answers: str  # "letters", "fixed" or "free"
    keep_order: bool = False  # letters: the choices in the source's order
    rename: dict[str, str] = field(default_factory=dict)  # fixed: BBH's names of the source's answers
    instruction: str | None = None  # None: the source's task_prefix (else its description)


def _spec(name: str, source: str | None = None, answers: str = "letters", **kw) -> Spec:
    return Spec(name, source or name, answers, **kw)


SPECS: tuple[Spec, ...] = (
    _spec("boolean_expressions", "generate:boolean_expressions", "fixed",
          instruction="Evaluate the result of a random Boolean expression."),
    _spec("causal_judgement", "causal_judgment", "fixed"),
    _spec("date_understanding"),
    _spec("disambiguation_qa"),
    _spec("dyck_languages", answers="free"),
    _spec("formal_fallacies", "formal_fallacies_syllogisms_negation", "fixed",
          instruction="Distinguish deductively valid arguments from formal fallacies."),
    _spec("geometric_shapes", keep_order=True),
    _spec("hyperbaton"),
    _spec("logical_deduction_five_objects", "logical_deduction/five_objects"),
    _spec("logical_deduction_seven_objects", "logical_deduction/seven_objects"),
    _spec("logical_deduction_three_objects", "logical_deduction/three_objects"),
    _spec("movie_recommendation"),
    _spec("multistep_arithmetic_two", "generate:multistep_arithmetic", "free",
          instruction="Solve multi-step arithmetic problems."),
    _spec("navigate", answers="fixed", rename={"True": "Yes", "False": "No"}),
    _spec("object_counting", answers="free"),
    _spec("penguins_in_a_table"),
    _spec("reasoning_about_colored_objects", keep_order=True),
    _spec("ruin_names"),
    _spec("salient_translation_error_detection", keep_order=True),
    _spec("snarks"),
    _spec("sports_understanding", answers="fixed", rename={"plausible": "yes", "implausible": "no"},
          instruction="Is the following sentence plausible? Answer yes or no."),
    _spec("temporal_sequences"),
    _spec("tracking_shuffled_objects_five_objects", "tracking_shuffled_objects/five_objects"),
    _spec("tracking_shuffled_objects_seven_objects", "tracking_shuffled_objects/seven_objects"),
    _spec("tracking_shuffled_objects_three_objects", "tracking_shuffled_objects/three_objects"),
    _spec("web_of_lies", "generate:web_of_lies", "fixed",
          instruction="Evaluate a random Boolean function expressed as a word problem."),
    _spec("word_sorting", answers="free"),
)
BBH_TASKS = tuple(s.name for s in SPECS)


# ---------------------------------------------------------------- JSON tasks


def _best(scores: dict[str, float]) -> str:
    return max(scores, key=lambda k: scores[k])


def _hyperbaton(text: str) -> tuple[str, tuple[str, ...]]:
    """BIG-bench: `Which sentence has the correct adjective order: a " X " b " Y " ?`; BBH lists X and Y as options."""
    m = re.fullmatch(r'\s*(.*?):?\s+a\s+"\s*(.*?)\s*"\s+b\s+"\s*(.*?)\s*"\s*\?\s*', text, re.S)
    if not m:
        raise ValueError(f"hyperbaton: unexpected input {text[:60]!r}")
    return m.group(1).rstrip(":") + "?", (m.group(2), m.group(3))


def _snarks(text: str) -> tuple[str, tuple[str, ...]]:
    """BIG-bench: `Which statement is sarcastic? (a) X (b) Y`; BBH lists X and Y as options."""
    m = re.fullmatch(r"\s*(.*?)\s*\(a\)\s*(.*?)\s*\(b\)\s*(.*?)\s*", text, re.S)
    if not m:
        raise ValueError(f"snarks: unexpected input {text[:60]!r}")
    return m.group(1), (m.group(2), m.group(3))


def _choices(name: str, scores: dict[str, float]) -> tuple[str, ...]:
    keys = tuple(scores)
    if name == "reasoning_about_colored_objects":
        # Counts come twice, "2" and "two", both right; BBH offers the words only.
        words = tuple(k for k in keys if not k.isdigit())
        return words if words else keys
    return keys


def json_examples(spec: Spec, task_json: dict) -> list[Example]:
    """The task's examples, each with its choices in the source's order and its answer."""
    out = []
    for e in task_json["examples"]:
        text = e["input"].strip()
        if "target_scores" not in e:  # free answers: a string or a list of equivalent strings
            target = e["target"]
            alts = target if isinstance(target, list) else [target]
            # object_counting gives ["three", "3"]: BBH's answers are digits.
            digits = [t for t in alts if t.strip().lstrip("-").isdigit()]
            out.append(Example(text, None, (digits or alts)[0].strip()))
            continue
        scores = e["target_scores"]
        if spec.name in ("hyperbaton", "snarks"):
            text, choices = (_hyperbaton if spec.name == "hyperbaton" else _snarks)(text)
            best = _best(scores)
            answer = choices[{"a": 0, "(a)": 0, "b": 1, "(b)": 1}[best]]
        else:
            choices = _choices(spec.name, scores)
            answer = _best({k: scores[k] for k in choices})
        if spec.answers == "free":  # dyck: every closing sequence is an option; BBH generates it
            out.append(Example(text, None, answer.strip()))
        else:
            out.append(Example(text, choices, answer))
    return out


# ---------------------------------------------------------------- generated tasks


def _evaluate(expression: str) -> Any:
    """Python's value of a Boolean or integer expression, read by `ast` (only constants, not/and/or, + - * and
    unary minus are allowed, so nothing else can run)."""

    def ev(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (bool, int)):
            return node.value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return not ev(node.operand)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -ev(node.operand)
        if isinstance(node, ast.BoolOp):
            values = [ev(v) for v in node.values]
            return all(values) if isinstance(node.op, ast.And) else any(values)
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult)):
            a, b = ev(node.left), ev(node.right)
            return a + b if isinstance(node.op, ast.Add) else a - b if isinstance(node.op, ast.Sub) else a * b
        raise ValueError(f"not allowed in an expression: {ast.dump(node)[:60]}")

    return ev(ast.parse(expression, mode="eval"))


def boolean_expressions(length: int = 8) -> list[str]:
    """Every expression of exactly `length` tokens in BIG-bench's grammar (constants True/False, not, and, or,
    parentheses), in a fixed order. BBH's examples are of length 8 ("not ( True ) and ( True ) is")."""
    start, cont, end = ("not", "(", "True", "False"), ("and", "or", ")"), ("True", "False", ")")
    follow = {"start": start, "not": start, "and": start, "or": start, "(": start,
              "True": cont, "False": cont, ")": cont}
    out: list[str] = []

    def grow(prefix: list[str], depth: int) -> None:
        if len(prefix) == length:
            if depth == 0 and prefix[-1] in end:
                out.append(" ".join(prefix))
            return
        for t in follow[prefix[-1] if prefix else "start"]:
            if t == ")" and depth == 0:
                continue
            grow(prefix + [t], depth + (t == "(") - (t == ")"))

    grow([], 0)
    return out


def generated_examples(kind: str, rng: random.Random, n: int, names: Iterable[str] = ()) -> list[Example]:
    """`n` distinct examples of a task BIG-bench generates by program, in BBH's shape."""
    seen: set[str] = set()
    out: list[Example] = []
    if kind == "boolean_expressions":
        pool = boolean_expressions()
        rng.shuffle(pool)
        return [Example(f"{e} is", ("False", "True"), str(_evaluate(e))) for e in pool[:n]]
    names = list(names)
    for _ in range(n * 50):
        if len(out) == n:
            break
        if kind == "multistep_arithmetic":  # two parenthesised groups of 4 numbers in -9..9, BBH's "two"

            def group() -> str:
                parts = [str(rng.randint(-9, 9))]
                for _ in range(3):
                    parts += [rng.choice("+-*"), str(rng.randint(-9, 9))]
                return "(" + " ".join(parts) + ")"

            expr = f"({group()} {rng.choice('+-*')} {group()})"
            text, choices, answer = f"{expr} =", None, str(_evaluate(expr))
        elif kind == "web_of_lies":  # 5 people, each saying whether the one before tells the truth
            who = rng.sample(names, 5)
            truth = rng.choice((True, False))
            sentences = [f"{who[0]} {'tells the truth' if truth else 'lies'}."]
            for i in range(1, 5):
                says = rng.choice((True, False))
                truth = truth == says
                sentences.append(f"{who[i]} says {who[i - 1]} {'tells the truth' if says else 'lies'}.")
            text = f"Question: {' '.join(sentences)} Does {who[4]} tell the truth?"
            choices, answer = ("No", "Yes"), "Yes" if truth else "No"
        else:
            raise ValueError(f"no generator for {kind!r}")
        if text not in seen:
            seen.add(text)
            out.append(Example(text, choices, answer))
    return out


def web_of_lies_names(task_py: str) -> list[str]:
    """The names BIG-bench's web_of_lies/task.py draws from (its `_names` list)."""
    for node in ast.walk(ast.parse(task_py)):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_names" for t in node.targets):
            return [str(v) for v in ast.literal_eval(node.value)]
    raise ValueError("web_of_lies/task.py: no _names list")


# ---------------------------------------------------------------- one task


def bbh_text_task(spec: Spec, examples: list[Example], instruction: str, *, demos: int = 10, queries: int = 250,
                  seed: int = 0, max_chars: int | None = None, dev: int = 0,
                  more: list[Example] | None = None) -> tuple[TextTask, TextTask | None]:
    """`demos` demonstrations and up to `queries` queries from `examples` (seeded by seed and task), in the spec's
    answer convention. Examples that repeat (the same text and choices) are kept once, so a query never equals a
    demonstration. With `dev`, also a development task: the same demonstrations and up to `dev` other queries,
    from the examples left over (or from `more`, for a generated task), for tuning apart from the queries scored.
    The task itself does not depend on `dev`."""
    rng = random.Random(f"{seed}:{spec.name}")
    seen: set[tuple[str, tuple[str, ...]]] = set()

    def distinct(items: list[Example]) -> list[Example]:
        out = []
        for e in items:
            key = (e.text, tuple(sorted(e.choices or ())))
            if key not in seen and (max_chars is None or len(e.text) <= max_chars):
                seen.add(key)
                out.append(e)
        return out

    pool = distinct(examples)
    rng.shuffle(pool)
    pool, rest = pool[: demos + queries], pool[demos + queries:]
    if more is not None:
        rest = distinct(more)
    if len(pool) <= demos:
        raise ValueError(f"{spec.name}: {len(pool)} usable examples, need more than {demos}")

    def formatted(items: list[Example]) -> tuple[list[tuple[str, str]], int]:
        pairs, width = [], 0
        for e in items:
            if spec.answers == "letters":
                assert e.choices is not None
                choices = list(e.choices)
                if not spec.keep_order:
                    rng.shuffle(choices)
                letters = [f"({c})" for c in string.ascii_uppercase[: len(choices)]]
                width = max(width, len(choices))
                text = e.text + "\nOptions:\n" + "\n".join(f"{ltr} {c}" for ltr, c in zip(letters, choices, strict=True))
                pairs.append((text, letters[choices.index(e.answer)]))
            elif spec.answers == "fixed":
                pairs.append((e.text, spec.rename.get(e.answer, e.answer)))
            else:
                pairs.append((e.text, e.answer))
        return pairs, width

    def options(width: int, items: list[Example]) -> tuple[str, ...] | None:
        if spec.answers == "letters":
            return tuple(f"({c})" for c in string.ascii_uppercase[:width])
        if spec.answers == "fixed":
            return tuple(sorted({spec.rename.get(c, c) for e in items for c in e.choices or ()}))
        return None

    pairs, width = formatted(pool)
    task = TextTask(spec.name, instruction, tuple(pairs[:demos]), tuple(pairs[demos:]), options(width, pool))
    extra, extra_width = formatted(rest[:dev])
    if not extra:
        return task, None
    return task, TextTask(spec.name, instruction, task.demos, tuple(extra),
                          options(max(width, extra_width), pool + rest[:dev]))


# ---------------------------------------------------------------- the sdist


def read_sources(sdist: str | Path, specs: Iterable[Spec] = SPECS) -> dict[str, bytes]:
    """The files the specs need from the sdist (task.json of JSON tasks, web_of_lies/task.py), in one pass."""
    want = {f"{ROOT}/{s.source}/task.json": s.source for s in specs if not s.source.startswith("generate:")}
    want[f"{ROOT}/web_of_lies/task.py"] = "web_of_lies.py"
    out: dict[str, bytes] = {}
    with tarfile.open(sdist) as tar:
        for member in tar:
            if member.name in want:
                f = tar.extractfile(member)
                if f is not None:
                    out[want[member.name]] = f.read()
    missing = sorted(set(want.values()) - set(out))
    if missing:
        raise ValueError(f"{sdist}: no {', '.join(missing)} (is it bigbench-1.0.0.tar.gz?)")
    return out


def build_bbh(sdist: str | Path, *, demos: int = 10, queries: int = 250, seed: int = 0,
              max_chars: int | None = None, names: Iterable[str] | None = None, dev: int = 0,
              say: Callable[[str], None] | None = None) -> tuple[list[TextTask], list[TextTask]]:
    """BBH's tasks (all 27, or `names`) from the sdist, in BBH's order; and, with `dev`, their development tasks
    (the same demonstrations, up to `dev` other queries; a task whose source has nothing left over has none)."""
    chosen = [s for s in SPECS if names is None or s.name in set(names)]
    unknown = set(names or ()) - set(BBH_TASKS)
    if unknown:
        raise ValueError(f"not BBH tasks: {', '.join(sorted(unknown))}")
    files = read_sources(sdist, chosen)
    people = web_of_lies_names(files["web_of_lies.py"].decode())
    tasks, devs = [], []
    for spec in chosen:
        more = None
        if spec.source.startswith("generate:"):
            kind = spec.source.split(":", 1)[1]
            examples = generated_examples(kind, random.Random(f"{seed}:generate:{kind}"), demos + queries, people)
            if dev:  # drawn apart, so the task's own examples are those it has without dev
                more = generated_examples(kind, random.Random(f"{seed}:dev:{kind}"), dev + demos + queries, people)
            instruction = spec.instruction or ""
        else:
            task_json = json.load(io.BytesIO(files[spec.source]))
            examples = json_examples(spec, task_json)
            instruction = spec.instruction or (task_json.get("task_prefix") or task_json.get("description") or "")
        task, dev_task = bbh_text_task(spec, examples, instruction.strip(), demos=demos, queries=queries, seed=seed,
                                       max_chars=max_chars, dev=dev, more=more)
        if say:
            kind = f"{len(task.options)} options" if task.options else "generated"
            extra = f", {len(dev_task.queries)} dev queries" if dev_task else ""
            say(f"{task.id}: {len(task.demos)} demos, {len(task.queries)} queries{extra}, {kind}")
        tasks.append(task)
        if dev_task:
            devs.append(dev_task)
    return tasks, devs
