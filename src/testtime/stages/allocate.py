"""Spending compute where the signals say a task is unsolved: the cuts of the fixed cost, and a budget (`--budget`).

Prediction and selection cost a fixed third of a task's time whatever its TTT schedule (results/h200x2-2026-11-30.md),
so a policy that only trains less saves little. A policy with `anytime` set (`settle`, `anytime`; see
`policy.POLICIES`) runs a group of tasks through `run_anytime`, which cuts each stage where a cheap signal says the
answer is settled:

1. **A cheap pass** on every task: in-context predictions under the policy's `first_views` views (2 of 8), and the
   base model's leave-one-out check (one teacher-forced pass). A task whose views all agree and whose base model solves
   every held-out demo is answered now: cut `skip-ttt` (on ARC-AGI-1 evaluation with model v3, 10 of the 11 tasks
   whose base model solved every held-out demo were solved).
2. **TTT in rounds** (`Policy.rounds`, fractions of the configured steps). After each round but the last, the adapter's
   leave-one-out check: a task that solves every held-out demo stops training (cut `early-stop`: model v3's 186 such
   tasks after 48 steps scored 116.5 against 118.5 with 96); with `give_up`, one that solves none stops too (cut
   `give-up`: 69 such tasks, 2 solved after 144 steps).
3. **Prediction**: a task that stopped with its check passed is predicted under `settle_views` views first, and under the
   rest only where those disagree (cut `few-views` where they agree).
4. **Selection** (the task kind's, as `Outcome.score` says): a test input whose top answer holds at least
   `score_none_at` of the views is not scored, the vote's order stands (cut `no-scoring`); at `score_few_at`, only its
   top SCORE_FEW candidates are (cut `few-candidates`). In the default's records of models v3 and v4 (all 400
   evaluation tasks, picked on them), wherever the top answer held 5 of 8 views the right answer, when found, was the
   vote's first or second; at 4 of 8, among its first three.

Each cut taken is named in the record (`policy.cuts`) with the seconds it saved, by the cost model below.

**The cost model.** `budget.Estimator.units` prices a task's pieces of work (a view decoded, a leave-one-out check, a
TTT step, its selection) from its own token counts on the pace of a one-row probe; batched work on a GPU runs many
times faster than that, so a `Pace` learns, as the run goes, the measured seconds over the modelled ones of each piece
(before a piece has run, the mean of the others').

**The budget** (`--budget S`: seconds a task on average over the run, as the records count them). A `Ledger` holds what
is left; each group of tasks gets the share of it that its tasks' reference work is of all the work left (seconds a
group leaves unspent go to the groups after it; a resumed run starts from what the finished tasks spent). Within the
group the cheap pass runs on every task (the floor: every task gets an answer); then each TTT round goes to the tasks
of highest expected gain per second (`gain`) whose price, the round's steps and check and, for a first round, the
prediction and selection it commits the task to, still fits what is left; a task left out of a round trains no more.
A second round on confident answers (`--second-round`) is bought last, task by task, with what the group has left
(`second_round_price`). Spending stops at what the model prices, so the run overspends only by the model's error (and
where the floor alone is over the budget). With an ensemble or depth-first sampling the units carry the levers'
factors (`budget.Estimator.units`): adapted views and selection run through every member.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from testtime.stages.policy import GroupOps, Outcome, Plan

SCORE_FEW = 3  # candidates a test input scores at score_few_at (see the module's docstring)

# Expected gain in pass@2 of a task's next TTT round, by its signals: the priors the budget orders rounds by. A first
# round where few views agreed without TTT: ICL 2% -> 33% with TTT (model v4, h200-2026-12-04 records), falling to
# +6% where all 8 views agreed (8 of 16 right without TTT, 9 with); a second round of 48 steps where the adapter solved
# some held-out demos after the first: +12% (26 -> 42 of 138 tasks, model v3, h200x2-2026-11-30); where it solved none:
# +1% (2 of 69 at 144 steps). A third round (96 -> 192 steps) is unmeasured: half the round before, by assumption.
GAIN_FIRST = (0.33, 0.06)  # at agreement 0 and 1, linear between
GAIN_SOME, GAIN_NONE = 0.12, 0.01
GAIN_DECAY = 0.5


@dataclass(frozen=True)
class Units:
    """A task's pieces of work, in the cost model's seconds (`budget.Estimator.units`), before the pace's correction."""

    view: float  # one view (and demo order) decoded
    loo: float  # one leave-one-out check
    step: float  # one TTT step
    scoring: float  # its test inputs read under every scoring view
    candidate: float  # each candidate scored
    members: float = 1.0  # adapters a task's adapted views and selection run through (an ensemble's)

    @classmethod
    def of(cls, pieces: Mapping[str, float]) -> Units:
        keys = ("view", "loo", "step", "scoring", "candidate", "members")
        return cls(**{k: float(pieces[k]) for k in keys if k in pieces})

    def select(self, candidates: int, adapted: bool = True) -> float:
        """Its selection of `candidates` a test input, through every member where `adapted`."""
        one = self.scoring + candidates * self.candidate if candidates > 0 else 0.0
        return one * (self.members if adapted else 1.0)

    def adapted_view(self) -> float:
        """One view decoded through every member."""
        return self.view * self.members

    def reference(self, plan: Plan) -> float:
        """The work of the plan's usual path: the cheap pass, its first round and check, prediction, selection."""
        p, views = plan.policy, plan.predict.views * plan.predict.orders
        first = min(p.first_views or views, views)
        steps = plan.rounds[0] if plan.policy.ttt else 0
        return (first * self.view + views * self.adapted_view() + 2 * self.loo + steps * self.step
                + self.select(scored_candidates(plan)))


