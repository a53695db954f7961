"""Fuzz: over a thousand seeded malformed inputs through every command, each must end as one stderr line
`error: ...` with exit code 2 and no traceback (issue 17), and the bad inputs found by hand since (issue 31), each
with what its line must say.

Every mutation below is invalid by construction (a value outside its declared range or of the wrong type, a
cut-short file, a missing part), so exit code 2 is the only right answer. Cases run in process through typer's
CliRunner; a handful run as real subprocesses, to see what a user sees (warnings, logging, exit code). Commands
that would load a model are pointed at a missing folder (GUARD): if a mutation slipped through validation the
case still ends at once, and the check that its error does not name GUARD catches it.
"""

from __future__ import annotations

import copy
import json
import os
import random
import shutil
import subprocess
import sys
import typing
from dataclasses import fields, is_dataclass
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from testtime.cli import app
from testtime.core.config import OneOf, Range, limits_of
from testtime.data.tasks import save_task, save_tasks
from testtime.model.loading import ModelConfig, build_model, save_model
from testtime.model.model_folder import SHAPE_LIMITS
from testtime.recipes.grid import EvalConfig
from testtime.recipes.pretrain import PretrainConfig
from testtime.text.run import TextEvalConfig

SEED = 17
GUARD = "missing-model-guard"
REPO = Path(__file__).resolve().parents[1]
# Only a hang guard: a case still running after this long is stuck (a blocked read, a quadratic loop). How fast a
# case ends is the machine's business, not a test's; every case ends in about a second on a quiet 2-core CPU.
HANG_GUARD_SECONDS = 300

GOOD_RECORD = {"task_id": "t0", "attempts": [[[[1, 2]], None]], "correct": [True], "score": 1.0, "seconds": 0.5,
               "votes": [[{"grid": [[1, 2]], "votes": 3, "count": 3}]], "ttt_loss": [0.5, 0.25], "invalid": 0,
               "error": None, "policy": {"name": "always", "decision": "ttt", "signals": {}, "ttt_steps": 2},
               "compute": {"ttt": 1.5}, "tokens": {"ttt": 10, "generated": 4}}
GOOD_TEXT = [{"id": "a", "instruction": "Copy.", "demos": [["1", "1"], ["2", "2"]], "queries": [["3", "3"]]},
             {"id": "b", "demos": [{"input": "x", "target": "A"}], "queries": [["y", "B"]], "options": ["A", "B"]}]


# ---------------------------------------------------------------- a world of valid inputs to break


class World:
    def __init__(self, root: Path, flip_task, synthetic_tasks) -> None:
        self.root = root
        self.task = flip_task()
        self.task_obj = json.loads(save_task(self.task, root / "task.json").read_text())
        self.task_file = root / "task.json"
        self.folder = root / "tasks"
        save_tasks(synthetic_tasks(2), self.folder)
        self.text_file = root / "text.jsonl"
        self.text_file.write_text("".join(json.dumps(t) + "\n" for t in GOOD_TEXT))
        torch.manual_seed(0)
        self.model = save_model(build_model(ModelConfig.tiny()), None, root / "model")
        self.good_run = root / "good-run"
        self.good_run.mkdir()
        (self.good_run / "results.jsonl").write_text(json.dumps(GOOD_RECORD) + "\n")
        (self.good_run / "config.json").write_text(json.dumps({"tasks": str(self.folder), "limit": 1}))
        self.grid_cfg = {"tasks": str(self.folder), "model": GUARD, "device": "cpu", "policy": "always",
                         "ttt_cfg": {"samples": 2, "epochs": 1, "rank": 2}, "predict_cfg": {"views": 1}}
        self.text_cfg = {"tasks": str(self.text_file), "model": GUARD, "device": "cpu",
                         "ttt_cfg": {"samples": 2, "epochs": 1, "rank": 2}}
        # init_from the guard: a pretraining config that slipped through would stop at loading it, before any data.
        self.pre_cfg = {"init_from": GUARD, "datasets": [str(self.folder)], "max_len": 512, "token_budget": 2048,
                        "device": "cpu", "compile": False, "log_every": 1, "val_every": 1}
        self.submission = root / "submission.json"
        self.submission.write_text(json.dumps({"t0": [{"attempt_1": [[1]], "attempt_2": [[2]]}]}))
        self.n = 0

    def case_dir(self) -> Path:
        self.n += 1
        d = self.root / "cases" / str(self.n)
        d.mkdir(parents=True)
        return d


