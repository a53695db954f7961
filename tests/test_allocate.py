"""The cuts of the fixed cost and the budget (`testtime.stages.allocate`), on scripted signals and a clock that moves
by each call's cost: each cut is taken only when its signal says so, and a budget is never overspent by more than
one task's worth."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import pytest

from testtime.stages.allocate import SCORE_FEW, Ledger, Pace, Units, gain, run_anytime
from testtime.stages.policy import POLICIES, resolve_plan
from testtime.stages.predict import PredictConfig
from testtime.stages.selection import SelectConfig
from testtime.stages.ttt import TTTConfig

# The fake's real seconds are this share of the cost model's (a GPU runs batched work far faster than the probe).
SPEED = 0.25


@dataclass
class Pred:
    """A fake task's predictions: whose, through an adapter or not, under which views."""

    item: int
    adapted: bool
    views: tuple[int, ...]


@dataclass
class FakeOps:
    """A group's calls (`policy.GroupOps`) with scripted signals, its clock moved by each call's modelled cost."""

    units: list[Units]
    agreement_icl: list[float]
    loo_base: list[float | None]
    loo_rounds: list[list[float | None]]  # per round, per item: the adapter's check after it
    agreement_few: list[float] = field(default_factory=list)  # of the settle views, through the adapter
    agreement_final: list[float] = field(default_factory=list)
    answers: list[int] = field(default_factory=list)  # distinct answers of the final predictions
    now: float = 0.0
    calls: list[tuple] = field(default_factory=list)
    trained_round: int = 0

    def spend(self, modelled: float) -> None:
        self.now += SPEED * modelled

    def predict(self, items, adapted, more_orders=1, views=None, first_view=0):
        self.calls.append(("predict", tuple(items), adapted, views, first_view))
        self.spend(sum(self.units[i].view for i in items) * (views - first_view))
        return [Pred(i, adapted, tuple(range(first_view, views))) for i in items], []

    def combine(self, prediction, more):
        return Pred(prediction.item, prediction.adapted, prediction.views + more.views)

    def agreement(self, p: Pred) -> float:
        if not p.adapted:
            return self.agreement_icl[p.item]
        if p.views == (0, 1, 2, 3) and self.agreement_few:
            return self.agreement_few[p.item]
        return self.agreement_final[p.item] if self.agreement_final else 0.0

    def candidates(self, p: Pred) -> int:
        return self.answers[p.item] if self.answers and p.adapted else 1

    def leave_one_out(self, items, adapted):
        self.calls.append(("loo", tuple(items), adapted))
        self.spend(sum(self.units[i].loo for i in items))
        if not adapted:
            return [self.loo_base[i] for i in items]
        return [self.loo_rounds[self.trained_round - 1][i] for i in items]

    def fresh_adapters(self):
        self.calls.append(("fresh",))

    def train(self, items, steps, round_index):
        self.calls.append(("train", tuple(items), steps, round_index))
        self.trained_round = round_index + 1
        self.spend(sum(self.units[i].step for i in items) * steps)
        return [[0.5] * steps for _ in items], 100 * len(items)

    def clock(self) -> float:
        return self.now


def plan(name: str = "settle", steps_per_epoch: int = 8, **policy):
    """The named policy's plan at 8 views, product of experts over 8 candidates; 6 epochs of 8 steps (48)."""
    p = dataclasses.replace(POLICIES[name], **policy)
    pl = resolve_plan("always", TTTConfig(samples=2 * steps_per_epoch, epochs=6), PredictConfig(views=8),
                      SelectConfig(), attempts=2)
    return dataclasses.replace(pl, policy=p)


UNITS = Units(view=1.0, loo=0.5, step=0.2, scoring=2.0, candidate=0.5)


def ops_for(n, agreement_icl=None, loo_base=None, loo_rounds=None, units=None, **kw) -> FakeOps:
    return FakeOps(units or [UNITS] * n, agreement_icl or [0.0] * n, loo_base or [0.0] * n,
                   loo_rounds or [[0.5] * n, [0.5] * n], **kw)


def run(pl, ops, allot=None, pace=None):
    return run_anytime(pl, len(ops.units), ops, ops.units, pace or Pace(), allot)


# ---------------------------------------------------------------- each cut, only when its signal says so


