"""Text few-shot tasks: the file format and its errors, the prompt format and its loss mask, TTT data,
adapters, greedy and ranked prediction, the evaluation recipe, its HTML report and its torchrun sharding,
on a tiny random model (CPU, no download)."""

import dataclasses
import html
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from testtime.cli import app
from testtime.core.store import read_records
from testtime.data.tasks import TaskError
from testtime.model.lora import Adapters
from testtime.model.tiny_lm import save_tiny, tiny_causal_lm
from testtime.stages.engine import sequence_logprobs
from testtime.stages.ttt import fresh_adapters, group_adapters, train_group
from testtime.text.predict import TextPredictConfig, predict_text
from testtime.text.report import text_report_html, write_text_report
from testtime.text.run import TextEvalConfig, evaluate_text, summary
from testtime.text.tasks import TextTask, bbh_task, bigbench_task, is_text_task_path, load_text_tasks, write_text_tasks
from testtime.text.ttt import build_text_dataset, text_ttt_config

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "text" / "sample.jsonl"


def yes_task(tid="yes", n_demos=4, options=None) -> TextTask:
    words = ["red", "blue", "green", "cat", "dog", "sun", "moon", "tree"]
    demos = tuple((f"{w} {v}", "yes") for w, v in zip(words, reversed(words), strict=True))[:n_demos]
    return TextTask(tid, "Always answer yes.", demos, (("fish bowl", "yes"), ("red sun", "yes")), options)


# ---------------------------------------------------------------- files


def test_load_file_folder_and_pair_forms(tmp_path):
    lines = [
        {"id": "a", "demos": [["1", "2"]], "queries": [{"input": "3", "target": "4"}, ["5"]]},
        {
            "id": "b",
            "instruction": "Pick.",
            "demos": [{"input": "x", "target": "A"}],
            "queries": [["y", "B"]],
            "options": ["A", "B"],
        },
    ]
    f = tmp_path / "t.jsonl"
    f.write_text("\n".join(json.dumps(d) for d in lines) + "\n\n")
    (tmp_path / "c.json").write_text(json.dumps({"id": "c", "demos": [], "queries": [["q"]]}))
    a, b = load_text_tasks(f)
    assert a == TextTask("a", "", (("1", "2"),), (("3", "4"), ("5", None)))
    assert b.options == ("A", "B") and b.has_targets and not a.has_targets
    assert [t.id for t in load_text_tasks(tmp_path)] == ["c", "a", "b"]
    assert is_text_task_path(f) and is_text_task_path(tmp_path) and not is_text_task_path(tmp_path / "c.json")
    write_text_tasks([a, b], tmp_path / "again.jsonl")
    assert load_text_tasks(tmp_path / "again.jsonl") == [a, b]


@pytest.mark.parametrize(
    "line, problem",
    [
        ("{not json", "t.jsonl: line 2: bad JSON at column 2"),
        ('{"demos": [], "queries": [["q"]]}', 't.jsonl:2: missing or empty "id"'),
        ('{"id": "x", "demos": [["a"]], "queries": [["q"]]}', "task x: demo 0: a demonstration needs a target"),
        ('{"id": "x", "demos": [], "queries": []}', 'task x: needs a non-empty "queries" list'),
        ('{"id": "x", "demos": [["a", "b\\nc"]], "queries": [["q"]]}', "demo 0: target has a newline"),
        (
            '{"id": "x", "demos": [["a", "C"]], "queries": [["q"]], "options": ["A", "B"]}',
            "demo 0 target 'C' is not among the options",
        ),
        ('{"id": "x", "demos": [], "queries": [["q"]], "extra": 1}', "unknown key(s) extra"),
        ('{"id": "x", "demos": [[1, "b"]], "queries": [["q"]]}', "demo 0: input must be a string"),
        ('{"id": "ok", "demos": [], "queries": [["q"]]}', "task id ok repeats"),
    ],
)
def test_malformed_files_fail_with_one_line(tmp_path, line, problem):
    f = tmp_path / "t.jsonl"
    f.write_text('{"id": "ok", "demos": [], "queries": [["q"]]}\n' + line + "\n")
    with pytest.raises(TaskError) as e:
        load_text_tasks(f)
    assert problem in str(e.value) and "\n" not in str(e.value)


