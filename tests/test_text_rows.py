"""The paper's BBH rows on a tiny random model (CPU): TTT data of each kind (shuffled, leave-one-out, pairs),
zero-shot prompts, voting over demonstration orders, one adapter per task trained once and serving all its queries
against one adapter per query, and the flags that select them, each refused where it makes no sense."""

import dataclasses
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from testtime.cli import app
from testtime.model.tiny_lm import save_tiny, tiny_causal_lm
from testtime.model.training import task_seed
from testtime.text import run as text_run
from testtime.text.predict import TextPredictConfig, demo_orders, predict_text, vote
from testtime.text.run import TextEvalConfig, evaluate_text
from testtime.text.tasks import TextTask, write_text_tasks
from testtime.text.ttt import build_text_dataset, text_ttt_config


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tok):
    return save_tiny(tiny_causal_lm("qwen3", tok), tok, tmp_path_factory.mktemp("qwen3"))


def color_task(tid="c", n_demos=5, options=("no", "yes"), queries=3) -> TextTask:
    words = ["red", "blue", "green", "cat", "dog", "sun", "moon", "tree"]
    demos = tuple((f"is {w} a color", "yes" if i < 3 else "no") for i, w in enumerate(words[:n_demos]))
    qs = tuple((f"is {w} {k} a color", "yes") for k, w in enumerate(["pink", "cup", "teal", "jam"][:queries]))
    return TextTask(tid, "Answer yes or no.", demos, qs, options)


def _answer_runs(enc, tok) -> list[str]:
    """The decoded runs of loss-masked tokens, in order."""
    runs, cur = [], []
    for t, m in zip(enc.input_ids.tolist(), enc.loss_mask.tolist(), strict=True):
        if m:
            cur.append(t)
        elif cur:
            runs.append(tok.decode(cur))
            cur = []
    return runs + ([tok.decode(cur)] if cur else [])


# ---------------------------------------------------------------- TTT data


def test_leave_one_out_holds_out_each_demo_in_turn(fmt, tok):
    task = color_task(n_demos=5)
    for demo_loss in (True, False):
        cfg = text_ttt_config(samples=10, loss_on_demos=demo_loss)
        data = build_text_dataset(task, fmt, cfg, "loo")
        assert len(data) == 10
        held = []
        for k, enc in enumerate(data):
            text = tok.decode(enc.input_ids)
            last = text.rsplit("Input: ", 1)[1]  # the held-out demo comes last, its answer after it
            q = next(i for i, (x, _) in enumerate(task.demos) if last.startswith(f"{x}\nOutput: {task.demos[i][1]}"))
            held.append(q)
            assert sorted(enc.demos_used) == [i for i in range(5) if i != q]  # the others are its context
            assert all(f"Input: {x}\n" not in text for x, _ in task.queries)  # never a query
            runs = _answer_runs(enc, tok)
            assert runs[-1] == f" {task.demos[q][1]}\n"
            assert len(runs) == (5 if demo_loss else 1)  # the held-out answer alone without the demo loss
            if k < 5:
                assert list(enc.demos_used) == [i for i in range(5) if i != q]  # the first pass: the order given
        # Each demo in turn, then again under other context orders (a repeated sequence is skipped, not kept).
        assert held[:5] == [0, 1, 2, 3, 4] and sorted(held) == sorted([0, 1, 2, 3, 4] * 2)
        assert len({d.input_ids.tobytes() for d in data}) == 10  # later passes reorder the context


def test_pairs_are_each_demo_alone_and_shuffled_can_learn_the_last_answer_only(fmt, tok):
    task = color_task(n_demos=4)
    pairs = build_text_dataset(task, fmt, text_ttt_config(samples=6), "pairs")
    assert [tok.decode(p.input_ids).count("Input: ") for p in pairs] == [1] * 6
    assert [_answer_runs(p, tok) for p in pairs] == [[f" {task.demos[i % 4][1]}\n"] for i in range(6)]
    last = build_text_dataset(task, fmt, text_ttt_config(samples=3, loss_on_demos=False), "shuffled")
    for enc in last:
        assert sorted(enc.demos_used) == [0, 1, 2, 3] or len(enc.demos_used) == 3
        assert _answer_runs(enc, tok) == [f" {tok.decode(enc.input_ids).rsplit('Output: ', 1)[1].split(chr(10))[0]}\n"]
    full = build_text_dataset(task, fmt, text_ttt_config(samples=3), "shuffled")
    assert [len(_answer_runs(e, tok)) for e in full] == [4, 4, 4]
    # A per-query key draws other orders than its task's; the task's key is its id.
    cfg = text_ttt_config(samples=4)
    same = build_text_dataset(task, fmt, cfg, "shuffled", key=task.id)
    assert [e.demos_used for e in same] == [e.demos_used for e in build_text_dataset(task, fmt, cfg, "shuffled")]
    other = build_text_dataset(task, fmt, cfg, "shuffled", key="c#q1")
    assert [e.demos_used for e in other] != [e.demos_used for e in same]
    with pytest.raises(ValueError, match="must be one of shuffled, loo, pairs"):
        build_text_dataset(task, fmt, cfg, "nope")