def test_skip_ttt_only_where_the_views_agree_and_the_base_model_solves_every_held_out_demo():
    ops = ops_for(4, agreement_icl=[1.0, 1.0, 0.5, 1.0], loo_base=[1.0, 0.5, 1.0, None])
    out = run(plan(), ops)
    assert out.decision[0] == "answer" and out.steps[0] == 0 and "skip-ttt" in out.cuts[0]
    assert out.cuts[0]["few-views"] > 0  # answered from the cheap pass's 2 views, not 8
    for i in (1, 2, 3):  # a held-out demo failed, a view disagreed, no demo to check
        assert out.steps[i] > 0 and "skip-ttt" not in out.cuts[i]
    assert ("predict", (0, 1, 2, 3), False, 2, 0) in ops.calls  # the cheap pass: every task, 2 views
    assert all(c[1] != (0,) for c in ops.calls if c[0] == "train")


def test_early_stop_and_give_up_only_where_the_adapters_check_says_so():
    ops = ops_for(3, loo_rounds=[[1.0, 0.0, 0.5]])
    out = run(plan(), ops)
    assert out.decision == ["stopped", "gave-up", "long"]
    assert out.steps == [24, 24, 48]
    assert "early-stop" in out.cuts[0] and "give-up" in out.cuts[1] and not {"early-stop", "give-up"} & set(out.cuts[2])
    assert out.cuts[0]["early-stop"] == pytest.approx(0.2 * 24 * SPEED, rel=0.01)  # the second round's steps
    # Without give_up, a task whose adapter solves no held-out demo trains on.
    out = run(plan(give_up=False), ops_for(3, loo_rounds=[[1.0, 0.0, 0.5]]))
    assert out.decision == ["stopped", "long", "long"] and "give-up" not in out.cuts[1]


def test_few_views_only_where_they_agree_else_the_rest_of_the_views_are_added():
    ops = ops_for(3, loo_rounds=[[1.0, 1.0, 0.5]], agreement_few=[1.0, 0.75, 0.0])
    out = run(plan(), ops)
    preds = [c for c in ops.calls if c[0] == "predict" and c[2]]
    assert ("predict", (2,), True, 8, 0) in preds  # trained to the end: every view
    assert ("predict", (0, 1), True, 4, 0) in preds  # its check passed: 4 views first
    assert ("predict", (1,), True, 8, 4) in preds  # they disagreed: the other 4 views, added
    assert out.final[0].views == (0, 1, 2, 3) and "few-views" in out.cuts[0]
    assert out.final[1].views == tuple(range(8)) and "few-views" not in out.cuts[1]
    assert "few-views" not in out.cuts[2]


@pytest.mark.parametrize("share, answers, score, cut", [
    (0.75, 6, 0, "no-scoring"),  # the top answer holds 6 of 8 views
    (0.625, 6, 0, "no-scoring"),
    (0.5, 6, SCORE_FEW, "few-candidates"),  # 4 of 8: only its top candidates
    (0.5, 3, None, None),  # no more candidates than the few: nothing to cut
    (0.375, 6, None, None),  # 3 of 8: every candidate is scored
    (0.75, 2, None, None),  # two answers are both attempts: not scored whatever the signal
])
def test_scoring_cuts_only_where_the_final_answers_agree(share, answers, score, cut):
    ops = ops_for(1, loo_rounds=[[0.5]], agreement_final=[share], answers=[answers])
    out = run(plan(), ops)
    assert out.score[0] == score
    assert out.signals[0]["agreement_final"] == share
    assert set(out.cuts[0]) & {"no-scoring", "few-candidates"} == ({cut} if cut else set())


def test_a_policy_without_the_scoring_thresholds_cuts_no_scoring():
    ops = ops_for(1, loo_rounds=[[0.5]], agreement_final=[1.0], answers=[6])
    out = run(plan(score_none_at=None, score_few_at=None), ops)
    assert out.score == [None] and not out.cuts[0]


def test_every_stage_is_charged_and_teaches_the_pace():
    pace = Pace()
    ops = ops_for(2, loo_rounds=[[0.5, 0.5]])
    out = run(plan(), ops, pace=pace)
    assert sum(sum(s.values()) for s in out.spent) == pytest.approx(ops.now)
    for piece in ("view", "loo", "step"):
        assert pace.factor(piece) == pytest.approx(SPEED)
    assert Pace().factor("step") == 1.0  # nothing seen: the model's own seconds
    seen = Pace()
    seen.observe("view", 1.0, 4.0)
    seen.observe("loo", 1.0, 16.0)
    assert seen.factor("step") == pytest.approx(0.125)  # unseen: the geometric mean of the others