def test_bbh_examples_map_onto_tasks():
    examples = [{"input": f"q{i}", "target": "True" if i % 2 else "False"} for i in range(15)]
    t = bbh_task("boolean_expressions", examples, shots=10, max_options=8)
    assert len(t.demos) == 10 and len(t.queries) == 5 and t.options == ("False", "True")
    assert {x for x, _ in t.demos + t.queries} == {f"q{i}" for i in range(15)}
    with pytest.raises(TaskError, match="need more than 10 shots"):
        bbh_task("tiny", examples[:10])


def test_bigbench_tasks_follow_bbh_answer_conventions():
    yes_no = {"task_prefix": "Answer.", "examples": [
        {"input": f"q{i}", "target_scores": {"Yes": i % 2, "No": 1 - i % 2}} for i in range(8)]}
    t = bigbench_task("yn", yes_no, shots=3, queries=4)
    assert t.options == ("No", "Yes") and t.instruction == "Answer." and len(t.demos) == 3 and len(t.queries) == 4
    assert all(y == ("Yes" if int(x[1:]) % 2 else "No") for x, y in t.demos + t.queries)

    # Options that change per example go into the input; the letters are the options.
    dates = {"examples": [{"input": f"d{i}", "target_scores": {f"right{i}": 1, f"wrong{i}": 0, f"other{i}": 0}}
                          for i in range(6)]}
    t = bigbench_task("dates", dates, shots=2, queries=3)
    assert t.options == ("(A)", "(B)", "(C)")
    for x, y in t.demos + t.queries:
        i = x.splitlines()[0][1:]
        assert f"{y} right{i}" in x.splitlines()  # the target letter names the right option

    # A list target, or a shared option set too large to rank (dyck's 84), is generated.
    counting = {"examples": [{"input": f"n{i}", "target": [str(i), "word"]} for i in range(5)]}
    t = bigbench_task("count", counting, shots=2, queries=2)
    assert t.options is None and all(y == x[1:] for x, y in t.demos + t.queries)
    many = [f"c{k}" for k in range(20)]
    dyck = {"examples": [{"input": f"s{i}", "target_scores": {c: int(c == f"c{i}") for c in many}} for i in range(5)]}
    t = bigbench_task("dyck", dyck, shots=2, queries=2)
    assert t.options is None and all(y == f"c{x[1:]}" for x, y in t.demos + t.queries)

    assert bigbench_task("count", counting, shots=4, queries=2) is None  # 5 examples cannot give 6
    assert bigbench_task("dates", dates, shots=2, queries=3, seed=1) != bigbench_task("dates", dates, shots=2, queries=3)
    assert bigbench_task("dates", dates, shots=2, queries=3) == bigbench_task("dates", dates, shots=2, queries=3)


def test_shipped_bigbench_tasks_load():
    tasks = load_text_tasks(SAMPLE.parent / "bigbench-bbh.jsonl")
    assert len(tasks) == 20 and all(len(t.demos) == 10 and len(t.queries) == 20 and t.has_targets for t in tasks)
    assert all(y in t.options for t in tasks if t.options for _, y in t.demos + t.queries)


def test_shipped_sample_is_exact_and_reproducible(tmp_path):
    tasks = load_text_tasks(SAMPLE)
    by = {t.id: t for t in tasks}
    assert len(tasks) >= 4 and all(len(t.demos) == 10 and t.has_targets for t in tasks)
    pairs = {")": "(", "]": "[", "}": "{", ">": "<"}
    for x, y in by["synthetic_dyck_languages"].demos + by["synthetic_dyck_languages"].queries:
        stack = []
        for ch in (x + " " + y).split():
            if ch in pairs:
                assert stack.pop() == pairs[ch]
            else:
                stack.append(ch)
        assert not stack
    for x, y in by["synthetic_word_sorting"].demos:
        assert y.split() == sorted(x.split(": ")[-1].split())
    for x, y in by["synthetic_boolean_expressions"].queries:
        assert str(eval(x.removesuffix(" is"))) == y  # noqa: S307
    script = REPO / "scripts" / "make_text_sample.py"
    subprocess.run([sys.executable, str(script), "--out", str(tmp_path / "s.jsonl")], check=True, capture_output=True)
    assert (tmp_path / "s.jsonl").read_text() == SAMPLE.read_text()


