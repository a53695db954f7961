"""The named recipes (`testtime.api.RECIPES`: default, fast, max) and what the CPU time budget makes of the levers
they turn: priced, and cut first when a task is over its budget."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from testtime.api import RECIPES, Solver
from testtime.cli import app
from testtime.recipes.grid import EvalConfig, load_eval_config, plan_of
from testtime.stages.budget import Estimator, Shape, Speed, fit, total

CONFIGS = Path(__file__).parents[1] / "configs"
PACE = Speed(row_token=1e-3, step=0.02)


def test_three_recipes_each_with_its_config_file():
    assert list(RECIPES) == ["default", "fast", "max"]
    assert RECIPES["default"].config() == EvalConfig()
    for name in ("fast", "max"):
        assert load_eval_config(CONFIGS / f"recipe-{name}.json") == RECIPES[name].config()
    fast, mx = plan_of(RECIPES["fast"].config()), plan_of(RECIPES["max"].config())
    default = plan_of(EvalConfig())
    assert fast.steps == default.steps // 2 and fast.predict.views == 4
    assert mx.ensemble.adapters == 4 and mx.predict.dfs == 0.1 and mx.second.steps == 32
    out = CliRunner().invoke(app, ["recipes"])
    assert out.exit_code == 0 and [line.split(":")[0] for line in out.output.splitlines()] == list(RECIPES)


def test_the_budget_prices_each_lever(tiny, flip_task):
    model, codec = tiny
    estimate = Estimator(flip_task(tests=2), codec, Shape.of(model), PACE)
    base = plan_of(EvalConfig())
    base = replace(base, ensemble=replace(base.ensemble, adapters=1))
    plain = estimate(base)
    two = estimate(replace(base, ensemble=replace(base.ensemble, adapters=2)))
    assert two["ttt"] == pytest.approx(2 * plain["ttt"]) and two["predict"] == pytest.approx(2 * plain["predict"])
    assert two["select"] == pytest.approx(2 * plain["select"])
    sampled = estimate(replace(base, predict=replace(base.predict, dfs=0.1)))
    assert sampled["predict"] > plain["predict"] and sampled["ttt"] == plain["ttt"]
    again = estimate(replace(base, second=replace(base.second, steps=32)))
    assert "second" not in plain and again["second"] > plain["predict"] + plain["select"]
    assert again["second"] < plain["ttt"] + plain["predict"] + plain["select"]  # 32 steps, not 96


def test_a_max_task_over_its_budget_loses_the_extras_first(tiny, flip_task):
    model, codec = tiny
    task = flip_task(tests=2)
    plan = plan_of(RECIPES["max"].config())
    estimate = Estimator(task, codec, Shape.of(model), PACE)
    need = total(estimate(plan))
    extras_off = replace(plan, second=replace(plan.second, steps=0), predict=replace(plan.predict, dfs=None),
                         ensemble=replace(plan.ensemble, adapters=1))
    # Room for the default's plan, not for max's: the extras go, and nothing else.
    room = total(estimate(extras_off)) / 0.9 * 1.01
    assert room < need
    cut = fit(task, plan, codec, model, PACE, room)
    assert cut.cuts == ["no second round", "greedy decoding instead of depth-first sampling", "adapters 4 -> 1"]
    assert cut.plan == extras_off and cut.fits
    half = fit(task, plan, codec, model, PACE, total(estimate(replace(extras_off, ensemble=plan.ensemble))) / 0.9)
    assert "adapters" not in " ".join(half.cuts) and half.plan.ensemble.adapters == 4 and half.plan.predict.dfs is None


def test_max_runs_end_to_end_on_a_cpu(tiny, flip_task):
    """Every lever at once, on a tiny model (settings small, levers as the recipe has them)."""
    model, codec = tiny
    res = Solver(model, codec).solve(
        flip_task(tests=2), recipe="max", max_seconds=None, show_progress=False,
        **{"samples": 2, "epochs": 1, "views": 2, "second_cfg.steps": 1, "second_cfg.margin": 0.0,
           "second_cfg.agreement": 0.0, "predict_cfg.max_len": 320, "select_cfg.views": 1, "select_cfg.colors": 1})
    rec = res.record
    assert rec["adapters"] == 4 and rec["error"] is None and len(rec["recall"]["candidates"]) == 2
    assert rec["policy"]["ttt_steps"] == 1 and rec["tokens"]["generated"] > 0
    assert rec["second_round"]["steps"] in (0, 1)  # a random model is rarely confident; the round looked


def test_the_levers_flags_are_checked_on_the_command_line(one_line_error):
    runner = CliRunner()
    one_line_error(runner.invoke(app, ["evaluate", "--adapters", "0"]), "--adapters must be between 1 and 16, got 0")
    one_line_error(runner.invoke(app, ["solve", "arc1/eval/00576224", "--dfs", "1.5"]), "--dfs must be > 0 and <= 1")
    one_line_error(runner.invoke(app, ["evaluate", "--second-round", "-2"]), "--second-round must be between 0 and")
    one_line_error(runner.invoke(app, ["evaluate", "--tasks", "data/text/sample.jsonl", "--adapters", "2"]),
                   "--adapters applies to grid tasks, not text tasks")