# ---------------------------------------------------------------- the budget


def test_rounds_go_by_expected_gain_per_second():
    assert gain({"agreement": 0.0}, 0) > gain({"agreement": 1.0}, 0)
    assert gain({"loo_round1": 0.5}, 1) > gain({"loo_round1": 0.0}, 1)
    assert gain({"loo_round2": 0.5}, 2) < gain({"loo_round1": 0.5}, 1)
    # Three unsettled tasks, room for one first round: the least agreed of the two alike in cost, not the costly one.
    costly = dataclasses.replace(UNITS, step=2.0)
    ops = ops_for(3, agreement_icl=[0.5, 0.0, 0.0], units=[UNITS, UNITS, costly])
    floor = SPEED * (3 * 2 * UNITS.view + 3 * UNITS.loo)
    one = SPEED * (24 * UNITS.step + UNITS.loo + 8 * UNITS.view + UNITS.select(8))
    out = run(plan(), ops, allot=floor + 1.1 * one, pace=trained_pace())
    assert out.steps == [0, 24, 0] and out.decision == ["icl", "budget", "icl"]  # no room left for its second round


def trained_pace() -> Pace:
    """A pace that has seen every piece run at SPEED (a group before this one)."""
    pace = Pace()
    for piece in ("view", "loo", "step", "select"):
        pace.observe(piece, SPEED, 1.0)
    return pace


def test_a_tight_budget_buys_the_cheap_pass_alone_and_a_loose_one_every_round():
    tight = run(plan("anytime"), ops_for(3, loo_rounds=[[0.5] * 3] * 2), allot=0.0, pace=trained_pace())
    assert tight.steps == [0, 0, 0] and tight.decision == ["icl"] * 3
    loose = run(plan("anytime"), ops_for(3, loo_rounds=[[0.5] * 3] * 2), allot=1e9, pace=trained_pace())
    assert loose.steps == [96] * 3 and loose.decision == ["long"] * 3
    assert run(plan("anytime"), ops_for(3, loo_rounds=[[0.5] * 3] * 2), pace=trained_pace()).steps == [96] * 3


def simulate(policy: str, per_task: float | None) -> tuple[float, float]:
    """A run of 24 tasks in groups of 5 (the last of 4), of costs and signals that vary, on a machine 4x faster than
    the cost model prices it, under a budget of `per_task` (None: none): what it spent, and the most one task did."""
    n, size = 24, 5
    units = [Units(view=1.0 + i % 3, loo=0.5, step=0.1 * (1 + i % 4), scoring=2.0, candidate=0.4) for i in range(n)]
    agree = [(i % 5) / 4 for i in range(n)]
    loo1 = [[1.0, 0.0, 0.5, 0.25][i % 4] for i in range(n)]
    pl = plan(policy)
    ledger = Ledger.start(per_task or 0.0, n, 0.0, 0, n, {str(i): u.reference(pl) for i, u in enumerate(units)})
    pace = Pace()
    spent, worst = 0.0, 0.0
    for start in range(0, n, size):
        items = list(range(start, min(n, start + size)))
        ops = FakeOps([units[i] for i in items], [agree[i] for i in items], [0.5] * len(items),
                      [[loo1[i] for i in items], [0.5] * len(items)], answers=[6] * len(items),
                      agreement_final=[0.25] * len(items))
        allot = None if per_task is None else ledger.allot([str(i) for i in items])
        out = run_anytime(pl, len(items), ops, ops.units, pace, allot)
        # The kind's selection after it: a trained task's 6 answers, as many as it is left to score; an untrained
        # task's one answer from the cheap pass is not scored.
        work = sum(u.select(min(6, 8 if k is None else k)) for u, k, steps in zip(ops.units, out.score, out.steps,
                                                                                  strict=True) if steps)
        pace.observe("select", SPEED * work, work)
        group = ops.now + SPEED * work
        worst = max(worst, *(sum(s.values()) + SPEED * work / len(items) for s in out.spent))
        spent += group
        ledger.charge([str(i) for i in items], group)
    return spent, worst


@pytest.mark.parametrize("per_task", [1.5, 3.0, 6.0, 12.0, 40.0])
@pytest.mark.parametrize("policy", ["anytime", "settle"])
def test_a_budget_is_never_overspent_by_more_than_one_tasks_worth(per_task, policy):
    """Above the floor (the cheap pass on every task, about 1.1 s a task here), and spent where there is work left to
    buy: within one task's worth either way, what the run would spend without a budget included."""
    spent, worst = simulate(policy, per_task)
    demand, _ = simulate(policy, None)
    assert spent <= per_task * 24 + worst
    assert spent >= min(per_task * 24, demand) - worst