# ---------------------------------------------------------------- prompt format


def test_loss_mask_lies_exactly_on_every_answer(fmt, tok):
    task = load_text_tasks(SAMPLE)[0]
    enc = fmt.encode(task.instruction, task.demos, task.queries[0][0], task.queries[0][1])
    # Each run of masked tokens decodes to one answer, " target\n", in order: demos then the query's.
    runs, cur = [], []
    for t, m in zip(enc.input_ids.tolist(), enc.loss_mask.tolist(), strict=True):
        if m:
            cur.append(t)
        elif cur:
            runs.append(cur)
            cur = []
    runs.append(cur)
    assert [tok.decode(r) for r in runs] == [f" {y}\n" for _, y in (*task.demos, task.queries[0])]
    assert enc.input_ids[0] == tok.bos_token_id
    assert tok.decode(enc.input_ids[1 : enc.prompt_len]).startswith(task.instruction + "\n\nInput: ")
    assert tok.decode(enc.input_ids[: enc.prompt_len]).endswith(f"Input: {task.queries[0][0]}\nOutput:")
    answer = enc.input_ids[enc.prompt_len :]
    assert fmt.decode_answer(answer) == task.queries[0][1]
    assert answer[-1] in fmt.stop_ids and not set(answer[:-1].tolist()) & fmt.stop_ids


def test_too_long_drops_the_longest_demos(fmt):
    task = load_text_tasks(SAMPLE)[1]
    full = fmt.encode(task.instruction, task.demos, task.queries[0][0], answer_room=10)
    short = fmt.encode(task.instruction, task.demos, task.queries[0][0], answer_room=10, max_len=len(full) - 20 + 10)
    assert short.dropped and len(short) + 10 <= len(full) - 10
    assert set(short.demos_used) | set(short.dropped) == set(range(len(task.demos)))


# ---------------------------------------------------------------- TTT


def test_ttt_data_is_shuffled_demos_only(fmt, tok):
    task = load_text_tasks(SAMPLE)[0]
    cfg = text_ttt_config(samples=6)
    data = build_text_dataset(task, fmt, cfg)
    assert len(data) == 6 and data[0].demos_used == tuple(range(10))
    assert len({d.demos_used for d in data}) > 1  # different orders
    for d in data:
        assert sorted(d.demos_used) == list(range(10))
        text = tok.decode(d.input_ids)
        assert all(f"Input: {x}\n" not in text for x, _ in task.queries)
        assert d.loss_mask.sum() == sum(len(fmt.answer(y)) for _, y in task.demos)  # every answer, first included


def test_per_task_and_shared_adapters_learn(tok, fmt):
    tasks = [yes_task("a"), yes_task("b", n_demos=6)]
    cfg = text_ttt_config(samples=4, epochs=6, batch_size=2, lr=4e-2, rank=4, alpha=8)
    data = [build_text_dataset(t, fmt, cfg) for t in tasks]
    for shared in (False, True):
        model = tiny_causal_lm("qwen2", tok)
        run_cfg = dataclasses.replace(cfg, shared=shared)
        lora = fresh_adapters(model, None, ["a", "b"], run_cfg)
        assert lora.n_adapters == (1 if shared else 2)
        res = train_group(model, lora, data, run_cfg, pad_id=fmt.pad_id, task_ids=["a", "b"])
        assert len(res.losses) == 2 and all(r[-1] < 0.5 * r[0] for r in res.losses)
        if shared:
            assert res.losses[0] == res.losses[1]
        # After TTT the adapters answer the queries right, by greedy decoding and by ranking.
        adapters = group_adapters(lora, len(tasks), run_cfg)
        greedy = predict_text(model, tasks, fmt, TextPredictConfig(), adapters=adapters)
        assert [a.text for row in greedy for a in row] == ["yes"] * 4
        ranked_tasks = [TextTask(t.id, t.instruction, t.demos, t.queries, ("no", "yes", "yes no")) for t in tasks]
        ranked = predict_text(model, ranked_tasks, fmt, TextPredictConfig(), adapters=adapters)
        assert all(a.method == "rank" and a.text == "yes" and len(a.scores) == 3 for row in ranked for a in row)