def scored_candidates(plan: Plan) -> int:
    """Candidates a test input scores under the plan's selection (0: the vote alone)."""
    return plan.select.candidates if plan.select.method != "vote" else 0


def second_round_price(u: Units, pace: Pace, plan: Plan) -> float:
    """What a second round (`stages.second_round`) costs a task: its steps, prediction under every view and its
    selection, through every member of its ensemble, at the pace learned so far."""
    views = plan.predict.views * plan.predict.orders
    return (pace.seconds("step", u.step * plan.second.steps) + pace.seconds("view", u.adapted_view() * views)
            + pace.seconds("select", u.select(scored_candidates(plan))))


def within(items: Sequence[int], prices: Mapping[int, float], room: float) -> list[int]:
    """The items, in order, whose prices still fit what is left of `room`."""
    keep = []
    for i in items:
        if prices[i] <= room:
            keep.append(i)
            room -= prices[i]
    return keep


def selection_work(units: Sequence[Units], answers: Sequence[Sequence[int]], score: Sequence[int | None],
                   plan: Plan, adapted: Sequence[bool] | None = None) -> float:
    """The cost model's seconds of a group's selection: of each task (`answers`: the distinct answers of each of its
    test inputs), as many candidates as its policy left it to score (`Outcome.score`), where it has more answers than
    attempts; through every member of its ensemble where `adapted` (default: all)."""
    most = scored_candidates(plan)
    work = 0.0
    for n, (u, per_test, k) in enumerate(zip(units, answers, score, strict=True)):
        limit = most if k is None else k
        work += u.select(max((min(a, limit) for a in per_test if a > plan.attempts), default=0),
                         adapted is None or adapted[n])
    return work


class Pace:
    """Measured seconds over modelled ones, per piece of work (view, loo, step, select), learned as a run goes."""

    def __init__(self) -> None:
        self.measured: dict[str, float] = {}
        self.modelled: dict[str, float] = {}

    def observe(self, piece: str, measured: float, modelled: float) -> None:
        if modelled > 0:
            self.measured[piece] = self.measured.get(piece, 0.0) + measured
            self.modelled[piece] = self.modelled.get(piece, 0.0) + modelled

    def factor(self, piece: str) -> float:
        """Of a piece not seen yet: the geometric mean of the others' (1 before any)."""
        if piece in self.modelled:
            return self.measured[piece] / self.modelled[piece]
        known = [self.measured[k] / self.modelled[k] for k in self.modelled if self.measured[k] > 0]
        return math.exp(sum(math.log(f) for f in known) / len(known)) if known else 1.0

    def seconds(self, piece: str, modelled: float) -> float:
        return modelled * self.factor(piece)