# ---------------------------------------------------------------- values that are wrong for sure


def _bad_for_range(rng: random.Random, limit: Range, integer: bool) -> object:
    lo, hi = limit.lo, limit.hi
    below = lo if limit.lo_open else (lo - 1 if integer else lo - max(1.0, abs(lo)))
    above = hi if limit.hi_open else (hi + 1 if integer else hi * 2 + 1)
    choices = [below, above, 10**30 if integer else 1e300, "abc", ["1"], {"a": 1}, True]  # ["1"]: [1] is a valid tuple
    if integer:
        choices.append(1.5)
    else:
        choices += [float("nan"), float("inf"), float("-inf")]
    value = rng.choice(choices)
    return int(value) if integer and isinstance(value, float) and value.is_integer() else value


def _bad_value(rng: random.Random, cls: type, name: str) -> object:
    """A value that `cls`'s field `name` refuses, by its declared limits or its type."""
    hint = typing.get_type_hints(cls)[name]
    args = set(typing.get_args(hint)) or {hint}
    limits = limits_of(cls).get(name, ())
    rng_limit = next((lim for lim in limits if isinstance(lim, Range)), None)
    one_of = next((lim for lim in limits if isinstance(lim, OneOf)), None)
    if is_dataclass(hint):
        return rng.choice([3, "x", [1], None, True])
    if rng_limit is not None:
        integer = int in args or any(typing.get_args(a) == (int, ...) for a in args)
        return _bad_for_range(rng, rng_limit, integer and float not in args)
    if one_of is not None:
        return rng.choice(["nope", 5, None, ["a"]])
    if args <= {bool}:
        return rng.choice([1, 0, "yes", None, [True]])
    if str in args:  # a string field: anything but a string (a string could be a valid path or name)
        return rng.choice([5, 1.5, [1], {"a": 1}, True])
    if any(typing.get_origin(a) in (list, tuple) for a in args):
        return rng.choice(["x", 5, {"a": 1}, [1, 2.5, None]])
    return rng.choice([{"a": 1}, [[[]]]])


def _mutate_config(rng: random.Random, cls: type, obj: dict, skip: tuple[str, ...] = ()) -> dict:
    """A copy of a valid config object with one certain problem: a bad value, an unknown key, a nested config
    broken inside."""
    obj = copy.deepcopy(obj)
    names = [f.name for f in fields(cls) if f.name not in skip]
    kind = rng.random()
    if kind < 0.08:
        obj[rng.choice(["nope", "learning_rate", "ttt", "Views"]) + "_"] = 1
        return obj
    name = rng.choice(names)
    hint = typing.get_type_hints(cls)[name]
    if is_dataclass(hint) and kind < 0.6:
        inner = obj.get(name) if isinstance(obj.get(name), dict) else {}
        obj[name] = _mutate_config(rng, hint, inner)
    else:
        obj[name] = _bad_value(rng, cls, name)
    return obj


# ---------------------------------------------------------------- file-level corruptions


def _corrupt_text(rng: random.Random, text: str) -> bytes:
    kind = rng.randrange(5)
    if kind == 0:
        return text[: rng.randrange(len(text) - 1)].encode()  # cut short: a strict prefix of an object
    if kind == 1:
        return ("[" * rng.randrange(101, 5000)).encode()
    if kind == 2:
        return b"\xff\xfe" + text.encode()
    if kind == 3:
        return rng.choice([b"", b"   ", b"null", b"[]", b"7", b'"text"', b"{oops"])
    # One stray character right after an opening bracket (none of our strings holds one): never valid JSON.
    at = rng.choice([i for i, ch in enumerate(text) if ch in "[{"]) + 1
    return (text[:at] + rng.choice(["{", "}", ",", ":", "]"]) + text[at:]).encode()


# ---------------------------------------------------------------- cases by command