def test_batched_logprobs_equal_one_at_a_time(tok, fmt):
    model = tiny_causal_lm("gemma3", tok)
    task = yes_task()
    seqs = [
        fmt.encode(task.instruction, task.demos[:k], "a b", opt)
        for k, opt in [(0, "yes"), (2, "no"), (4, "maybe not"), (1, "yes no")]
    ]
    batched = sequence_logprobs(model, seqs, fmt.pad_id, token_budget=10_000)
    single = sequence_logprobs(model, seqs, fmt.pad_id, token_budget=1)
    np.testing.assert_allclose(batched, single, rtol=1e-4)
    for s, got in zip(seqs, batched, strict=True):
        ids = torch.tensor(s.input_ids)[None]
        with torch.no_grad():
            lp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
        want = lp[torch.arange(len(s) - 1), ids[0, 1:]][torch.tensor(s.loss_mask[1:])].sum()
        assert got == pytest.approx(float(want), rel=1e-4)


# ---------------------------------------------------------------- recipe and CLI


@pytest.mark.parametrize("arch", ["gemma3", "llama"])
def test_options_sharing_a_prompt_score_as_if_each_ran_alone(tok, fmt, arch, noisy_lora):
    """Options of one query read their prompt once (a copied cache); each score must still equal a full
    forward pass of prompt + option, with several queries, option counts and adapters in a batch, and
    prompts longer than Gemma's sliding window."""

    model = tiny_causal_lm(arch, tok)
    lora = noisy_lora(model, 2, seed=1)
    task = yes_task(n_demos=6)
    seqs, adapters = [], []
    for q, (query, opts, adapter) in enumerate([("a b", ("yes", "no", "yes no"), 0), ("b a", ("no", "maybe not"), 1),
                                                ("a b", ("yes", "no", "yes no"), 1)]):
        for opt in opts:
            seqs.append(fmt.encode(task.instruction, task.demos[: 2 + 2 * q], query, opt, loss_on_demos=False))
            adapters.append(adapter)
    assert len(seqs[0].input_ids) > 16  # longer than the tiny Gemma's sliding window
    read = []
    hook = model.get_decoder().register_forward_pre_hook(lambda m, a, kw: read.append(kw["input_ids"].numel()),
                                                         with_kwargs=True)
    got = sequence_logprobs(model, seqs, fmt.pad_id, adapters=Adapters(lora, tuple(adapters)), token_budget=10_000)
    hook.remove()
    assert sum(read) < 0.6 * sum(len(s.input_ids) for s in seqs)  # each prompt was read once, not per option
    small = sequence_logprobs(model, seqs, fmt.pad_id, adapters=Adapters(lora, tuple(adapters)), token_budget=1)
    np.testing.assert_allclose(got, small, rtol=1e-4)
    for s, a, value in zip(seqs, adapters, got, strict=True):
        ids = torch.tensor(s.input_ids)[None]
        lora.use(torch.tensor([a]))
        with torch.no_grad():
            lp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
        want = lp[torch.arange(len(s) - 1), ids[0, 1:]][torch.tensor(s.loss_mask[1:])].sum()
        assert value == pytest.approx(float(want), rel=1e-4, abs=1e-4)
    lora.use(None)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tok):
    return save_tiny(tiny_causal_lm("qwen3", tok), tok, tmp_path_factory.mktemp("qwen3"))