def test_spending_grows_with_the_budget():
    def spent(per_task: float) -> tuple[float, int]:
        n = 10
        ops = ops_for(n, agreement_icl=[i / 10 for i in range(n)], loo_rounds=[[0.5] * n, [0.5] * n])
        out = run(plan("anytime"), ops, allot=per_task * n, pace=trained_pace())
        return ops.now, sum(out.steps)

    points = [spent(b) for b in (0.5, 2.0, 4.0, 8.0, 30.0)]
    assert [s for s, _ in points] == sorted(s for s, _ in points)
    assert [k for _, k in points] == sorted(k for _, k in points)
    assert points[0][1] == 0 and points[-1][1] == 10 * 96


def test_the_ledger_shares_what_is_left_by_reference_work_and_resumes_from_what_was_spent():
    led = Ledger.start(2.0, n_run=10, done_seconds=6.0, n_done=4, n_mine=3, refs={"a": 1.0, "b": 3.0, "c": 1.0})
    assert led.seconds == pytest.approx((20.0 - 6.0) * 3 / 6)  # this process runs 3 of the 6 tasks left
    assert led.allot(["a", "b"]) == pytest.approx(7.0 * 4 / 5)
    led.charge(["a", "b"], 6.0)
    assert led.allot(["c"]) == pytest.approx(1.0)  # the last group gets whatever is left
    led.charge(["c"], 2.0)
    assert led.allot(["c"]) == 0.0  # overspent: nothing more


# ---------------------------------------------------------------- through the grid kind, on a tiny model


@pytest.fixture()
def evaluate_tiny(tmp_path, tiny, small_cfg, synthetic_tasks):
    """evaluate_tiny(name, n=4, labels=None, **cfg): n synthetic tasks under a config of 8 views and 4 steps a round
    (2 epochs of 2 steps at the anytime policies' halves) into tmp_path/name; its records. The cost model prices work
    at a fixed pace (not timed), so two runs price it alike."""
    from testtime.recipes.grid import evaluate
    from testtime.stages.budget import Speed

    def go(name, n=4, labels=None, tasks=None, **kw):
        model, codec = tiny
        cfg = small_cfg(**kw)
        cfg.ttt_cfg.samples, cfg.ttt_cfg.epochs = 4, 4
        cfg.predict_cfg.views = 8
        return evaluate(cfg, tmp_path / name, model=model, codec=codec, tasks=tasks or synthetic_tasks(n),
                        show_progress=False, labels=labels, speed=Speed(row_token=1e-6, step=1e-4))

    return go