@dataclass
class Ledger:
    """What a process may spend on the tasks it runs, group by group (see the module's docstring)."""

    seconds: float
    refs: dict[str, float]  # each task not run yet: its reference work (`Units.reference`)
    spent: float = 0.0

    @classmethod
    def start(cls, per_task: float, n_run: int, done_seconds: float, n_done: int, n_mine: int,
              refs: Mapping[str, float]) -> Ledger:
        """This process's part: the run's budget (`per_task` for each of its `n_run` tasks) less what the `n_done`
        finished ones spent, shared over the tasks left by count; this process runs `n_mine` of them."""
        left = max(0.0, per_task * n_run - done_seconds)
        return cls(left * n_mine / max(1, n_run - n_done), dict(refs))

    def allot(self, task_ids: Sequence[str]) -> float:
        """Seconds for a group of these tasks: its share of what is left."""
        left = max(0.0, self.seconds - self.spent)
        total = sum(self.refs.values())
        group = sum(self.refs.get(t, 0.0) for t in task_ids)
        return left * group / total if total > 0 else left

    def charge(self, task_ids: Sequence[str], seconds: float) -> None:
        self.spent += seconds
        for t in task_ids:
            self.refs.pop(t, None)


def gain(signals: Mapping[str, Any], round_index: int) -> float:
    """The prior expected gain of a task's next round (see GAIN_FIRST): by its agreement before the first, by its
    adapter's check after the round before."""
    if round_index == 0:
        lo, hi = GAIN_FIRST
        return hi + (lo - hi) * (1.0 - float(signals.get("agreement", 0.0)))
    loo = signals.get(f"loo_round{round_index}")
    return (GAIN_NONE if loo == 0.0 else GAIN_SOME) * GAIN_DECAY ** (round_index - 1)