def test_evaluate_text_writes_records_and_resumes(model_dir, tmp_path):
    random.seed(0)
    cfg = TextEvalConfig(
        tasks=str(SAMPLE),
        model=str(model_dir),
        device="cpu",
        limit=2,
        ttt_cfg=text_ttt_config(samples=2, rank=4),
        predict_cfg=TextPredictConfig(max_new_tokens=8),
    )
    recs = evaluate_text(cfg, tmp_path / "run")
    assert [r["task_id"] for r in recs] == [t.id for t in load_text_tasks(SAMPLE)[:2]]
    for r in recs:
        assert r["error"] is None and len(r["answers"]) == 8 and len(r["correct"]) == 8 and len(r["ttt_loss"]) == 1
    assert summary(recs)["tasks"] == 2
    cfg.limit = 3  # resume: only the third task runs
    recs = evaluate_text(cfg, tmp_path / "run")
    lines = (tmp_path / "run" / "results.jsonl").read_text().splitlines()
    assert len(recs) == 3 and len(lines) == 3
    assert recs[2]["method"] == "rank" and len(recs[2]["scores"][0]) == 2  # boolean expressions list options
    # Every verdict and score, recomputed from the answers and the targets (exact match, whitespace collapsed).
    tasks = load_text_tasks(SAMPLE)[:3]
    scores = []
    for r, task in zip(recs, tasks, strict=True):
        right = [" ".join(a.split()) == " ".join(y.split()) for a, (_, y) in zip(r["answers"], task.queries, strict=True)]
        assert r["correct"] == right and r["score"] == pytest.approx(sum(right) / len(right)), r["task_id"]
        scores.append(sum(right) / len(right))
    options = tasks[2].options  # ranked: the answer is the option of the highest score
    assert [options[int(np.argmax(sc))] for sc in recs[2]["scores"]] == recs[2]["answers"]
    s = summary(recs)
    assert s["task_accuracy"] == pytest.approx(sum(scores) / 3)
    assert s["query_accuracy"] == pytest.approx(sum(map(sum, (r["correct"] for r in recs))) / sum(len(t.queries) for t in tasks))
    with pytest.raises(TaskError, match="another configuration"):
        evaluate_text(TextEvalConfig(tasks=str(SAMPLE), model=str(model_dir), ttt=False), tmp_path / "run")