def test_settle_runs_end_to_end_each_cut_named_in_the_record_with_its_seconds(evaluate_tiny, monkeypatch):
    import testtime.recipes.grid as grid
    from testtime.recipes.grid import GridOps

    base = {"t0": 1.0, "t1": 0.5, "t2": 0.5, "t3": 0.5}
    after = {"t0": None, "t1": 1.0, "t2": 0.0, "t3": 0.5}
    real_loo, real_predict = GridOps.leave_one_out, GridOps.predict
    whose: dict[int, tuple[str, bool, int]] = {}

    def loo(self, items, adapted):
        real_loo(self, items, adapted)
        return [(after if adapted else base)[self.group[i].id] for i in items]

    def predict(self, items, adapted, more_orders=1, views=None, first_view=0):
        preds, problems = real_predict(self, items, adapted, more_orders, views, first_view)
        for i, p in zip(items, preds, strict=True):
            whose[id(p)] = (self.group[i].id, adapted, views)
        return preds, problems

    def agreement(self, prediction):
        tid, adapted, views = whose.get(id(prediction), ("", True, 8))
        if not adapted:
            return 1.0 if tid == "t0" else 0.5  # only t0's two cheap views agree
        return 1.0 if tid == "t1" and views == 4 else 0.75 if tid == "t3" else 0.25

    monkeypatch.setattr(GridOps, "leave_one_out", loo)
    monkeypatch.setattr(GridOps, "predict", predict)
    monkeypatch.setattr(GridOps, "agreement", agreement)
    monkeypatch.setattr(GridOps, "candidates", lambda self, p: 1 if agreement(self, p) == 1.0 else 5)
    ranked_by = {}
    real_rank = grid.rank_candidates

    def rank(model, tasks, votes, codec, cfg, **kw):
        ranked_by.update((t.id, (cfg.method, cfg.candidates)) for t in tasks)
        return real_rank(model, tasks, votes, codec, cfg, **kw)

    monkeypatch.setattr(grid, "rank_candidates", rank)
    recs = {r["task_id"]: r for r in evaluate_tiny("settle", policy="settle")}
    pol = {t: r["policy"] for t, r in recs.items()}
    assert {t: p["decision"] for t, p in pol.items()} == {"t0": "answer", "t1": "stopped", "t2": "gave-up", "t3": "long"}
    assert {t: p["ttt_steps"] for t, p in pol.items()} == {"t0": 0, "t1": 4, "t2": 4, "t3": 8}
    assert set(pol["t0"]["cuts"]) == {"skip-ttt", "few-views"}
    assert set(pol["t1"]["cuts"]) == {"early-stop", "few-views"}
    assert set(pol["t2"]["cuts"]) == {"give-up"}
    assert set(pol["t3"]["cuts"]) == {"no-scoring"}  # 6 of 8 views agree after TTT: the vote's order stands
    assert all(v > 0 for p in pol.values() for v in p["cuts"].values())
    assert ranked_by["t3"] == ("vote", 8) and ranked_by["t2"] == ("poe", 8)  # 2 of 8 agree: every candidate scored
    for r in recs.values():
        assert r["seconds"] == pytest.approx(sum(r["compute"].values()), abs=1e-3)
        assert {"agreement", "loo_base", "agreement_final"} <= set(r["policy"]["signals"])
    assert recs["t0"]["compute"]["ttt"] == 0 and recs["t3"]["compute"]["ttt"] > 0


def test_a_budget_run_reports_what_it_spent_and_a_tiny_budget_buys_no_ttt(evaluate_tiny, tmp_path):
    import json

    tiny_budget = evaluate_tiny("poor", budget=1e-6)
    assert all(r["policy"]["ttt_steps"] == 0 and r["policy"]["decision"] in ("icl", "answer") for r in tiny_budget)
    rich = evaluate_tiny("rich", budget=1e4)
    assert all(r["policy"]["name"] == "anytime" and r["policy"]["ttt_steps"] > 0 for r in rich)
    summary = json.loads((tmp_path / "rich" / "summary.json").read_text())
    assert summary["budget"]["seconds_per_task"] == 1e4
    assert summary["budget"]["spent_per_task"] == pytest.approx(sum(r["seconds"] for r in rich) / len(rich), abs=1e-3)


def test_a_resumed_budget_run_spends_what_the_finished_tasks_left(evaluate_tiny, tmp_path, tiny, small_cfg,
                                                                   synthetic_tasks):
    from testtime.recipes.grid import GridKind

    first = evaluate_tiny("resumed", n=6, limit=2, budget=50.0)
    spent = sum(r["seconds"] for r in first)
    model, codec = tiny
    cfg = small_cfg(budget=50.0)
    cfg.ttt_cfg.samples, cfg.ttt_cfg.epochs = 4, 4
    cfg.predict_cfg.views = 8
    kind = GridKind(cfg, model, codec)
    tasks = synthetic_tasks(6)
    kind.before_tasks(tasks, tmp_path / "resumed", pending=True, show_progress=False)
    assert kind.finished == (6, pytest.approx(spent), 2)
    kind.prepare(tasks[2:5])  # this process runs 3 of the 4 tasks left (another runs the fourth)
    assert kind.ledger.seconds == pytest.approx((50.0 * 6 - spent) * 3 / 4)
    assert set(kind.ledger.refs) == {"t2", "t3", "t4"}