# ---------------------------------------------------------------- prediction


def test_demo_orders_are_distinct_and_start_with_the_given_one():
    rng = np.random.default_rng(0)
    orders = demo_orders(4, 6, rng)
    assert orders[0] == (0, 1, 2, 3) and len(set(orders)) == 6 and all(sorted(o) == [0, 1, 2, 3] for o in orders)
    assert len(demo_orders(2, 6, rng)) == 2 and demo_orders(0, 3, rng) == [()]


def test_the_vote_takes_the_majority_then_the_likeliest_then_the_first():
    assert vote(["b", "a", "a"], None) == "a"
    assert vote(["b", "a"], None) == "b"  # a tie without scores: the earliest order
    assert vote(["b", "a"], [-2.0, -1.0]) == "a"  # a tie with scores: the likeliest
    assert vote(["b", " b ", "a"], [-5.0, -5.0, -1.0]) == "b"  # answers compare as exact match does


@pytest.mark.parametrize("options", [("no", "yes", "maybe"), None])
def test_voting_over_demo_orders_counts_each_orders_own_answer(tok, fmt, options):
    model = tiny_causal_lm("qwen3", tok)
    task = color_task(options=options)
    cfg = TextPredictConfig(max_new_tokens=6, orders=4, seed=3)
    [answers] = predict_text(model, [task], fmt, cfg)
    for qi, a in enumerate(answers):
        rng = np.random.default_rng(task_seed(3, f"{task.id}#{qi}"))
        orders = demo_orders(len(task.demos), 4, rng)
        alone = []  # each order asked on its own, as a task whose demos come in that order
        for o in orders:
            t = dataclasses.replace(task, demos=tuple(task.demos[i] for i in o), queries=(task.queries[qi],))
            [[b]] = predict_text(model, [t], fmt, TextPredictConfig(max_new_tokens=6))
            alone.append(b)
        assert list(a.votes) == [b.text for b in alone]
        if options:
            mean = np.mean([b.scores for b in alone], axis=0)
            np.testing.assert_allclose(a.scores, mean, atol=2e-4)
            assert a.text == vote([b.text for b in alone], [float(mean[options.index(b.text)]) for b in alone])
        else:
            assert a.text == vote([b.text for b in alone], None)
    [one] = predict_text(model, [task], fmt, TextPredictConfig(max_new_tokens=6))
    assert all(x.votes is None for x in one) and [x.text for x in one] == [a.votes[0] for a in answers]


def test_zero_shot_prompts_hold_no_demonstrations(tok, fmt):
    model = tiny_causal_lm("qwen3", tok)
    task = color_task()
    zero = predict_text(model, [task], fmt, TextPredictConfig(icl=False))
    bare = predict_text(model, [dataclasses.replace(task, demos=())], fmt, TextPredictConfig())
    with_demos = predict_text(model, [task], fmt, TextPredictConfig())
    assert [a.scores for a in zero[0]] == [a.scores for a in bare[0]]
    assert [a.scores for a in zero[0]] != [a.scores for a in with_demos[0]]


# ---------------------------------------------------------------- adapters: per task against per query


def _count_calls(monkeypatch):
    calls = {"train": [], "predict": []}
    train, predict = text_run.train_group, text_run.predict_text

    def counted_train(model, lora, data, *a, **kw):
        calls["train"].append(len(data))
        return train(model, lora, data, *a, **kw)

    def counted_predict(model, tasks, *a, **kw):
        calls["predict"].append(sum(len(t.queries) for t in tasks))
        return predict(model, tasks, *a, **kw)

    monkeypatch.setattr(text_run, "train_group", counted_train)
    monkeypatch.setattr(text_run, "predict_text", counted_predict)
    return calls


def _run(tok, tasks, out, **kw):
    cfg = TextEvalConfig(tasks="unused.jsonl", device="cpu", max_group=4,
                         ttt_cfg=text_ttt_config(samples=4, epochs=2, lr=3e-2, rank=4, alpha=8),
                         predict_cfg=TextPredictConfig(max_new_tokens=4), **kw)
    return evaluate_text(cfg, out, model=tiny_causal_lm("qwen3", tok), tokenizer=tok, tasks=tasks,
                         show_progress=False)