def test_cli_routes_jsonl_to_text_evaluation(model_dir, tmp_path):
    f = write_text_tasks([yes_task("a"), yes_task("b")], tmp_path / "tasks.jsonl")
    res = CliRunner().invoke(
        app,
        [
            "evaluate",
            "--tasks",
            str(f),
            "--model",
            str(model_dir),
            "--no-ttt",
            "--out",
            str(tmp_path / "run"),
            "--device",
            "cpu",
            "--max-group",
            "1",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "2 text tasks, mean task accuracy" in res.output
    assert len((tmp_path / "run" / "results.jsonl").read_text().splitlines()) == 2
    assert json.loads((tmp_path / "run" / "config.json").read_text())["max_group"] == 1
    assert "text tasks: 100%" in res.stderr  # the progress bar ran to the end
    (tmp_path / "run" / "report.html").unlink()
    res = CliRunner().invoke(app, ["report", str(tmp_path / "run")])  # `report` knows a text run
    assert res.exit_code == 0, res.output
    assert "2 text tasks" in res.output and (tmp_path / "run" / "report.html").exists()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x"}\n')
    res = CliRunner().invoke(
        app, ["evaluate", "--tasks", str(bad), "--model", str(model_dir), "--out", str(tmp_path / "b")]
    )
    assert not (tmp_path / "b").exists()
    assert res.exit_code == 2 and "bad.jsonl:1: task x: needs a non-empty" in res.output


# ---------------------------------------------------------------- report


def test_run_writes_a_report_that_escapes_text(model_dir, tmp_path):
    tricky = TextTask(
        "tricky <id>",
        "Answer with <b>bold</b> & friends.",
        (("a < b", "<yes>"), ("c > d", "<yes>")),
        (("e < f & g", "<yes>"), ("h", None)),
    )
    cfg = TextEvalConfig(tasks="unused.jsonl", model=str(model_dir), ttt=False, device="cpu",
                         predict_cfg=TextPredictConfig(max_new_tokens=4))
    recs = evaluate_text(cfg, tmp_path / "run", tasks=[tricky, yes_task()])
    page = (tmp_path / "run" / "report.html").read_text()
    assert "mean task accuracy" in page and "query accuracy" in page
    assert "e &lt; f &amp; g" in page and "&lt;yes&gt;" in page and "tricky &lt;id&gt;" in page
    assert "Answer with &lt;b&gt;bold&lt;/b&gt; &amp; friends." in page and "<b>bold</b>" not in page
    assert "fish bowl" in page and "Always answer yes." in page  # the second task's query and instruction
    for r in recs:  # every prediction is on the page, escaped
        assert all(html.escape(a) in page for a in r["answers"])

    # A prediction holding markup shows as text; right, wrong and unscored queries are marked.
    rec = {**recs[0], "answers": ["<script>alert(1)</script>", "x"], "correct": [False], "score": 0.0}
    page = text_report_html([rec], [tricky])
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "wrong" in page and "<i>unknown</i>" in page
    rec = {**rec, "answers": ["<yes>", "x"], "correct": [True], "score": 1.0}
    assert "right" in text_report_html([rec], [tricky])
    # Rewritten from the run folder alone (config.json names the task file).
    f = write_text_tasks([yes_task("a")], tmp_path / "t.jsonl")
    evaluate_text(dataclasses.replace(cfg, tasks=str(f)), tmp_path / "run2")
    (tmp_path / "run2" / "report.html").unlink()
    assert "fish bowl" in write_text_report(tmp_path / "run2").read_text()


# ---------------------------------------------------------------- torchrun


def test_torchrun_shards_text_tasks_and_merges(model_dir, tmp_path):
    tasks = [yes_task(f"t{k}", n_demos=2 + k) for k in range(4)]
    f = write_text_tasks(tasks, tmp_path / "tasks.jsonl")
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    src = str(Path(__file__).resolve().parents[1] / "src")  # this checkout's testtime, in the workers too
    env["PYTHONPATH"] = os.pathsep.join([src, *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone",
           "-m", "testtime", "evaluate", "--tasks", str(f), "--model", str(model_dir), "--out", str(out),
           "--samples", "2", "--rank", "2", "--device", "cpu", "--limit", "3"]
    res = subprocess.run(cmd, env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    per_rank = {p.name: [r["task_id"] for r in read_records(p)] for p in out.glob("results.rank*.jsonl")}
    assert sorted(per_rank) == ["results.rank0.jsonl", "results.rank1.jsonl"]
    assert all(per_rank.values()) and sorted(sum(per_rank.values(), [])) == ["t0", "t1", "t2"]  # each once
    merged = read_records(out / "results.jsonl")
    assert [r["task_id"] for r in merged] == ["t0", "t1", "t2"]  # task order
    assert all(r["error"] is None and len(r["answers"]) == 2 and r["ttt_loss"] for r in merged)
    assert (out / "report.html").exists() and "fish bowl" in (out / "report.html").read_text()

    # Resumed alone with a larger --limit: only the new task runs, and the merge keeps the ranks' records.
    cfg = TextEvalConfig(tasks=str(f), model=str(model_dir), device="cpu", ttt_cfg=text_ttt_config(samples=2, rank=2))
    recs = evaluate_text(cfg, out)
    assert [r["task_id"] for r in recs] == ["t0", "t1", "t2", "t3"] and recs[:3] == merged
    assert [r["task_id"] for p in out.glob("results.rank*.jsonl") for r in read_records(p)].count("t3") == 0


@pytest.mark.parametrize("flag", [["--views", "2"], ["--no-augment"], ["--no-loo"], ["--policy", "always"]])
def test_grid_only_flags_are_refused_for_text_tasks(tmp_path, flag):
    f = write_text_tasks([yes_task("a")], tmp_path / "tasks.jsonl")
    res = CliRunner().invoke(app, ["evaluate", "--tasks", str(f), "--out", str(tmp_path / "r"), *flag])
    assert res.exit_code == 2 and res.stderr == f"error: {flag[0]} applies to grid tasks, not text tasks\n"
    assert not (tmp_path / "r").exists()


def test_text_runs_take_their_config_file_and_shared_flags(model_dir, tmp_path):
    f = write_text_tasks([yes_task("a"), yes_task("b")], tmp_path / "tasks.jsonl")
    cfg_file = tmp_path / "c.json"
    cfg_file.write_text(json.dumps({"ttt": False, "predict_cfg": {"max_new_tokens": 4}}))
    res = CliRunner().invoke(app, ["evaluate", "--tasks", str(f), "--model", str(model_dir), "--device", "cpu",
                                   "--config", str(cfg_file), "--token-budget", "4096", "--no-cuda-graphs",
                                   "--out", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    assert cfg["ttt"] is False and cfg["predict_cfg"]["max_new_tokens"] == 4
    assert cfg["predict_cfg"]["token_budget"] == 4096 and cfg["predict_cfg"]["cuda_graphs"] is False
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["complete"]