def test_the_familiar_novel_label_never_reaches_the_policy(evaluate_tiny, monkeypatch):
    """The same run with and without labels: the kind is built, fed and asked alike; only the written records differ,
    by the label alone."""
    import testtime.recipes.grid as grid

    seen: list[list] = []
    real = grid.run_anytime

    def spy(plan, n, ops, units, pace, allot=None):
        seen.append([plan, [(t, vars(t)) for t in ops.group], units, sorted(vars(ops.kind))])
        assert not any("familiar" in repr(v) or "novel" in repr(v) for v in vars(ops.kind).values())
        return real(plan, n, ops, units, pace, allot)

    monkeypatch.setattr(grid, "run_anytime", spy)
    labels = {"t0": "familiar", "t1": "novel", "t2": "familiar", "t3": "novel"}
    plain = evaluate_tiny("plain", policy="settle")
    tagged = evaluate_tiny("tagged", policy="settle", labels=labels)
    assert len(seen) == 2 and seen[0][:3] == seen[1][:3] and seen[0][3] == seen[1][3]
    assert [r["label"] for r in tagged] == [labels[r["task_id"]] for r in tagged]
    assert all("label" not in r for r in plain)

    def stable(r):  # what the run decided and answered, not how long it took
        return {k: v for k, v in r.items() if k not in ("seconds", "compute", "label", "policy")} | {
            "policy": {k: v for k, v in r["policy"].items() if k != "cuts"}}

    assert [stable(r) for r in plain] == [stable(r) for r in tagged]


def test_the_loo_audit_counts_disagreements_with_decoding_and_keeps_decoding_out_of_the_compute(
        evaluate_tiny, monkeypatch):
    import time

    import testtime.recipes.grid_ops as grid_ops
    import testtime.stages.loo_audit as loo_audit
    from testtime.stages.engine import Score

    real = loo_audit.predict_tasks

    def slow(model, tasks, codec, cfg, **kw):
        time.sleep(0.3)
        return real(model, tasks, codec, cfg, **kw)

    monkeypatch.setattr(loo_audit, "predict_tasks", slow)
    # Every held-out answer called solved by the check: a random model's decoding disagrees on (nearly) all.
    monkeypatch.setattr(grid_ops, "sequence_scores", lambda model, seqs, pad, **kw: [Score(0.0, True) for _ in seqs])
    recs = evaluate_tiny("audit", n=2, policy="settle", audit_loo=True)
    for r in recs:
        demos = 2 + int(r["task_id"][1:]) % 2
        audit = r["loo_audit"]
        checks = demos * (1 + (r["policy"]["ttt_steps"] > 0))  # the base model's check, then the adapter's
        assert audit["checks"] == checks and audit["disagree"] >= checks - 1
        assert audit["decode_s"] >= 0.3 and r["compute"]["loo"] < 0.3
    assert all("loo_audit" not in r for r in evaluate_tiny("no-audit", n=2, policy="settle"))


def test_predictions_of_some_views_then_the_rest_equal_those_of_all_views(tiny, synthetic_tasks):
    from testtime.stages.predict import PredictConfig, predict_tasks

    model, codec = tiny
    tasks = synthetic_tasks(2)
    cfg = PredictConfig(views=8, orders=2, max_len=320)
    whole, _ = predict_tasks(model, tasks, codec, cfg)
    first, _ = predict_tasks(model, tasks, codec, PredictConfig(views=3, orders=2, max_len=320))
    rest, _ = predict_tasks(model, tasks, codec, cfg, first_view=3)
    for w, a, b in zip(whole, first, rest, strict=True):
        joined = a + b
        assert [[(p.group, None if p.grid is None else p.grid.tolist()) for p in pl] for pl in joined.predictions] == \
            [[(p.group, None if p.grid is None else p.grid.tolist()) for p in pl] for pl in w.predictions]
        assert joined.generated_tokens == w.generated_tokens


def test_a_budget_takes_a_policy_that_allocates(tmp_path):
    from testtime.core.config import ConfigError
    from testtime.recipes.grid import EvalConfig, effective_policy

    assert effective_policy(EvalConfig(budget=0.5)) == "anytime"
    assert effective_policy(EvalConfig(budget=0.5, policy="settle")) == "settle"
    assert effective_policy(EvalConfig()) == "extended"  # no budget: today's default
    with pytest.raises(ConfigError, match="not 'extended'"):
        effective_policy(EvalConfig(budget=0.5, policy="extended"))
    with pytest.raises(ConfigError, match="--no-ttt"):
        effective_policy(EvalConfig(budget=0.5, ttt=False))
    with pytest.raises(ConfigError, match="cuts of the fixed cost run under anytime"):
        dataclasses.replace(POLICIES["extended"], first_views=2)