def test_a_tasks_adapter_trains_once_and_serves_all_its_queries_batched(tok, tmp_path, monkeypatch):
    tasks = [color_task("a"), color_task("b", options=None)]
    calls = _count_calls(monkeypatch)
    shared = _run(tok, tasks, tmp_path / "task")
    assert calls == {"train": [2], "predict": [6]}  # one training of both tasks' adapters, one batch of 6 queries

    calls = _count_calls(monkeypatch)
    per_query = _run(tok, tasks, tmp_path / "query", per_query=True)
    assert calls == {"train": [3, 3], "predict": [3, 3]}  # 3 adapters a task (max_group 4 adapters at a time)
    assert [r["score"] is not None and len(r["answers"]) == 3 for r in per_query] == [True, True]
    # Each query's adapter is its own draw: it scores the options otherwise than the task's adapter.
    assert not np.allclose(per_query[0]["scores"], shared[0]["scores"], atol=1e-3)
    assert len({json.dumps(s) for s in per_query[0]["scores"]}) == 3

    # Seeded like the task's adapter, each query's adapter is the task's: the same answers and scores.
    monkeypatch.setattr(text_run, "adapter_key", lambda task_id, query: task_id)
    same = _run(tok, tasks, tmp_path / "same", per_query=True)
    for a, b in zip(shared, same, strict=True):
        assert a["answers"] == b["answers"] and a["correct"] == b["correct"]
        np.testing.assert_allclose(np.array(a["scores"] or [], dtype=float), np.array(b["scores"] or [], dtype=float),
                                   atol=1e-4)
        np.testing.assert_allclose(a["ttt_loss"], b["ttt_loss"], atol=1e-3)


def test_per_query_adapters_come_in_chunks_and_max_queries_cuts_every_task(tok, tmp_path, monkeypatch):
    tasks = [color_task("a", queries=4)]
    calls = _count_calls(monkeypatch)
    cfg = TextEvalConfig(tasks="unused.jsonl", device="cpu", max_group=3, per_query=True, max_queries=4,
                         ttt_cfg=text_ttt_config(samples=2, rank=2), predict_cfg=TextPredictConfig(max_new_tokens=4))
    [rec] = evaluate_text(cfg, tmp_path / "r", model=tiny_causal_lm("qwen3", tok), tokenizer=tok, tasks=tasks,
                          show_progress=False)
    assert calls == {"train": [3, 1], "predict": [3, 1]} and len(rec["answers"]) == 4
    calls = _count_calls(monkeypatch)
    [rec] = evaluate_text(dataclasses.replace(cfg, per_query=False, max_queries=2), tmp_path / "s",
                          model=tiny_causal_lm("qwen3", tok), tokenizer=tok, tasks=tasks, show_progress=False)
    assert calls == {"train": [1], "predict": [2]} and len(rec["answers"]) == 2 == len(rec["correct"])


# ---------------------------------------------------------------- the rows from the CLI, and their flags


ROWS = {  # the paper's rows, as README gives them
    "zero-shot": (["--no-ttt", "--no-icl"], {"ttt": False, "icl": False}),
    "icl": (["--no-ttt"], {"ttt": False, "icl": True}),
    "ttt-no-icl": (["--ttt-data", "pairs", "--no-icl"], {"ttt": True, "icl": False, "ttt_data": "pairs"}),
    "ttt-icl": ([], {"ttt": True, "icl": True, "ttt_data": "shuffled", "orders": 1}),
    "ttt-icl-vote": (["--orders", "3"], {"ttt": True, "orders": 3}),
    "ttt-icl-per-query": (["--per-query"], {"ttt": True, "per_query": True}),
    "ttt-loo-last": (["--ttt-data", "loo", "--no-demo-loss"], {"ttt_data": "loo", "loss_on_demos": False}),
}


@pytest.mark.parametrize("row", list(ROWS))
def test_each_row_runs_from_the_cli(model_dir, tmp_path, row):
    flags, want = ROWS[row]
    f = write_text_tasks([color_task("a"), color_task("b", options=None)], tmp_path / "t.jsonl")
    small_ttt = [] if "--no-ttt" in flags else ["--samples", "2", "--rank", "2"]  # TTT flags are refused without TTT
    res = CliRunner().invoke(app, ["evaluate", "--tasks", str(f), "--model", str(model_dir), "--device", "cpu",
                                   "--max-queries", "2", "--out", str(tmp_path / "r"), *small_ttt, *flags])
    assert res.exit_code == 0, res.output
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    flat = {**cfg, **cfg["predict_cfg"], **cfg["ttt_cfg"]}
    assert {k: flat[k] for k in want} == want and cfg["max_queries"] == 2
    recs = [json.loads(line) for line in (tmp_path / "r" / "results.jsonl").read_text().splitlines()]
    assert [len(r["answers"]) for r in recs] == [2, 2] and all(r["error"] is None for r in recs)
    assert all((r["ttt_loss"] is not None) == want.get("ttt", True) for r in recs)
    assert all((r.get("order_answers") is not None) == (want.get("orders", 1) > 1) for r in recs)