def task_cases(rng: random.Random, w: World, n: int):
    """Malformed task files through every command that reads one."""

    def bad_task() -> bytes:
        obj = copy.deepcopy(w.task_obj)
        kind = rng.randrange(12)
        part = rng.choice(["train", "test"])
        ex = rng.randrange(len(obj[part]))
        grid_key = "input" if part == "test" else rng.choice(["input", "output"])
        grid = obj[part][ex][grid_key]
        if kind == 0:
            r, c = rng.randrange(len(grid)), rng.randrange(len(grid[0]))
            grid[r][c] = rng.choice([10, 11, 255, -1, 1.5, "3", True, None, [1]])
        elif kind == 1:
            grid.append([0] * (len(grid[0]) + 1))
        elif kind == 2:
            obj[part][ex][grid_key] = rng.choice([[], [[]], "abc", 5, {}, [[0] * 31], [[0]] * 31, None if
                                                  grid_key == "input" else []])
        elif kind == 3:
            del obj[rng.choice(["train", "test"])]
        elif kind == 4:
            obj[rng.choice(["train", "test"])] = rng.choice([[], "x", 5, {}])
        elif kind == 5:
            obj["train"][rng.randrange(len(obj["train"]))]["output"] = None
        elif kind == 6:
            del obj["train"][rng.randrange(len(obj["train"]))]["output"]
        elif kind == 7:
            obj[part][ex] = rng.choice([5, "x", [1], None])
        elif kind == 8:
            del obj[part][ex]["input"]
        elif kind == 9:
            return json.dumps(rng.choice([[obj], "task", 3, None])).encode()
        else:
            return _corrupt_text(rng, json.dumps(obj))
        return json.dumps(obj).encode()

    for _ in range(n):
        d = w.case_dir()
        path = d / "t.json"
        path.write_bytes(bad_task())
        args = rng.choice([
            ["tasks", "show", str(path)], ["tasks", "list", str(path)],
            ["solve", str(path), "--device", "cpu", "--model", GUARD],
            ["evaluate", "--tasks", str(path), "--out", str(d / "run")],
            ["score", str(w.submission), "--solutions", str(path)],
        ])
        yield "task file", args
    for _ in range(max(1, n // 8)):  # a bad file in a folder of good ones
        d = w.case_dir()
        shutil.copytree(w.folder, d / "tasks")
        (d / "tasks" / "zz.json").write_bytes(bad_task())
        yield "task folder", rng.choice([["tasks", "list", str(d / "tasks")],
                                         ["evaluate", "--tasks", str(d / "tasks"), "--strict", "--out", str(d / "r")]])


def text_cases(rng: random.Random, w: World, n: int):
    def bad_line() -> str:
        t = copy.deepcopy(rng.choice(GOOD_TEXT))
        kind = rng.randrange(14)
        if kind == 0:
            t["id"] = rng.choice(["", 5, None, ["a"]])
        elif kind == 1:
            t["queries"] = rng.choice([[], "x", 5, None])
        elif kind == 2:
            t["demos"] = rng.choice(["x", 5, [["only input"]], [[1, "b"]], [{"input": "a"}], [["a", 3]]])
        elif kind == 3:
            t["demos"] = [["a", rng.choice(["x\ny", "", "  "])]]
        elif kind == 4:
            t["options"] = rng.choice([["A"], ["A", "A"], [1, 2], "AB", ["A", ""], ["A", "B\nC"]])
        elif kind == 5:
            t["options"], t["demos"] = ["A", "B"], [["x", "C"]]
        elif kind == 6:
            t["surprise"] = 1
        elif kind == 7:
            return json.dumps(rng.choice([[1], 5, "x", None]))
        elif kind == 8:
            text = json.dumps(t)
            return text[: rng.randrange(len(text) - 1)]
        elif kind == 9:
            return "[" * rng.randrange(101, 3000)
        elif kind == 10:
            t["instruction"] = rng.choice([5, ["x"], {"a": 1}])
        elif kind == 11:
            t["queries"] = [rng.choice([{"input": 5}, {"input": "a", "target": 3}, {"query": "a"}, "x", [1, 2, 3]])]
        elif kind == 12:
            return json.dumps(GOOD_TEXT[0])  # a second task "a": ids repeat
        else:
            t["demos"] = [{"input": "a", "target": "b", "extra": 1}]
        return json.dumps(t)

    for _ in range(n):
        d = w.case_dir()
        path = d / "t.jsonl"
        lines = [json.dumps(t) for t in GOOD_TEXT]
        lines.insert(rng.randrange(len(lines) + 1), bad_line())
        path.write_text("\n".join(lines) + "\n")
        yield "text tasks", ["evaluate", "--tasks", str(path), "--model", GUARD, "--out", str(d / "run")]


def config_cases(rng: random.Random, w: World, n: int):
    kinds = [("grid config", EvalConfig, w.grid_cfg, ("model",)), ("text config", TextEvalConfig, w.text_cfg, ("model",)),
             ("pretrain config", PretrainConfig, w.pre_cfg, ())]
    for i in range(n):
        what, cls, base, skip = kinds[i % len(kinds)]
        d = w.case_dir()
        path = d / "c.json"
        if rng.random() < 0.1:
            path.write_bytes(_corrupt_text(rng, json.dumps(base)))
        else:
            path.write_text(json.dumps(_mutate_config(rng, cls, base, skip)))
        if cls is PretrainConfig:
            yield what, ["pretrain", "--config", str(path), "--run-dir", str(d / "run")]
        else:
            yield what, ["evaluate", "--config", str(path), "--out", str(d / "run")]


def run_folder_cases(rng: random.Random, w: World, n: int):
    bad_fields = {
        "score": ["abc", 2.0, -1, float("nan"), [1], True], "correct": [5, "x", [1], [None]],
        "attempts": [5, "x", [[[[12]]]], [[["x"]]], [[[[1, 2], [3]]]], [[[]]], [5]],
        "task_id": [None, ["a"], "", 5, {"a": 1}], "seconds": [-1, "x", float("inf")], "invalid": [-1, "x", 1.5],
        "votes": ["x", [["x"]], [[{"grid": "x"}]], [[{"grid": [[1]], "votes": "many"}]]],
        "policy": ["x", {"signals": "x"}, {"ttt_steps": -2}, {"decision": 5}],
        "tokens": [{"ttt": "x"}, {"ttt": -1}, [1]], "compute": [{"ttt": -1}, {"ttt": "x"}, 5],
        "kind": ["grid", 5], "answers": [5, [1]], "scores": ["x", [["x"]]], "greedy": [5, [[[[10]]]]],
        "greedy_score": [5, "x"], "ttt_loss": ["x", [[1]]], "error": [5, ["x"]],
    }
    for _ in range(n):
        d = w.case_dir()
        run = d / "run"
        run.mkdir()
        records = [json.dumps(GOOD_RECORD), json.dumps({**GOOD_RECORD, "task_id": "t1"})]
        config = {"tasks": str(w.folder), "limit": 2}
        kind = rng.random()
        if kind < 0.6:
            key = rng.choice(list(bad_fields))
            records.insert(rng.randrange(3), json.dumps({**GOOD_RECORD, "task_id": "tx", key: rng.choice(bad_fields[key])}))
        elif kind < 0.75:
            line = rng.choice([json.dumps(GOOD_RECORD)[: rng.randrange(5, 40)], "[1]", "5", '{"score": 1}', "{oops",
                               "[" * 200])
            records.insert(rng.randrange(2), line)  # never last: a cut-short last line is a kill, and is skipped
        else:
            config = rng.choice([[1], None, "text", 5, {"tasks": 5}, {"tasks": str(w.folder), "limit": 0},
                                 {"tasks": str(w.folder), "limit": "2"}, {"tasks": ""}, {"ttt": "yes"}])
        (run / "results.jsonl").write_text("\n".join(records) + "\n")
        (run / "config.json").write_text(json.dumps(config))
        command = rng.choice(["report", "submit", "compare", "compare-b"])
        if command.startswith("compare"):
            pair = [str(w.good_run), str(run)] if command == "compare" else [str(run), str(w.good_run)]
            if kind >= 0.75:  # compare reads no config: break the records instead
                (run / "results.jsonl").write_text(json.dumps({**GOOD_RECORD, "task_id": None}) + "\n")
            yield "run folder", ["compare", *pair]
        else:
            yield "run folder", [command, str(run)]


def model_cases(rng: random.Random, w: World, n: int):
    cfg = json.loads((w.model / "config.json").read_text())
    keys = [k for k in SHAPE_LIMITS if k in cfg]
    for _ in range(n):
        d = w.case_dir()
        folder = Path(shutil.copytree(w.model, d / "model"))
        weights, config = folder / "model.safetensors", folder / "config.json"
        kind = rng.randrange(8)
        if kind < 3:
            config.write_text(json.dumps({**cfg, rng.choice(keys): rng.choice([0, -1, "abc", 1.5, True, 10**12, [4]])}))
        elif kind == 3:
            config.write_bytes(_corrupt_text(rng, json.dumps(cfg)))
        elif kind == 4:
            data = weights.read_bytes()
            weights.write_bytes(data[: rng.randrange(len(data) - 1)])
        elif kind == 5:
            weights.write_bytes(bytes(rng.randrange(256) for _ in range(rng.randrange(0, 64))))
        elif kind == 6:
            torch.save({"w": torch.zeros(1)}, folder / "pytorch_model.bin")
            weights.unlink()
        else:
            config.write_text(json.dumps({**cfg, "text_config": rng.choice([5, "x", [1]])}))
        init = d / "init.json"
        init.write_text(json.dumps({**w.pre_cfg, "init_from": str(folder)}))
        yield "model folder", rng.choice([
            ["solve", str(w.task_file), "--model", str(folder), "--device", "cpu"],
            ["evaluate", "--tasks", str(w.folder), "--model", str(folder), "--device", "cpu", "--out", str(d / "g")],
            ["evaluate", "--tasks", str(w.text_file), "--model", str(folder), "--device", "cpu", "--out", str(d / "t")],
            ["pretrain", "--config", str(init), "--run-dir", str(d / "p")],
        ])


INT_FLAGS = {"--limit": Range(1, 10**6), "--views": Range(1, 8), "--orders": Range(1, 64), "--samples": Range(1, 4096),
             "--epochs": Range(1, 100), "--rank": Range(1, 1024), "--max-group": Range(1, 4096),
             "--token-budget": Range(1024, 2**30)}
FLOAT_FLAGS = {"--lr": Range(0, 1, lo_open=True), "--max-minutes": Range(0, 43200, lo_open=True),
               "--max-seconds": Range(0, 43200 * 60, lo_open=True)}


def flag_cases(rng: random.Random, w: World, n: int):
    for _ in range(n):
        d = w.case_dir()
        grid = ["evaluate", "--tasks", str(w.folder), "--model", GUARD, "--out", str(d / "r")]
        kind = rng.randrange(8)
        if kind < 3:
            flag, limit = rng.choice(list(INT_FLAGS.items()))
            value = rng.choice([str(int(limit.lo) - 1), str(int(limit.hi) + 1), "x", "1.5", "", "-"])
            yield "flag", [*grid, flag, value]
        elif kind == 3:
            flag, limit = rng.choice(list(FLOAT_FLAGS.items()))
            value = rng.choice(["nan", "inf", "-inf", "-1", "0", "x", "", str(limit.hi * 2)])
            yield "flag", [*grid, flag, value]
        elif kind == 4:
            yield "flag", rng.choice([
                [*grid, "--device", rng.choice(["tpu", "", "cuda:99", "gpu", "cpu:0"])],
                [*grid, "--policy", "nope"], [*grid, "--no-ttt", "--policy", "always"], [*grid, "--shared"],
                [*grid, "--config", str(d / "absent.json")], [*grid[:2], str(d / "absent"), *grid[3:]],
                ["evaluate", "--tasks", str(w.text_file), "--model", GUARD, "--out", str(d / "t"),
                 rng.choice(["--views", "--orders"]), "2"],
                ["evaluate", "--tasks", str(w.text_file), "--model", GUARD, "--out", str(d / "t"), "--no-augment"],
            ])
        elif kind == 5:
            yield "flag", ["solve", str(w.task_file), "--model", GUARD, *rng.choice([
                ["--views", rng.choice(["0", "9", "x"])], ["--samples", "0"], ["--epochs", "101"],
                ["--policy", "nope"], ["--device", rng.choice(["tpu", "", "cuda:99"])]])]
        elif kind == 6:
            pre = d / "pre.json"
            pre.write_text(json.dumps(w.pre_cfg))
            yield "flag", ["pretrain", "--config", str(pre), "--run-dir", str(d / "p"), *rng.choice([
                ["--steps", rng.choice(["0", "-5", "1000000001", "x"])],
                ["--max-minutes", rng.choice(["nan", "inf", "0", "-1", "50000"])],
                ["--device", rng.choice(["tpu", "", "cuda:99"])],
                ["--lr", rng.choice(["0", "-1e-3", "2", "nan"])], ["--optimizer", rng.choice(["sgd", ""])]])]
        else:  # usage errors and missing things in the other commands
            yield "usage", rng.choice([
                [*grid, "--nope"], [*grid, "--rank"], ["evaluate", "extra"], ["solve"], ["tasks", "show"],
                ["tasks", "list"], ["tasks", "show", str(w.task_file), "--png"], ["tasks", "nope"], ["nope"],
                ["policies", "--nope"], ["policies", "extra"], ["report"], ["report", str(d / "absent")],
                ["submit", str(d)], ["compare", str(w.good_run)], ["compare", str(w.good_run), str(d)],
                ["compare", str(w.good_run), str(w.good_run), "--show", rng.choice(["-1", "x", "2000000"])],
                ["score", str(d / "s.json")], ["score", str(d / "absent.json"), "--solutions", str(w.folder)],
                ["tasks", "list", str(d / "absent")], ["tasks", "show", "arc1/eval/nope"],
                ["pretrain", "--config", str(d / "absent.json")], ["evaluate", "--limit", "1", "--limit"],
            ])


def submission_cases(rng: random.Random, w: World, n: int):
    good = {"t0": [{"attempt_1": [[1]], "attempt_2": [[2]]}]}
    for _ in range(n):
        d = w.case_dir()
        sub = d / "s.json"
        kind = rng.randrange(4)
        if kind == 0:
            obj = rng.choice([[good], "x", 5, None])
        elif kind == 1:
            obj = {"t0": rng.choice([[], "x", 5, [5], [{"attempt_1": [[1]]}]])}
        elif kind == 2:
            obj = {"t0": [{"attempt_1": rng.choice([5, "x", [1, 2], None]), "attempt_2": [[1]]}]}
        else:
            sub.write_bytes(_corrupt_text(rng, json.dumps(good)))
            obj = None
        if obj is not None or kind != 3:
            sub.write_text(json.dumps(obj))
        yield "submission", ["score", str(sub), "--solutions", str(w.folder)]


def found_cases(w: World):
    """The inputs issue 31 found still slipping through, each with what its error line must hold."""
    d = w.case_dir()
    vocab = d / "vocab.json"  # fewer tokens than the grid tokenizer's 18 (was an AssertionError in the embedding)
    vocab.write_text(json.dumps({**{k: v for k, v in w.pre_cfg.items() if k != "init_from"}, "model": {"vocab_size": 5}}))
    yield "found", ["pretrain", "--config", str(vocab), "--run-dir", str(d / "p")], ("vocab_size", "18", "5")
    targets = d / "targets.json"  # an empty list read as "every linear layer", exit 0
    targets.write_text(json.dumps({**w.grid_cfg, "ttt_cfg": {**w.grid_cfg["ttt_cfg"], "targets": []}}))
    yield "found", ["evaluate", "--config", str(targets), "--out", str(d / "r")], ("targets", "[]")
    # A submission with no task among the solutions: "score 0 / 400", exit 0.
    yield "found", ["score", str(w.submission), "--solutions", "arc1/train"], (str(w.submission), "no task id matches")
    # Grid records under a config.json that names text tasks: reported as a text run at 0.0%, exit 0.
    text_named = d / "text-named-run"
    shutil.copytree(w.good_run, text_named)
    (text_named / "config.json").write_text(json.dumps({"tasks": str(w.text_file)}))
    yield "found", ["report", str(text_named)], (str(text_named), "text tasks", "grid record")
    # Folders where a file belongs: the error named the file descriptor ("[Errno 21] Is a directory: 3").
    (d / "config-folder").mkdir()
    yield "found", ["evaluate", "--config", str(d / "config-folder"), "--out", str(d / "r2")], (str(d / "config-folder"),
                                                                                                "is a folder")
    folder_results = d / "folder-results"
    (folder_results / "results.jsonl").mkdir(parents=True)
    (folder_results / "config.json").write_text(json.dumps({"tasks": str(w.folder)}))
    for command in ("report", "submit"):
        yield "found", [command, str(folder_results)], (str(folder_results / "results.jsonl"), "is a folder")
    task_folder = Path(shutil.copytree(w.folder, d / "tasks"))
    (task_folder / "a.json").mkdir()
    for args in (["tasks", "list", str(task_folder)], ["evaluate", "--tasks", str(task_folder), "--strict",
                                                        "--out", str(d / "r3")]):
        yield "found", args, (str(task_folder / "a.json"), "is a folder")


def all_cases(w: World) -> list[tuple[str, list[str], tuple[str, ...]]]:
    rng = random.Random(SEED)
    gens = [task_cases(rng, w, 260), text_cases(rng, w, 150), config_cases(rng, w, 300), run_folder_cases(rng, w, 200),
            model_cases(rng, w, 70), flag_cases(rng, w, 160), submission_cases(rng, w, 40)]
    return [(what, args, ()) for g in gens for what, args in g] + list(found_cases(w))


# ---------------------------------------------------------------- the tests


def _problem(result, fragments: tuple[str, ...] = ()) -> str | None:
    """What is wrong with a case's outcome (None: the one-line error the README promises, holding `fragments`)."""
    lines = result.stderr.splitlines()
    if result.exit_code != 2:
        return f"exit code {result.exit_code} ({type(result.exception).__name__}: {result.exception})"
    if not isinstance(result.exception, (SystemExit, type(None))):
        return f"exception {result.exception!r}"
    if len(lines) != 1 or not lines[0].startswith("error: "):
        return f"stderr is not one error line: {result.stderr[:300]!r}"
    if "Traceback" in result.output:
        return "a traceback"
    if GUARD in lines[0]:
        return f"got as far as loading a model: {lines[0]}"
    missing = [f for f in fragments if f not in lines[0]]
    if missing:
        return f"the error does not say {missing}: {lines[0]}"
    return None


@pytest.fixture(scope="module")
def world(tmp_path_factory, flip_task, synthetic_tasks):
    return World(tmp_path_factory.mktemp("fuzz"), flip_task, synthetic_tasks)


def test_fuzz_every_command_in_process(world, monkeypatch, deadline):
    monkeypatch.chdir(world.root)  # a default run folder (runs/...) lands here, not in the checkout
    monkeypatch.setenv("TESTTIME_MODEL", GUARD)  # nor does any command reach the shipped model
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("TESTTIME_DEBUG", raising=False)
    cases = all_cases(world)
    assert len(cases) >= 1000
    runner = CliRunner()
    failures, by_kind = [], {}
    for what, args, fragments in cases:
        by_kind[what] = by_kind.get(what, 0) + 1
        try:
            with deadline(HANG_GUARD_SECONDS):
                result = runner.invoke(app, args, prog_name="testtime")
        except TimeoutError:
            failures.append(f"{what}: {args}: hung past {HANG_GUARD_SECONDS} s")
            continue
        problem = _problem(result, fragments)
        if problem:
            failures.append(f"{what}: {args}: {problem}")
    print(f"{len(cases)} fuzz cases: {by_kind}")
    assert not failures, f"{len(failures)} of {len(cases)} cases failed:\n" + "\n".join(failures[:25])


def _subprocess_cases(w: World, d: Path) -> dict[str, list[str]]:
    deep = d / "deep.json"
    deep.write_text("[" * 100_000)
    fifo = d / "fifo.json"
    os.mkfifo(fifo)
    cut = Path(shutil.copytree(w.model, d / "cut-model"))
    (cut / "model.safetensors").write_bytes((cut / "model.safetensors").read_bytes()[:300])
    odd = Path(shutil.copytree(w.model, d / "odd-model"))
    cfg = json.loads((odd / "config.json").read_text())
    (odd / "config.json").write_text(json.dumps({**cfg, "model_type": "no-such-architecture"}))
    return {
        "deep task file": ["tasks", "show", str(deep)],
        "fifo task file": ["tasks", "list", str(fifo)],
        "usage error": ["evaluate", "--nope"],
        "cut-short weights": ["solve", str(w.task_file), "--model", str(cut), "--device", "cpu"],
        "unknown architecture": ["evaluate", "--tasks", str(w.text_file), "--model", str(odd), "--device", "cpu",
                                 "--out", str(d / "o")],
    }


def test_fuzz_a_few_as_a_user_runs_them(world, tmp_path):
    """The real entry point in a fresh process: nothing else on stderr (no warning, no log line), exit code 2."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
           "TESTTIME_MODEL": GUARD, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("TESTTIME_DEBUG", None)
    cases = _subprocess_cases(world, tmp_path)
    procs = {name: subprocess.Popen([sys.executable, "-m", "testtime", *args], cwd=tmp_path, env=env, text=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE) for name, args in cases.items()}
    failures = []
    for name, proc in procs.items():  # started together: their imports overlap
        try:
            _, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            failures.append(f"{name}: hung")
            continue
        lines = err.splitlines()
        if proc.returncode != 2 or len(lines) != 1 or not lines[0].startswith("error: ") or "Traceback" in err:
            failures.append(f"{name}: exit code {proc.returncode}, stderr {err[-500:]!r}")
    assert not failures, "\n".join(failures)