def test_cli_budget_and_labels_errors_are_one_line(tmp_path, one_line_error):
    from typer.testing import CliRunner

    from testtime.cli import app

    runner = CliRunner()
    one_line_error(runner.invoke(app, ["evaluate", "--budget", "0", "--out", str(tmp_path / "r")]), "--budget")
    one_line_error(runner.invoke(app, ["evaluate", "--budget", "1", "--policy", "always", "--out", str(tmp_path / "r")]),
                   "not 'always'")
    bad = tmp_path / "labels.json"
    bad.write_text('{"t0": 3}')
    one_line_error(runner.invoke(app, ["evaluate", "--labels", str(bad), "--out", str(tmp_path / "r")]),
                   "labels must be a JSON object")


def test_a_solver_spends_a_budget_over_the_tasks_of_one_call(tiny, synthetic_tasks):
    """`solve_many` is one group of a run: a budget there is seconds a task over the call's tasks."""
    from testtime.api import Solver

    model, codec = tiny
    solver = Solver(model, codec)
    settings = {"ttt_cfg.samples": 4, "ttt_cfg.epochs": 4, "ttt_cfg.rank": 2, "predict_cfg.max_len": 320}
    poor = solver.solve_many(synthetic_tasks(3), max_seconds=None, show_progress=False, budget=1e-6, **settings)
    assert [s.decision["ttt_steps"] for s in poor] == [0, 0, 0] and all(s.decision["name"] == "anytime" for s in poor)
    rich = solver.solve_many(synthetic_tasks(3), max_seconds=None, show_progress=False, budget=1e4, **settings)
    assert all(s.decision["ttt_steps"] > 0 for s in rich)


@pytest.mark.parametrize("policy", ["settle", "anytime"])
def test_the_levers_run_under_the_allocating_policies(evaluate_tiny, monkeypatch, policy):
    """Issue 24's levers (2 adapters a task, depth-first sampling, a second round) inside issue 25's policies: the
    cheap pass and each round train and predict through both members, cuts and all, and every record says so."""
    from testtime.recipes.grid import GridOps

    members, calls = [], []
    real_train, real_predict = GridOps.train, GridOps.predict
    monkeypatch.setattr(GridOps, "train", lambda self, *a, **k: members.append(self.ecfg.adapters) or
                        real_train(self, *a, **k))

    def predict(self, items, adapted, more_orders=1, views=None, first_view=0):
        calls.append((adapted, first_view))
        return real_predict(self, items, adapted, more_orders, views, first_view)

    monkeypatch.setattr(GridOps, "predict", predict)
    kw = {"ensemble_cfg.adapters": 2, "predict_cfg.dfs": 0.3, "second_cfg.steps": 2}
    recs = evaluate_tiny(policy, policy=policy, **kw) if policy == "settle" else evaluate_tiny(policy, budget=1e4, **kw)
    assert all(r["error"] is None and r["adapters"] == 2 and r["policy"]["name"] == policy for r in recs)
    assert any(r["policy"]["ttt_steps"] > 0 for r in recs) and set(members) == {2}
    assert (False, 0) in calls and any(adapted for adapted, _ in calls)  # the cheap pass, then the adapters
    assert all(r["seconds"] == pytest.approx(sum(r["compute"].values()), abs=1e-3) for r in recs)


# ---------------------------------------------------------------- where issue 24's levers meet the budget


def test_a_budget_run_whose_tasks_the_time_budget_cut_to_no_ttt_still_runs(tiny, small_cfg, synthetic_tasks, tmp_path):
    """`--budget` beside a per-task time budget (on by default on a CPU): the tasks cut to no TTT get prices too, so
    the ledger shares the run's seconds over every task instead of failing on the ones cut."""
    from testtime.recipes.grid import evaluate
    from testtime.stages.budget import Speed

    model, codec = tiny
    cfg = small_cfg(budget=10.0)
    said: list[str] = []
    recs = evaluate(cfg, tmp_path / "r", model=model, codec=codec, tasks=synthetic_tasks(3), show_progress=False,
                    max_seconds=0.5, speed=Speed(row_token=1e-3, step=1e-1), say=said.append)
    assert len(said) == 3 and all("no TTT" in line for line in said)  # the time budget cut every task to no TTT
    assert [(r["error"], r["policy"]["ttt_steps"]) for r in recs] == [(None, 0)] * 3