@pytest.mark.parametrize("flags, message", [
    (["--orders", "0"], "--orders must be between 1 and 64, got 0"),
    (["--orders", "2", "--no-icl"], "--orders (predict_cfg.orders) votes over orders of the demonstrations"),
    (["--per-query", "--no-ttt"], "--per-query shapes TTT, and this run has none (--no-ttt)"),
    (["--per-query", "--shared"], "--per-query (per_query) and --shared (ttt_cfg.shared) contradict"),
    (["--ttt-data", "nope"], "--ttt-data must be one of"),
    (["--max-queries", "0"], "--max-queries must be between 1 and 1000000, got 0"),
    (["--no-ttt", "--lr", "0.001"], "--lr shapes TTT, and this run has none (--no-ttt)"),
    (["--no-ttt", "--ttt-data", "loo"], "--ttt-data shapes TTT, and this run has none"),
    (["--no-ttt", "--no-demo-loss"], "--demo-loss shapes TTT"),
    (["--views", "2"], "--views applies to grid tasks, not text tasks"),
    (["--no-loo"], "--no-loo applies to grid tasks, not text tasks"),
])
def test_text_flags_are_validated_with_one_line(tmp_path, one_line_error, flags, message):
    f = write_text_tasks([color_task("a")], tmp_path / "t.jsonl")
    res = CliRunner().invoke(app, ["evaluate", "--tasks", str(f), "--out", str(tmp_path / "r"), *flags])
    one_line_error(res, message)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("flags", [["--no-icl"], ["--ttt-data", "loo"], ["--per-query"], ["--max-queries", "3"]])
def test_text_flags_are_refused_for_grid_tasks(tmp_path, one_line_error, flags):
    res = CliRunner().invoke(app, ["evaluate", "--tasks", "arc1/eval", "--out", str(tmp_path / "r"), *flags])
    one_line_error(res, f"{flags[0]} applies to text tasks, not grid tasks")


def test_a_config_file_takes_the_same_settings_and_is_checked_alike(model_dir, tmp_path, one_line_error):
    f = write_text_tasks([color_task("a")], tmp_path / "t.jsonl")
    c = tmp_path / "c.json"
    c.write_text(json.dumps({"ttt": False, "predict_cfg": {"icl": False, "orders": 2}}))
    res = CliRunner().invoke(app, ["evaluate", "--tasks", str(f), "--config", str(c), "--out", str(tmp_path / "r")])
    one_line_error(res, "--orders (predict_cfg.orders) votes over orders")
    c.write_text(json.dumps({"ttt": False, "per_query": True}))
    res = CliRunner().invoke(app, ["evaluate", "--tasks", str(f), "--config", str(c), "--out", str(tmp_path / "r")])
    one_line_error(res, "--per-query (per_query) trains an adapter per query: it needs TTT")
    c.write_text(json.dumps({"ttt_data": "loo", "per_query": True, "max_queries": 1,
                             "ttt_cfg": {"samples": 2, "rank": 2, "loss_on_demos": False}}))
    res = CliRunner().invoke(app, ["evaluate", "--tasks", str(f), "--config", str(c), "--model", str(model_dir),
                                   "--device", "cpu", "--out", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    page = (tmp_path / "r" / "report.html").read_text()
    assert "2 loo samples" in page and "one adapter per query" in page and "last answer only" in page


def test_a_partial_ttt_cfg_keeps_the_text_recipe_for_the_rest():
    cfg = text_run.text_config_from_dict({"ttt_cfg": {"lr": 3e-4}})
    assert cfg.ttt_cfg == dataclasses.replace(text_ttt_config(), lr=3e-4)  # not the grid kind's 32 samples, rank 32


def test_each_row_has_its_own_default_run_folder():
    rows = [TextEvalConfig(tasks="d/bbh.jsonl", ttt=False, predict_cfg=TextPredictConfig(icl=False)),
            TextEvalConfig(tasks="d/bbh.jsonl", ttt=False),
            TextEvalConfig(tasks="d/bbh.jsonl", ttt_data="pairs", predict_cfg=TextPredictConfig(icl=False)),
            TextEvalConfig(tasks="d/bbh.jsonl"),
            TextEvalConfig(tasks="d/bbh.jsonl", predict_cfg=TextPredictConfig(orders=5)),
            TextEvalConfig(tasks="d/bbh.jsonl", per_query=True)]
    assert [text_run.default_out(c).name for c in rows] == [
        "text-bbh-zero", "text-bbh-icl", "text-bbh-ttt-no-icl-pairs", "text-bbh-ttt", "text-bbh-ttt-vote5",
        "text-bbh-ttt-per-query"]