def run_anytime(plan: Plan, n: int, ops: GroupOps, units: Sequence[Units], pace: Pace,
                allot: float | None = None) -> Outcome:
    """The plan's policy over a group of `n` tasks with the cuts of the fixed cost and, with `allot` (seconds), rounds
    bought by expected gain per second (see the module's docstring). Each stage's time is charged evenly to the tasks
    it ran for, and teaches `pace`."""
    p = plan.policy
    out = Outcome.empty(n)
    everyone = list(range(n))
    orders, views = plan.predict.orders, plan.predict.views
    first, settle = min(p.first_views or views, views), min(p.settle_views or views, views)
    scored = scored_candidates(plan)
    spent = 0.0

    def cost(i: int, piece: str, amount: float = 1.0) -> float:
        return pace.seconds(piece, getattr(units[i], piece) * amount)

    def selection(i: int, candidates: int, adapted: bool = True) -> float:
        return pace.seconds("select", units[i].select(candidates, adapted))

    def views_cost(i: int, amount: float, adapted: bool) -> float:
        return pace.seconds("view", (units[i].adapted_view() if adapted else units[i].view) * amount)

    @contextmanager
    def charge(stage: str, items: Sequence[int], piece: str, modelled: float) -> Iterator[None]:
        nonlocal spent
        t0 = ops.clock()
        yield
        dt = ops.clock() - t0
        for i in items:
            out.spent[i][stage] += dt / len(items)
        pace.observe(piece, dt, modelled)
        spent += dt

    def predict(stage: str, items: list[int], adapted: bool, upto: int, start: int = 0) -> list[Any]:
        per_view = sum(units[i].adapted_view() if adapted else units[i].view for i in items)
        with charge(stage, items, "view", per_view * (upto - start) * orders):
            preds, problems = ops.predict(items, adapted, views=upto, first_view=start)
        out.problems += problems
        return preds

    def check(items: list[int], adapted: bool) -> list[float | None]:
        with charge("loo", items, "loo", sum(units[i].loo for i in items)):
            return ops.leave_one_out(items, adapted)

    def commitment(i: int) -> float:
        """What a trained task will still spend: prediction under every view, and its selection."""
        return views_cost(i, views * orders, True) + selection(i, scored)

    # 1. The cheap pass: a few views without TTT, and the base model's held-out check.
    for i, pr in enumerate(predict("icl", everyone, False, first)):
        out.final[i] = pr
        out.signals[i]["agreement"] = round(ops.agreement(pr), 4)
    if p.loo_gate:
        for i, v in enumerate(check(everyone, False)):
            out.signals[i]["loo_base"] = v
    rounds = plan.rounds if p.ttt else []
    left_to_train = []
    for i in everyone:
        sig = out.signals[i]
        if p.ttt and not (p.answer_at is not None and sig["agreement"] >= p.answer_at
                          and (not p.loo_gate or sig.get("loo_base") == 1.0)):
            left_to_train.append(i)
            out.decision[i] = "icl"  # until a round trains it
            continue
        out.decision[i] = "answer"
        if rounds:
            out.cuts[i]["skip-ttt"] = cost(i, "step", rounds[0]) + cost(i, "loo") + commitment(i)
        if first < views:
            out.cuts[i]["few-views"] = views_cost(i, (views - first) * orders, False)

    # 2. TTT in rounds; after each but the last, the adapter's check stops a task or sends it on.
    trained: list[int] = []
    passed: dict[int, float | None] = {}
    candidates = left_to_train
    for r, steps in enumerate(rounds):
        last = r == len(rounds) - 1
        if allot is None:
            pick = list(candidates)
        else:
            # A round's price: its steps, the check after it, and for a first round what training commits a task to.
            price = {i: cost(i, "step", steps) + (0.0 if last else cost(i, "loo"))
                     + (commitment(i) if r == 0 else 0.0) for i in candidates}
            room = allot - spent - sum(commitment(i) for i in trained)
            pick = []
            for i in sorted(candidates, key=lambda i: -gain(out.signals[i], r) / max(price[i], 1e-12)):
                if price[i] <= room:
                    pick.append(i)
                    room -= price[i]
            pick.sort()
        for i in candidates:
            if i not in pick and r > 0:
                out.decision[i] = "budget"
        if not pick:
            break
        if r == 0:
            ops.fresh_adapters()
        with charge("ttt", pick, "step", sum(units[i].step for i in pick) * steps):
            losses, tokens = ops.train(pick, steps, r)
        for k, i in enumerate(pick):
            out.losses[i] += losses[k]
            out.steps[i] += steps
            out.tokens[i] += tokens // len(pick)
            out.decision[i] = "long"
        trained += [i for i in pick if i not in trained]
        if last:
            break
        later = sum(rounds[r + 1:])
        candidates = []
        for i, v in zip(pick, check(pick, True), strict=True):
            out.signals[i][f"loo_round{r + 1}"] = passed[i] = v
            saved = cost(i, "step", later) + cost(i, "loo", len(rounds) - r - 2)
            if v == 1.0:
                out.decision[i], out.cuts[i]["early-stop"] = "stopped", saved
            elif v == 0.0 and p.give_up:
                out.decision[i], out.cuts[i]["give-up"] = "gave-up", saved
            else:
                candidates.append(i)

    # 3. Prediction through the adapters: a task whose check passed under a few views first.
    few = [i for i in trained if passed.get(i) == 1.0 and settle < views]
    full = [i for i in trained if i not in few]
    if full:
        for i, pr in zip(full, predict("predict", full, True, views), strict=True):
            out.final[i] = pr
    if few:
        more = []
        for i, pr in zip(few, predict("predict", few, True, settle), strict=True):
            out.final[i] = pr
            if ops.agreement(pr) >= 1.0:
                out.cuts[i]["few-views"] = views_cost(i, (views - settle) * orders, True)
            else:
                more.append(i)
        if more:
            for i, pr in zip(more, predict("predict", more, True, views, start=settle), strict=True):
                out.final[i] = ops.combine(out.final[i], pr)

    # 4. Selection's cuts, where the final answers agree.
    for i in everyone:
        share = ops.agreement(out.final[i])
        out.signals[i]["agreement_final"] = round(share, 4)
        many = min(ops.candidates(out.final[i]), scored)
        if many <= plan.attempts:
            continue  # not scored whatever the signal: all its candidates are attempts
        adapted = i in trained
        if p.score_none_at is not None and share >= p.score_none_at:
            out.score[i], out.cuts[i]["no-scoring"] = 0, selection(i, many, adapted)
        elif p.score_few_at is not None and share >= p.score_few_at and many > SCORE_FEW:
            out.score[i] = SCORE_FEW
            out.cuts[i]["few-candidates"] = selection(i, many, adapted) - selection(i, SCORE_FEW, adapted)
    for c in out.cuts:
        for k in c:
            c[k] = round(c[k], 4)
    return out