@pytest.mark.parametrize("price", [0.0, 1e9])
def test_under_a_budget_the_second_round_is_bought_only_where_it_fits(evaluate_tiny, monkeypatch, price):
    """The second round is priced (`second_round_price`) and bought with what the group has left: free, every
    confident task takes it; priced past any budget, none does and each note says why."""
    import testtime.recipes.grid as grid
    import testtime.stages.predict as predict_mod
    from test_second_round import _oracle  # decoding that answers, so that some answers are confident

    monkeypatch.setattr(predict_mod, "greedy_generate", _oracle([]))
    monkeypatch.setattr(grid, "second_round_price", lambda units, pace, plan: price)
    recs = evaluate_tiny(f"second-{price}", budget=1e4, **{"second_cfg.steps": 2, "second_cfg.margin": 0.0,
                                                           "second_cfg.agreement": 0.0})
    notes = [r["second_round"] for r in recs if r.get("second_round")]
    assert notes and all(any(n["confident"]) for n in notes)
    if price == 0.0:
        assert all(n["steps"] == 2 and "budget" not in n for n in notes)
    else:
        assert all(n["steps"] == 0 and n["budget"] is True for n in notes)
        assert all("second" not in r["compute"] for r in recs)


def test_the_levers_price_their_work_through_every_member():
    """An ensemble's adapted views and selection cost K times one adapter's; the cheap pass's views do not."""
    from testtime.stages.allocate import second_round_price, selection_work, within

    one = Units(view=1.0, loo=2.0, step=3.0, scoring=4.0, candidate=0.5)
    four = dataclasses.replace(one, members=4.0)
    assert four.adapted_view() == 4.0 and four.select(2) == 4 * one.select(2) and four.select(2, adapted=False) == 5.0
    plan = resolve_plan("extended", TTTConfig(), PredictConfig(views=8), SelectConfig(), 2)
    assert four.reference(plan) - one.reference(plan) == pytest.approx(3 * 8 * 1.0 + 3 * one.select(8))
    assert selection_work([four, four], [[9], [9]], [None, None], plan, [True, False]) == \
        four.select(8) + one.select(8)
    pace = Pace()
    plan2 = dataclasses.replace(plan, second=dataclasses.replace(plan.second, steps=10))
    assert second_round_price(four, pace, plan2) == pytest.approx(10 * 3.0 + 8 * 4.0 + four.select(8))
    assert within([0, 1, 2], {0: 2.0, 1: 5.0, 2: 1.0}, 3.5) == [0, 2]


def test_agreement_counts_each_view_once_whatever_depth_first_sampling_adds():
    import numpy as np

    from testtime.stages.policy import agreement
    from testtime.stages.vote import Prediction

    a, b = np.array([[1]]), np.array([[2]])
    greedy = [Prediction(f"v{i}", a) for i in range(4)]
    sampled = [Prediction("v0", b, -3.0, sampled=True), Prediction("v2", b, -4.0, sampled=True)]
    assert agreement([greedy + sampled], [a]) == agreement([greedy], [a]) == 1.0
    assert agreement([greedy[:3] + [Prediction("v3", b)] + sampled], [a]) == 0.75


def test_the_audit_decodes_greedily_under_depth_first_sampling(monkeypatch, flip_task):
    import testtime.stages.loo_audit as loo_audit

    seen = []
    monkeypatch.setattr(loo_audit, "predict_tasks", lambda model, tasks, codec, cfg, **kw: seen.append(cfg) or (
        [type("P", (), {"predictions": [[]]})() for _ in tasks], []))
    loo_audit.decoded(None, [flip_task(1, "t")], None, PredictConfig(views=8, orders=2, dfs=0.1))
    assert [(c.views, c.orders, c.dfs) for c in seen] == [(1, 1, None)]


def test_each_task_draws_its_demo_orders_alone(synthetic_tasks):
    """A task's demo orders do not depend on the tasks before it in a call, nor on how many views they drew: views
    predicted in two calls (as the anytime policies do) are the views of one call."""
    from testtime.data.encode import GridCodec
    from testtime.stages.predict import make_queries

    codec, tasks = GridCodec(), synthetic_tasks(3)

    def drawn(ts, cfg, first_view=0):
        qs, _ = make_queries(ts, codec, cfg, first_view)
        return {(ts[q.task].id, q.test, q.view.d8, q.view.order) for q in qs}

    cfg = PredictConfig(views=8, orders=3, max_len=320)
    whole = drawn(tasks, cfg)
    assert drawn(tasks, dataclasses.replace(cfg, views=3)) | drawn(tasks, cfg, first_view=3) == whole
    assert drawn(tasks[2:], cfg) == {k for k in whole if k[0] == tasks[2].id}
    assert len({k[3] for k in whole if k[3] is not None}) > 1  # orders were drawn at all
