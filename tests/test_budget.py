"""The CPU time budget (`testtime.stages.budget`): a task that fits runs as configured; one that does not is cut in the
stated order until its estimate fits; the flag is checked; the record says what was cut. No timing here: a fixed
pace stands in for the timed one (the seconds themselves are measured by benchmarks/bench_cpu_budget.py)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from typer.testing import CliRunner

from testtime.cli import app
from testtime.data.encode import GridCodec
from testtime.data.tasks import Example, Task, save_task, save_tasks
from testtime.model.loading import ModelConfig, build_model, save_model
from testtime.recipes.grid import EvalConfig, evaluate, plan_of, solve_task
from testtime.stages import budget
from testtime.stages.budget import Estimator, Shape, Speed, context_lengths, fit, total
from testtime.stages.policy import Plan

runner = CliRunner()
PACE = Speed(row_token=1e-3, step=0.02)  # about the 2-core CPU's pace on the shipped model


def big_task(demos: int = 3, side: int = 30, tests: int = 1, seed: int = 0) -> Task:
    """Demos of growing size (so the longest is a known one), each output the input mirrored."""
    rng = np.random.default_rng(seed)

    def ex(h: int) -> Example:
        g = rng.integers(0, 10, (h, side)).astype(np.uint8)
        return Example(g, np.ascontiguousarray(g[:, ::-1]))

    return Task("big", tuple(ex(side - 2 * i) for i in range(demos)), tuple(ex(side) for _ in range(tests)))


def default_work() -> Plan:
    return plan_of(EvalConfig())


def toy_cost(work: Plan) -> dict[str, float]:
    """Seconds that fall with every lever: context, scoring views, views, TTT steps."""
    w = work
    ttt = w.ttt.steps * w.ttt.max_len / 1000 if w.policy.ttt else 0.0
    scoring = 0.0 if w.select.method == "vote" else w.select.views * w.select.colors * w.predict.max_len / 1000
    return {"icl": 0.0, "loo": 0.0, "ttt": ttt, "predict": w.predict.views * w.predict.orders * w.predict.max_len / 500,
            "select": scoring}


def test_a_task_that_fits_is_not_cut():
    task = big_task()
    work = default_work()
    plan = fit(task, work, GridCodec(), None, PACE, 300, estimator=lambda w: dict(toy_cost(w), ttt=1.0))
    assert plan.cuts == [] and plan.plan is work and plan.fits
    assert "within the budget of 300 s" in plan.line()


def test_the_shipped_shape_prices_a_small_task_well_inside_the_default():
    """The README's main job (two 2x2 -> 6x6 demos) is nowhere near five minutes at this CPU's pace (with 2
    adapters it measured 56 s, results/cpu-2026-12-07-a2.md)."""
    from testtime.data.tasks import resolve_task

    shipped_shape = build_model(ModelConfig())  # random weights: only its shape is priced
    plan = fit(resolve_task("arc1/eval/00576224"), default_work(), GridCodec(), shipped_shape, PACE,
               budget.DEFAULT_CPU_SECONDS)
    assert plan.cuts == [] and 1 < total(plan.planned) < 150


def test_cuts_come_in_rounds_in_the_stated_order_until_the_estimate_fits():
    task = big_task(demos=3)
    work = default_work()
    # One adapter: the extras (a second adapter among them) go before these rounds (test_recipes.py tests that).
    work = replace(work, ensemble=replace(work.ensemble, adapters=1))
    seen: list[Plan] = []

    def cost(w: Plan) -> dict[str, float]:
        seen.append(w)
        return toy_cost(w)

    plan = fit(task, work, GridCodec(), None, PACE, 40, estimator=cost)
    room = budget.MARGIN * 40  # a task cut aims below the budget, for the estimate's error
    assert plan.fits and total(plan.planned) <= room

    def lever(a: Plan, b: Plan) -> str:
        changed = [name for name, x, y in (("context", a.predict.max_len, b.predict.max_len),
                                           ("scoring", (a.select.views * a.select.colors, a.select.method),
                                            (b.select.views * b.select.colors, b.select.method)),
                                           ("views", a.predict.views * a.predict.orders, b.predict.views * b.predict.orders),
                                           ("ttt", a.ttt.steps, b.ttt.steps)) if x != y]
        assert len(changed) == 1, changed  # one lever a cut
        return changed[0]

    order = [lever(a, b) for a, b in zip(seen, seen[1:], strict=False)]
    rounds = ["context", "scoring", "views", "ttt"]
    assert order[:8] == rounds + rounds  # three demos: context twice, with every other lever between
    assert "context" not in order[8:]  # one demo left: that lever is spent
    last_cut = next(k for k in range(len(seen)) if total(toy_cost(seen[k])) <= room)  # the halvings stop here
    assert all(x == "ttt" for x in order[last_cut:])  # and then only TTT steps come back
    assert plan.plan.ttt.steps >= seen[last_cut].ttt.steps
    assert total(toy_cost(budget.with_steps(plan.plan, plan.plan.ttt.steps + 1))) > room  # as many as the room holds
    lengths = context_lengths(task, GridCodec())
    assert plan.plan.predict.max_len == lengths[0] and plan.plan.ttt.max_len == lengths[0]
    assert plan.cuts == [f"context 3 -> 1 demo (max_len {lengths[0]})", "no scoring (as few answers as attempts)",
                         "views 8 -> 1", f"TTT {work.ttt.steps} -> {plan.plan.ttt.steps} steps"]
    assert plan.plan.ttt.epochs == 1 and plan.plan.ttt.steps >= budget.MIN_TTT_STEPS
    assert "over the budget of 40 s; cut to" in plan.line()


def test_the_cuts_are_described_as_they_stand():
    w = default_work()
    lengths = [100, 200, 300]
    after = replace(w, select=replace(w.select, colors=1, views=4), predict=replace(w.predict, views=4, max_len=200))
    assert budget.describe(w, after, lengths) == ["context 3 -> 2 demos (max_len 200)", "scoring views 16 -> 4",
                                                  "views 8 -> 4"]
    vote = replace(w, select=replace(w.select, method="vote"), predict=replace(w.predict, views=4))
    assert budget.describe(w, vote, lengths) == ["scoring 16 views -> off (vote)", "views 8 -> 4"]
    assert budget.describe(w, budget.no_ttt(budget.with_steps(w, 4)), lengths) == ["no TTT"]
    assert budget.describe(w, w, lengths) == []


def test_the_context_cut_drops_the_longest_demos_first():
    task = big_task(demos=3)  # demo 0 is the longest, demo 2 the shortest
    codec = GridCodec()
    lengths = context_lengths(task, codec)
    from testtime.data.encode import encode_example

    for k, max_len in enumerate(lengths, 1):
        enc = encode_example(codec, task.train, Example(task.test[0].input), max_len=max_len)
        assert enc.demos_used == tuple(range(3 - k, 3)), k  # the k shortest


def test_a_context_cut_leaves_prompts_when_the_largest_grid_is_in_a_dropped_demo():
    """The encoder keeps room for an answer as large as the largest grid of every demo, kept or not: a cut sized
    by the kept demos alone left no prompt at all (a 20x20 demo beside 3x3 and 2x2 ones and a 2x2 test)."""
    from testtime.stages.predict import PredictConfig, make_queries

    rng = np.random.default_rng(0)

    def ex(side: int) -> Example:
        g = rng.integers(0, 10, (side, side)).astype(np.uint8)
        return Example(g, np.ascontiguousarray(g.T))

    task = Task("skewed", (ex(20), ex(3), ex(2)), (Example(ex(2).input),))
    codec = GridCodec()
    lengths = context_lengths(task, codec)
    for k, max_len in enumerate(lengths, 1):
        queries, problems = make_queries([task], codec, PredictConfig(views=8, max_len=max_len))
        assert len(queries) == 8 and not problems, (k, problems)


def test_a_refill_back_to_every_step_restores_the_configured_recipe():
    """Halved, then refilled to the configured step count: the configured samples and epochs, not one epoch of
    fresh samples (which no cut line would mention)."""
    work = default_work()
    half = budget.with_steps(work, work.ttt.steps // 2)
    got, _ = budget.refill_steps(half, toy_cost(half), work, room=1e9, estimate=toy_cost)
    assert got.ttt == work.ttt
    assert budget.describe(work, got, [100]) == []


def test_when_nothing_is_left_to_cut_ttt_goes_and_the_plan_says_it_is_still_over():
    task = big_task(demos=2)
    plan = fit(task, default_work(), GridCodec(), None, PACE, 1, estimator=toy_cost)
    w = plan.plan
    assert not w.policy.ttt and w.select.method == "vote" and w.predict.views * w.predict.orders == 1
    assert plan.cuts[-1] == "no TTT" and not plan.fits and plan.line().endswith("(still over: nothing left to cut)")


def test_the_estimate_follows_the_work():
    """More TTT steps, views or scoring views cost more; the vote scores nothing; a longer context costs more."""
    model = build_model(ModelConfig(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128))
    task = big_task(demos=3, side=12)
    est = Estimator(task, GridCodec(), Shape.of(model), PACE)
    work = default_work()
    base = est(work)
    assert base["ttt"] > 0 and base["predict"] > 0 and base["select"] > 0 and base["icl"] == 0
    half = est(replace(work, ttt=replace(work.ttt, epochs=1, samples=work.ttt.steps)))  # half the steps (bs 2)
    assert half["ttt"] == pytest.approx(base["ttt"] / 2, rel=0.1)
    assert est(replace(work, predict=replace(work.predict, views=2)))["predict"] < base["predict"]
    assert est(replace(work, select=replace(work.select, colors=1)))["select"] < base["select"]
    assert est(replace(work, select=replace(work.select, method="vote")))["select"] == 0
    short = context_lengths(task, GridCodec())[0]
    cut = est(replace(work, ttt=replace(work.ttt, max_len=short), predict=replace(work.predict, max_len=short)))
    assert cut["ttt"] < base["ttt"] and cut["predict"] < base["predict"]
    never = est(budget.no_ttt(work))
    assert never["ttt"] == never["predict"] == 0 and never["icl"] > 0


def test_the_leave_one_out_check_is_priced_as_scoring_not_decoding():
    """Each check scores the held-out demos' answers after their prompts (a pass over each), far cheaper than
    decoding them; every check of a policy costs alike; a task of one demo has none to check."""
    from testtime.stages.policy import POLICIES, loo_tasks
    from testtime.stages.predict import make_queries

    model = build_model(ModelConfig(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128))
    task = big_task(demos=3, side=12)
    shape = Shape.of(model)
    est = Estimator(task, GridCodec(), shape, PACE)
    work = default_work()
    once = est(replace(work, policy=POLICIES["loo-stop"]))["loo"]  # between its two rounds
    assert est(replace(work, policy=POLICIES["adaptive"]))["loo"] == pytest.approx(3 * once)  # base, round, pick
    assert est(work)["loo"] == 0  # the default policy runs no check
    queries, _ = make_queries(loo_tasks(task), GridCodec(), replace(work.predict, views=1, orders=1))
    decode = budget.decode_seconds([len(q.prompt) for q in queries], [q.max_new for q in queries],
                                   shape.token_budget, shape, PACE)
    assert 0 < once < decode / 3
    one = Estimator(replace(task, train=task.train[:1]), GridCodec(), shape, PACE)
    assert one(replace(work, policy=POLICIES["adaptive"]))["loo"] == 0


# ---------------------------------------------------------------- wiring: records, output, flags


@pytest.fixture()
def slow(monkeypatch):
    """A machine so slow that any task is over a budget of 60 s (the timing is not what these tests check)."""
    monkeypatch.setattr(budget, "measure_speed", lambda model, tokens=256: Speed(row_token=0.05, step=0.5))


def test_the_record_says_what_was_cut_and_the_cut_task_runs_so(tmp_path, tiny, small_cfg, synthetic_tasks, slow):
    model, codec = tiny
    tasks = synthetic_tasks(3)
    cfg = small_cfg(**{"ttt_cfg.samples": 16, "ttt_cfg.epochs": 2, "predict_cfg.views": 4})
    said: list[str] = []
    recs = evaluate(cfg, tmp_path, model=model, codec=codec, tasks=tasks, show_progress=False, max_seconds=60,
                    say=said.append)
    assert [r["task_id"] for r in recs] == [t.id for t in tasks]
    for r in recs:
        note = r["budget"]
        assert note["max_seconds"] == 60 and note["cuts"] and set(note["estimate"]) == set(r["compute"])
        assert note["estimate_uncut"] > sum(note["estimate"].values())
        if r["policy"]["name"] != "never":  # what the record says was cut is what ran
            ttt_cuts = [c for c in note["cuts"] if c.startswith("TTT")]
            assert len(ttt_cuts) == 1, note["cuts"]
            assert r["policy"]["ttt_steps"] == int(ttt_cuts[0].split()[-2])
    assert len(said) == 3 and all(s.startswith("task t") and "over the budget of 60 s" in s for s in said)
    stored = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [r["budget"]["cuts"] for r in stored] == [r["budget"]["cuts"] for r in recs]


def test_without_a_budget_nothing_is_timed_or_noted(tmp_path, tiny, small_cfg, synthetic_tasks, monkeypatch):
    monkeypatch.setattr(budget, "measure_speed", lambda *a, **k: pytest.fail("timed without a budget"))
    model, codec = tiny
    recs = evaluate(small_cfg(), tmp_path, model=model, codec=codec, tasks=synthetic_tasks(2), show_progress=False)
    assert all("budget" not in r for r in recs)


def test_a_task_within_its_budget_runs_exactly_as_without_one(tmp_path, tiny, small_cfg, synthetic_tasks):
    model, codec = tiny
    tasks = synthetic_tasks(3)
    keys = ("attempts", "ttt_loss", "policy", "tokens")
    plain = evaluate(small_cfg(), tmp_path / "a", model=model, codec=codec, tasks=tasks, show_progress=False)
    fitted = evaluate(small_cfg(), tmp_path / "b", model=model, codec=codec, tasks=tasks, show_progress=False,
                      max_seconds=3600)
    assert all(r["budget"]["cuts"] == [] for r in fitted)
    assert [{k: r[k] for k in keys} for r in fitted] == [{k: r[k] for k in keys} for r in plain]


def test_solve_states_the_plan_before_the_work(tiny, small_cfg, flip_task, slow):
    model, codec = tiny
    said: list[str] = []
    rec = solve_task(flip_task(), small_cfg(), model, codec, show_progress=False, max_seconds=10, spent=5,
                     say=said.append)
    assert len(said) == 1 and said[0].startswith("estimated ") and "(5 s spent loading)" in said[0]
    assert rec["budget"]["cuts"] and rec["budget"]["spent"] == 5


def test_the_command_line_shows_the_plan(tmp_path, flip_task, slow):
    save_model(build_model(ModelConfig.tiny()), None, tmp_path / "model")
    task = tmp_path / "task.json"
    save_task(flip_task(), task)
    args = ["--model", str(tmp_path / "model"), "--device", "cpu", "--samples", "2", "--epochs", "1", "--views", "1"]
    res = runner.invoke(app, ["solve", str(task), *args, "--max-seconds", "5"])
    assert res.exit_code == 0, res.output
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith("estimated "))
    assert "over the budget of 5 s" in line and "cut to" in line
    assert "budget 5 s)" in res.stdout.splitlines()[-1]
    save_tasks([flip_task(seed=1, tid="a")], tmp_path / "tasks")
    res = runner.invoke(app, ["evaluate", "--tasks", str(tmp_path / "tasks"), "--out", str(tmp_path / "r"), *args,
                              "--max-seconds", "5"])
    assert res.exit_code == 0, res.output
    assert "task a: estimated " in res.stdout
    assert json.loads((tmp_path / "r" / "results.jsonl").read_text())["budget"]["max_seconds"] == 5


@pytest.mark.parametrize("value, shown", [("0", "0"), ("-5", "-5"), ("nan", "nan"), ("inf", "inf"),
                                          ("3000000", "3000000")])
def test_the_flag_is_checked(value, shown, tmp_path, one_line_error):
    message = f"--max-seconds must be > 0 and <= 2592000, got {shown}"
    one_line_error(runner.invoke(app, ["solve", "arc1/eval/00576224", "--max-seconds", value]), message)
    one_line_error(runner.invoke(app, ["evaluate", "--tasks", "arc1/eval", "--out", str(tmp_path / "r"),
                                       "--max-seconds", value]), message)
    assert not (tmp_path / "r").exists()


def test_text_tasks_refuse_the_flag(tmp_path, one_line_error):
    text = tmp_path / "t.jsonl"
    text.write_text('{"id": "a", "demos": [["1", "2"]], "queries": [["3", "4"]]}\n')
    one_line_error(runner.invoke(app, ["evaluate", "--tasks", str(text), "--max-seconds", "10"]),
                   "--max-seconds applies to grid tasks")


def test_the_default_budget_is_for_the_cpu():
    assert budget.default_max_seconds("cpu") == 300 and budget.default_max_seconds("cuda:0") is None


def test_a_plan_of_stages_under_a_second_says_so():
    w = default_work()
    quick = {k: 0.1 for k in budget.STAGES}
    line = budget.Fit(300, w, quick, quick, [], PACE).line()
    assert line == "estimated 0 s (each stage under a second), within the budget of 300 s"


class CountingCodec(GridCodec):
    """The grid codec, counting the grids it encodes as inputs (every demo of every prompt the budget measures), and
    failing as soon as they pass `limit` (a quadratic estimate fails at once instead of running for hours)."""

    calls, limit = 0, 0

    def input_piece(self, grid):
        CountingCodec.calls += 1
        assert CountingCodec.calls <= CountingCodec.limit, f"over {CountingCodec.limit} grids encoded"
        return super().input_piece(grid)


def test_a_task_of_thousands_of_demos_is_estimated_and_cut_in_linear_work(tiny, deadline):
    """Issue 31: a legal 50 MB task (9,455 demos of 30x30 grids) kept `solve --no-ttt --views 1` in the budget's own
    estimate for over 590 s, which measured the prompt at each number of demos k = 1..n by encoding all n demos
    (quadratic). It is estimated, and cut to fit, by encoding each demo a bounded number of times; the hang guard only
    stops a regression that would otherwise run for hours."""
    n = 9455
    rng = np.random.default_rng(0)
    grids = rng.integers(0, 10, (2 * n + 1, 30, 30)).astype(np.uint8)
    task = Task("many", tuple(Example(grids[2 * i], grids[2 * i + 1]) for i in range(n)), (Example(grids[-1]),))
    model, _ = tiny
    cfg = EvalConfig()
    cfg.ttt, cfg.predict_cfg.views = False, 1
    codec = CountingCodec()
    CountingCodec.calls, CountingCodec.limit = 0, 4 * n  # 2 views (as given and turned), and the queries: not n * n
    with deadline(600):
        lengths = context_lengths(task, codec)
        assert len(lengths) == n and lengths == sorted(lengths)
        CountingCodec.calls, CountingCodec.limit = 0, 30 * n  # each estimate encodes every demo a few times at most
        plan = fit(task, plan_of(cfg), codec, model, PACE, 60.0)
    assert plan.cuts[0] == f"context 3 -> 1 demo (max_len {lengths[0]})"  # 3 of them fit in max_len 8192
