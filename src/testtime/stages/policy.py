"""Adaptive test-time training: per task, answer now, train briefly, or train longer and sample more.

A policy is a small, named recipe of stages over a group of tasks, driven by cheap signals:

- `agreement`: the share of all augmented views (invalid decodes included) whose answer, mapped back,
  equals the top voted answer without TTT. Views that agree on a non-trivial grid rarely agree by chance.
- `loo`: the leave-one-out self-check. Each demonstration in turn becomes the query, the others the
  context, and the model (with or without the task's adapter) answers it greedily under the identity
  view; `loo` is the share solved exactly (the grid kind tells it from one teacher-forced pass, without
  decoding: `grid_ops.GridOps.leave_one_out`). Without an adapter it is a true held-out check. With one
  it measures fit: TTT trains on these very leave-one-out tasks (under augmentations), so a task whose
  adapter still fails its own demos has not been learned yet and is worth more steps.
- `ttt_loss`: the adapter's last training losses (recorded, for analysis and for future policies).

Stages, in order (each optional per policy):
1. ICL: predict every task without TTT (`icl_first`); optionally the base LOO check (`loo_gate`).
   A task whose top answer holds at least `answer_at` of the views (and, with `loo_gate`, whose base
   model solves every held-out demo) is answered now.
2. TTT in `rounds` (fractions of the configured schedule): after each round but the last, with
   `loo_stop`, a task whose adapter solves all its held-out demos stops training and is predicted.
3. The tasks trained to the last round are predicted with `more_orders` times the demo orders per view
   (sample more: they are the hard ones).
4. With `pick_by_loo`, a task that has both answers keeps the ICL one when the base model's LOO score
   beats the adapter's (TTT can unlearn a task the base model already had).

All policies spend the same per-step compute; they differ in how many steps and views each task gets. Those with
`anytime` set (settle, anytime) run through `testtime.stages.allocate` instead of `run_policy`: a cheap pass, each
stage cut where a signal says the answer is settled, and with --budget the rounds bought by expected gain per second.
A run resolves its policy once, with the settings of every stage, into a `Plan` (`resolve_plan`; the time budget
may cut it, `testtime.stages.budget`). `run_policy` follows a plan's stages, in this order, over plain calls a
task kind provides (`GroupOps`: predict, leave-one-out check, train); it decides, the kind computes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np

from testtime.core.config import ConfigError
from testtime.data.tasks import Task, grids_equal, leave_one_out
from testtime.stages.ensemble import DEFAULT_ADAPTERS, EnsembleConfig
from testtime.stages.predict import PredictConfig
from testtime.stages.second_round import SecondRoundConfig
from testtime.stages.selection import SelectConfig
from testtime.stages.ttt import DEFAULT_EPOCHS, TTTConfig


@dataclass(frozen=True)
class Policy:
    name: str
    summary: str
    icl_first: bool = False
    answer_at: float | None = None  # agreement at or above which a task is answered without TTT
    loo_gate: bool = False  # answering now also needs the base model to solve every held-out demo
    rounds: tuple[float, ...] = (1.0,)  # TTT rounds, as fractions of the configured steps; () = no TTT
    loo_stop: bool = False  # between rounds, stop training tasks whose adapter solves all held-out demos
    # Demo orders per view, times the configured ones, for tasks trained to the end of a plan of several rounds
    # (a plan of one round predicts with the configured orders).
    more_orders: int = 1
    pick_by_loo: bool = False
    epochs: int | None = None  # TTT epochs where the config names none (None: the config's default)
    # The cuts of the fixed cost (`testtime.stages.allocate`, which runs a policy with `anytime` set; a --budget
    # then decides how many rounds each task gets): the views of the cheap first pass, and those a task whose
    # leave-one-out check passed is predicted under first (None: the configured views); with `give_up`, a task
    # whose adapter solves none of its held-out demos stops training; a test input whose top answer holds at least
    # `score_none_at` of the views is not scored, at `score_few_at` only its top candidates are.
    anytime: bool = False
    first_views: int | None = None
    settle_views: int | None = None
    give_up: bool = False
    score_none_at: float | None = None
    score_few_at: float | None = None

    def __post_init__(self) -> None:
        if (self.answer_at is not None or self.pick_by_loo) and not self.icl_first:
            raise ConfigError(f"policy {self.name}: answering early or picking by LOO needs icl_first")
        if self.loo_gate and self.answer_at is None:
            raise ConfigError(f"policy {self.name}: loo_gate only gates answer_at")
        if any(f <= 0 for f in self.rounds) or self.more_orders < 1:
            raise ConfigError(f"policy {self.name}: rounds must be positive and more_orders at least 1")
        cuts = (self.first_views, self.settle_views, self.score_none_at, self.score_few_at)
        if not self.anytime and (any(c is not None for c in cuts) or self.give_up):
            raise ConfigError(f"policy {self.name}: the cuts of the fixed cost run under anytime")
        if self.anytime and (self.more_orders > 1 or self.pick_by_loo or not self.icl_first):
            raise ConfigError(f"policy {self.name}: anytime starts with a cheap pass (icl_first) and neither "
                              "samples more orders nor picks by LOO")

    @property
    def ttt(self) -> bool:
        return bool(self.rounds)

    @property
    def needs_base_loo(self) -> bool:
        return self.loo_gate or self.pick_by_loo


POLICIES: dict[str, Policy] = {
    p.name: p
    for p in (
        Policy("never", "no TTT: augmented in-context inference only", icl_first=True, rounds=()),
        Policy("always", "TTT on every task with the configured schedule (the paper's recipe)"),
        Policy("extended", "TTT on every task for 6 epochs where no --epochs is given (96 steps at the defaults, "
               "against always's 32)", epochs=6),
        Policy("agree", "ICL first; TTT only where fewer than half the views agree",
               icl_first=True, answer_at=0.5),
        Policy("loo-stop", "TTT in two halves; stop after the first where the adapter solves its held-out demos",
               rounds=(0.5, 0.5), loo_stop=True),
        Policy("adaptive", "ICL first; answer where views agree and the base model solves its held-out demos; "
               "else a brief TTT round, a longer one (with twice the demo orders) where demos still fail; "
               "keep the ICL answer where the base model did better on held-out demos",
               icl_first=True, answer_at=0.5, loo_gate=True, rounds=(0.5, 1.0), loo_stop=True, more_orders=2,
               pick_by_loo=True),
        # The cuts' thresholds (testtime.stages.allocate's docstring gives the records behind each).
        Policy("settle", "cut the fixed cost where the signals say the answer is settled: a cheap pass (2 views, the "
               "base model's held-out check) answers what the base model solves; TTT in two halves, stopping where "
               "the adapter solves every held-out demo or none; fewer views and candidates where they agree",
               icl_first=True, answer_at=1.0, loo_gate=True, rounds=(0.5, 0.5), loo_stop=True, epochs=6,
               anytime=True, first_views=2, settle_views=4, give_up=True, score_none_at=0.625, score_few_at=0.5),
        Policy("anytime", "settle's cheap pass and cuts, then up to three TTT rounds (half the steps, half, then as "
               "many again: 48, 96, 192 at the defaults) for the tasks whose signals say unsolved; with --budget, "
               "each round goes where the expected gain per second is highest until the budget is spent",
               icl_first=True, answer_at=1.0, loo_gate=True, rounds=(0.5, 0.5, 1.0), loo_stop=True, epochs=6,
               anytime=True, first_views=2, settle_views=4, score_none_at=0.625, score_few_at=0.5),
    )
}

# The policy that measured best: on all 400 ARC-AGI-1 evaluation tasks on one H100, extended scored 27.5 in
# 0.52 s/task (results/h100-2026-11-23c.md), adaptive 25.5 in 0.84 s/task, always 20 in 0.35 s/task, loo-stop
# 21.5, agree 19, never 4.5 (results/h100-2026-11-23b.md). Extended beat always on 10 tasks and lost 2 (p = 0.04);
# against adaptive, 4 won and 2 lost: as accurate, for less time. All were chosen on that same set.
# Its epochs, measured again with model v3 and product of experts on 2 H200s (results/h200x2-2026-11-29.md):
# 6 epochs 160/400 in 0.92 GPU-s/task against 3 epochs' 144.5 in 0.64 (27 won, 10 lost, p = 0.008); with
# model v2, 1, 3 and 6 epochs scored 94, 133.5 and 142.5.
DEFAULT_POLICY = "extended"


def get_policy(name: str) -> Policy:
    try:
        return POLICIES[name]
    except KeyError:
        raise ConfigError(f"unknown policy {name!r}; choose one of: {', '.join(POLICIES)}") from None


def round_steps(total: int, rounds: Sequence[float]) -> list[int]:
    """Steps of each round: the fractions of `total`, at least one step each."""
    return [max(1, round(f * total)) for f in rounds]


@dataclass(frozen=True)
class Plan:
    """What a task runs, resolved once (`resolve_plan`): the policy's stages, the TTT schedule with its epochs
    resolved, the views, the selection. The time budget cuts a copy (`budget.fit`); `run_policy` and the task kind
    read it, and none looks the policy or the config up again."""

    policy: Policy
    ttt: TTTConfig
    predict: PredictConfig
    select: SelectConfig
    attempts: int
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)  # adapters per task (stages.ensemble)
    second: SecondRoundConfig = field(default_factory=SecondRoundConfig)  # a second round (stages.second_round)

    @property
    def rounds(self) -> list[int]:
        """Steps of each TTT round (none without TTT)."""
        return round_steps(self.ttt.steps, self.policy.rounds)

    @property
    def steps(self) -> int:
        """TTT steps of a task trained to the last round."""
        return sum(self.rounds)

    @property
    def shared(self) -> bool:
        """The shared-adapter ablation: one adapter for the tasks of a group."""
        return self.ttt.shared and self.policy.ttt

    def with_token_budget(self, token_budget: int) -> Plan:
        """The plan generating in batches of `token_budget` tokens (an out-of-memory retry's)."""
        return replace(self, predict=replace(self.predict, token_budget=token_budget))


def resolve_plan(policy: str, ttt: TTTConfig, predict: PredictConfig, select: SelectConfig, attempts: int,
                 ensemble: EnsembleConfig | None = None, second: SecondRoundConfig | None = None) -> Plan:
    """The plan of a run under the named policy: TTT epochs as configured, else the policy's, else DEFAULT_EPOCHS;
    adapters a task as configured, else DEFAULT_ADAPTERS (one for the shared ablation and full-weight adapters).
    Without TTT nothing trains: one member and no second round, whatever was asked. An unknown policy, or the shared
    ablation under a policy of several stages or with an ensemble asked for, is a ConfigError."""
    p = get_policy(policy)
    ensemble, second = ensemble or EnsembleConfig(), second or SecondRoundConfig()
    if ttt.shared and p.name not in ("always", "never"):
        raise ConfigError(f"the shared-adapter ablation runs with policy always, not {p.name}")
    if ttt.shared and p.ttt and (ensemble.adapters or 1) > 1:
        raise ConfigError("the shared-adapter ablation trains one adapter for all tasks: it takes no ensemble "
                          f"(--adapters {ensemble.adapters})")
    if not p.ttt:
        # Members would be copies of the base model, and a second round has no adapter to go on with.
        ensemble, second = replace(ensemble, adapters=1), replace(second, steps=0)
    elif ensemble.adapters is None:
        # Full-weight adapters copy the target weights per member, and the two members' gain was measured on LoRA.
        ensemble = replace(ensemble, adapters=1 if ttt.shared or ttt.adapter == "full" else DEFAULT_ADAPTERS)
    return Plan(p, replace(ttt, epochs=ttt.epochs or p.epochs or DEFAULT_EPOCHS), predict, select, attempts,
                ensemble, second)


def agreement(predictions: Sequence[Sequence], top: Sequence[np.ndarray | None]) -> float:
    """Lowest, over test inputs, share of views (invalid ones included) that answered the top grid.

    A view's answer is its greedy one: the less likely answers depth-first sampling adds after it (`sampled`) are not
    the view disagreeing."""
    shares = []
    for plist, best in zip(predictions, top, strict=True):
        greedy = [p for p in plist if not p.sampled]
        if best is None or not greedy:
            shares.append(0.0)
            continue
        same = sum(grids_equal(p.grid, best) for p in greedy)
        shares.append(same / len(greedy))
    return min(shares) if shares else 0.0


def loo_tasks(task: Task) -> list[Task]:
    """One task per demonstration: that demo as the test (with its output), the others as demos."""
    if len(task.train) < 2:
        return []
    return [leave_one_out(task, i, f"{task.id}#loo{i}") for i in range(len(task.train))]


# ---------------------------------------------------------------- the stages

STAGES = ("icl", "loo", "ttt", "predict")


class GroupOps(Protocol):
    """The plain calls a policy runs on a group of tasks; `items` index the group. `adapted` items go through
    their own adapter (trained by `train`), others through the base model."""

    def predict(self, items: Sequence[int], adapted: bool, more_orders: int = 1, views: int | None = None,
                first_view: int = 0) -> tuple[list[Any], list[str]]:
        """Each item's predictions (with `more_orders` times the demo orders; under the first `views` views, or the
        configured ones, from `first_view` on), and the problems met."""
        ...

    def combine(self, prediction: Any, more: Any) -> Any:
        """One item's predictions and those of further views, as one."""
        ...

    def agreement(self, prediction: Any) -> float:
        """The agreement signal of one item's predictions."""
        ...

    def candidates(self, prediction: Any) -> int:
        """The most distinct answers one item's predictions hold for a test input (what its selection would rank)."""
        ...

    def leave_one_out(self, items: Sequence[int], adapted: bool) -> list[float | None]:
        """Each item's share of held-out demos solved (None: too few demos)."""
        ...

    def fresh_adapters(self) -> None:
        """New adapters for the whole group, before its first training round."""
        ...

    def train(self, items: Sequence[int], steps: int, round_index: int) -> tuple[list[list[float]], int]:
        """`steps` more steps of each item's adapter: each item's losses, and the tokens trained on."""
        ...

    def clock(self) -> float:
        """Wall time, once queued device work is done (so a stage's time is its own)."""
        ...


@dataclass
class Outcome:
    """What a policy did for each task of a group: the predictions kept, and how it got there."""

    final: list[Any]
    decision: list[str]
    signals: list[dict[str, Any]]
    steps: list[int]
    losses: list[list[float]]
    tokens: list[int]
    spent: list[dict[str, float]]
    problems: list[str] = field(default_factory=list)
    # Per task: the candidates its selection scores (None: as configured; 0: none, the vote's order stands), and
    # the cuts taken with the seconds each saved (`testtime.stages.allocate`).
    score: list[int | None] = field(default_factory=list)
    cuts: list[dict[str, float]] = field(default_factory=list)

    @classmethod
    def empty(cls, n: int) -> Outcome:
        return cls([None] * n, ["answer"] * n, [{} for _ in range(n)], [0] * n, [[] for _ in range(n)], [0] * n,
                   [dict.fromkeys(STAGES, 0.0) for _ in range(n)], score=[None] * n, cuts=[{} for _ in range(n)])

    def adapted(self, i: int) -> bool:
        """Whether task i's final answers came through its adapter (trained, and not fallen back to in-context)."""
        return self.steps[i] > 0 and not self.decision[i].endswith("+icl")


def run_policy(plan: Plan, n: int, ops: GroupOps) -> Outcome:
    """The plan's stages over a group of `n` tasks (see the module's docstring), each stage's time charged evenly
    to the tasks it ran for."""
    policy = plan.policy
    out = Outcome.empty(n)
    everyone = list(range(n))

    @contextmanager
    def charge(stage: str, items: Sequence[int]) -> Iterator[None]:
        t0 = ops.clock()
        yield
        dt = ops.clock() - t0
        for i in items:
            out.spent[i][stage] += dt / len(items)

    def predict(stage: str, items: list[int], adapted: bool, more_orders: int = 1) -> list[Any]:
        with charge(stage, items):
            preds, problems = ops.predict(items, adapted, more_orders)
        out.problems += problems
        return preds

    def leave_one_out(items: list[int], adapted: bool) -> list[float | None]:
        with charge("loo", items):
            return ops.leave_one_out(items, adapted)

    # 1. ICL first: predict without TTT, read agreement (and the base model's LOO check).
    icl = None
    if policy.icl_first or not policy.ttt:
        icl = predict("icl", everyone, adapted=False)
        for i, p in enumerate(icl):
            out.signals[i]["agreement"] = round(ops.agreement(p), 4)
        if policy.needs_base_loo and policy.ttt:
            for i, v in enumerate(leave_one_out(everyone, adapted=False)):
                out.signals[i]["loo_base"] = v
    if not policy.ttt:
        train = []
    elif policy.answer_at is None:
        train = everyone
    else:
        train = [i for i in everyone if not (
            out.signals[i]["agreement"] >= policy.answer_at
            and (not policy.loo_gate or out.signals[i].get("loo_base") == 1.0))]
    for i in everyone:
        if i not in train:
            out.final[i] = icl[i]  # type: ignore[index]
    if not train:
        return out

    # 2. TTT in rounds; between rounds, tasks whose adapter solves its held-out demos stop and are predicted.
    ops.fresh_adapters()
    active = list(train)
    rounds = plan.rounds
    for r, n_steps in enumerate(rounds):
        with charge("ttt", active):
            losses, tokens = ops.train(active, n_steps, r)
        for k, i in enumerate(active):
            out.losses[i] += losses[k]
            out.steps[i] += n_steps
            out.tokens[i] += tokens // len(active)
        if r == len(rounds) - 1 or not policy.loo_stop:
            continue
        loo = leave_one_out(active, adapted=True)
        for i, v in zip(active, loo, strict=True):
            out.signals[i][f"loo_round{r + 1}"] = v
        stop = [i for i, v in zip(active, loo, strict=True) if v == 1.0]
        if stop:
            for i, p in zip(stop, predict("predict", stop, adapted=True), strict=True):
                out.final[i], out.decision[i] = p, "brief"
        active = [i for i in active if i not in stop]
        if not active:
            break

    # 3. Tasks trained to the end of a plan of several rounds are the hard ones: sample more.
    if active:
        more = policy.more_orders if len(rounds) > 1 else 1
        for i, p in zip(active, predict("predict", active, adapted=True, more_orders=more), strict=True):
            out.final[i], out.decision[i] = p, "long" if len(rounds) > 1 else "ttt"

    # 4. Keep the ICL answer where the base model did better on held-out demos than the adapter.
    if policy.pick_by_loo and icl is not None:
        loo = leave_one_out(train, adapted=True)
        for i, v in zip(train, loo, strict=True):
            out.signals[i]["loo_ttt"] = v
            base = out.signals[i].get("loo_base")
            if base is not None and v is not None and base > v:
                out.final[i], out.decision[i] = icl[i], out.decision[i] + "+icl"
    return out

