"""A time budget on the CPU: a task's seconds estimated before it starts, and its plan cut until it fits.

    speed = measure_speed(model)                               # about half a second: this machine, this model
    fitted = fit(task, plan, codec, model, speed, max_seconds=300)  # plan: policy.Plan, the run's resolved stages
    fitted.plan, fitted.line(), fitted.to_json()               # what runs, one line to show, the record's note

The estimate counts each stage's work from the task's own token counts, as the stages will meet them: the TTT
sequences `ttt.build_dataset` makes, the prompts `predict.make_queries` makes, in the batches the engine cuts
(`engine.budget_batches`), over the stages the policy runs. It prices that work with two timings of the model at
hand, so a faster machine or a larger model is priced by what it does, not by this project's CPU:

- `Speed.row_token`: a forward and backward pass over one short row, per token. Matmuls dominate it, and a
  training row of T tokens costs T + ATTENTION_TRAIN * (L*d/N) * T^2 such tokens: attention's work per token and
  key (L layers of width d) against the matmuls' per token (N weights) grows with the row.
- `Speed.step`: one forward pass of one token, which reads every weight once: the floor of a decoding step.
  A step of b rows costs a little more per row, and reads each row's cached keys and values, priced by their
  bytes against the weights'.
- Reading a prompt at once (decoding's prefill, scoring's prefixes and candidates) is priced like a training row
  without the backward pass (PREFILL, ATTENTION_PREFILL). Scoring covers the product of experts and the
  leave-one-out check, which scores each held-out demo's answer instead of decoding it.

The constants were fitted on the 2-core CPU of results/cpu-budget-2026-11-29.md, in units of the timed pace.

The levers of issue 24 are priced from the same work: an ensemble of K adapters trains, decodes and scores K times
over; depth-first sampling decodes DFS_ROWS times the rows of greedy decoding (a guess, not fitted); a second round
trains its steps, decodes and scores again, as if every task were confident.

`fit` keeps a task that fits as it is. One that does not is cut in rounds, each taking one step of every lever in
this order, until the estimate fits in MARGIN of the budget: the extras first (the second round, then depth-first
sampling, then half the ensemble's adapters), one demonstration fewer in context (the longest is
dropped: `max_len` shrinks), half the scoring views of the product of experts (then the vote alone), half the views (and demo
orders), half the TTT steps (down to MIN_TTT_STEPS). TTT then takes back as many steps as the room left by the last
halving holds. Only when every lever is spent does TTT go altogether.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from testtime.data.augment import Transform
from testtime.data.encode import Codec, prompt_lengths
from testtime.data.tasks import Task
from testtime.stages.engine import auto_token_budget, budget_batches, kv_bytes_per_token, prompt_positions
from testtime.stages.policy import POLICIES, Plan, loo_tasks
from testtime.stages.predict import PredictConfig, answered, make_queries
from testtime.stages.selection import scoring_budget
from testtime.stages.ttt import TTTConfig, build_dataset, target_weights

# Fitted on the 2-core CPU (see the module's docstring), relative to the timed pace:
ATTENTION_TRAIN = 4.0  # a training row's attention, per unit of work, against its matmuls (causal, with backward)
TRAIN = 0.98  # a token of a training row against one of the probe (which pays its own overheads)
TRAIN_STEP = 110.0  # what a TTT step costs besides its rows (optimizer, clipping), in probe tokens
PREFILL = 0.51  # a token read without the backward pass, against one of the probe
ATTENTION_PREFILL = 1.35  # a prompt's attention, per unit of work, against its matmuls (padding masks: no causal skip)
CONTINUATION = 1.5  # a scored candidate (every token's logits, a copy of its prefix's cache) against a prefill
DECODE_STEP = 1.8  # a decoding step of one row against the timed one-token pass (picking, cache writes, masks)
DECODE_ROW = 0.3  # each further row of a decoding step, likewise
KV_READ = 0.2  # a cached token's keys and values, per byte, against the weights
# Full-weight adapters (`TTTConfig.adapter`), counted from the operations, not fitted (the constants above were
# fitted with LoRA): each token of a training row pays three more matmuls of the target layers (through the update
# forward and backward, and the update's gradient) against the probe's two of every layer, and each step passes
# over every target weight's float32 state: AdamW reads the update, its gradient and two moments and writes three,
# the per-adapter clipping reads the gradient twice; priced like one-token passes reading that many bytes.
FULL_ROW = 1.5
FULL_STEP_PASSES = 9

# A cut task aims at this share of its room: the estimate of a stage is within about a fifth of what it takes on
# the CPU it was fitted on (and a busy machine's pace drifts while it runs).
MARGIN = 0.9
DFS_ROWS = 2.0  # rows depth-first sampling decodes against greedy decoding's (forks): a guess, not fitted
MIN_TTT_STEPS = 4  # fewer barely move an adapter from its zero start; below this the budget drops TTT instead
PROBE_TOKENS = 256
STAGES = ("icl", "loo", "ttt", "predict", "select")  # the stages of a record's `compute`
DEFAULT_CPU_SECONDS = 300.0


def default_max_seconds(device: torch.device | str) -> float | None:
    """The budget a task gets unless one is asked for: 5 minutes on a CPU, none on a GPU (which runs the largest
    task in seconds)."""
    return DEFAULT_CPU_SECONDS if torch.device(device).type == "cpu" else None


@dataclass(frozen=True)
class Speed:
    """The pace of this machine on this model, timed when a run starts."""

    row_token: float  # seconds per token of a short row's forward and backward pass
    step: float  # seconds of a one-token forward pass

    def to_json(self) -> dict[str, float]:
        return {"row_token_ms": round(1e3 * self.row_token, 4), "step_ms": round(1e3 * self.step, 3)}


@dataclass(frozen=True)
class Shape:
    """What the cost model needs to know of a model beside its pace."""

    attention: float  # L*d/N: attention's work per token and key against the matmuls' per token
    kv_share: float  # one cached token's keys and values, against the bytes of every weight
    token_budget: int  # the generation batch budget of `engine.auto_token_budget`
    targets: float = 1.0  # the adapters' target layers' weights against every matmul's
    target_bytes: float = 1.0  # a float32 copy of the target weights, against the bytes of every weight

    @classmethod
    def of(cls, model: nn.Module) -> Shape:
        cfg = model.config.get_text_config()
        linear = [m for m in model.modules() if isinstance(m, nn.Linear)]
        matmul = sum(m.weight.numel() for m in linear)
        weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
        targets = target_weights(model)
        return cls(attention=cfg.num_hidden_layers * cfg.hidden_size / matmul,
                   kv_share=kv_bytes_per_token(model) / weight_bytes, token_budget=auto_token_budget(model),
                   targets=targets / matmul, target_bytes=4 * targets / weight_bytes)


def measure_speed(model: nn.Module, tokens: int = PROBE_TOKENS) -> Speed:
    """Time the model at hand: a forward and backward pass over one row of `tokens` (gradients to the inputs only,
    as TTT's frozen base computes them), and a one-token forward pass; the best of two each, after a warm-up."""
    device = next(model.parameters()).device
    shape = Shape.of(model)

    rng = torch.Generator().manual_seed(0)  # the run's own random streams stay untouched

    def now() -> float:
        if torch.device(device).type == "cuda":  # a GPU runs behind the launches: time the work, not the queue
            torch.cuda.synchronize(device)
        return time.perf_counter()

    def train_pass(n: int) -> float:
        ids = torch.randint(0, 10, (1, n), generator=rng).to(device)
        pos = prompt_positions(model, ids, torch.ones_like(ids))
        emb = model.get_input_embeddings()(ids).detach().requires_grad_(True)
        start = now()
        with torch.enable_grad():
            hidden = model.get_decoder()(inputs_embeds=emb, position_ids=pos, use_cache=False).last_hidden_state
            torch.autograd.grad(hidden.float().square().mean(), emb)
        return now() - start

    @torch.no_grad()
    def step() -> float:
        ids = torch.ones((1, 1), dtype=torch.long, device=device)
        start = now()
        model(input_ids=ids, position_ids=torch.zeros_like(ids), use_cache=False)
        return now() - start

    was_training = model.training
    model.eval()
    try:
        train_pass(16)
        row = min(train_pass(tokens) for _ in range(2))
        steps = min(step() for _ in range(4))
    finally:
        model.train(was_training)
    return Speed(row_token=row / (tokens + ATTENTION_TRAIN * shape.attention * tokens**2), step=steps)


# ---------------------------------------------------------------- the estimate


def _train_row(t: float, shape: Shape) -> float:
    return TRAIN * (t + ATTENTION_TRAIN * shape.attention * t * t)


def _prefill(rows: int, width: int, shape: Shape, keys: int | None = None) -> float:
    """Probe tokens of `rows` rows of `width` new tokens, each attending to `keys` (default: a prompt's own)."""
    keys = width if keys is None else keys
    return PREFILL * rows * (width + ATTENTION_PREFILL * shape.attention * width * keys)


def ttt_step_seconds(lengths: Sequence[int], batch_size: int, shape: Shape, speed: Speed,
                     adapter: str = "lora") -> float:
    """Expected seconds of a TTT step that draws `batch_size` of these sequences, padded to the longest, training
    a LoRA adapter or (`adapter="full"`) a full-weight one."""
    x = sorted(lengths)
    n, b = len(x), min(batch_size, len(x))
    full = adapter == "full"

    def row(t: int) -> float:
        return _train_row(t, shape) + (TRAIN * FULL_ROW * shape.targets * t if full else 0.0)

    # The longest of b drawn without replacement is x[i] with probability C(i, b-1) / C(n, b).
    total = math.comb(n, b)
    longest = sum(math.comb(i, b - 1) / total * row(x[i]) for i in range(b - 1, n))
    optimizer = speed.step * FULL_STEP_PASSES * shape.target_bytes if full else 0.0
    return speed.row_token * (TRAIN_STEP + b * longest) + optimizer


def decode_seconds(widths: Sequence[int], answers: Sequence[int], token_budget: int, shape: Shape,
                   speed: Speed) -> float:
    """Seconds of `engine.greedy_generate` on prompts of these widths with these answer budgets: each batch's
    prefill, then one step per answer token (no early stop: an upper bound) over its whole cache."""
    seconds = 0.0
    for batch in budget_batches([w + a for w, a in zip(widths, answers, strict=True)], token_budget):
        b, width, steps = len(batch), max(widths[i] for i in batch), max(answers[i] for i in batch)
        seconds += speed.row_token * _prefill(b, width, shape)
        per_step = DECODE_STEP + DECODE_ROW * (b - 1) + KV_READ * b * (width + steps) * shape.kv_share
        seconds += steps * speed.step * per_step
    return seconds


def score_seconds(views: int, width: int, answer: int, candidates: int, token_budget: int, shape: Shape,
                  speed: Speed) -> float:
    """Seconds of `engine.sequence_scores` on `views` prefixes of `width` tokens with `candidates` continuations
    of `answer` tokens each: every prefix once, then each candidate through every prefix's cache."""
    seconds = 0.0
    for batch in budget_batches([width + answer] * views, token_budget):
        b = len(batch)
        cand = CONTINUATION * _prefill(b, answer, shape, keys=width + answer)
        seconds += speed.row_token * (_prefill(b, width, shape) + candidates * cand)
    return seconds


class Estimator:
    """Seconds of each stage of one task's run under a `Plan`, for one model and machine. TTT sequences and
    prompts are built as the run will build them (and kept per setting, since `fit` asks often)."""

    def __init__(self, task: Task, codec: Codec, shape: Shape, speed: Speed) -> None:
        self.task, self.codec, self.shape, self.speed = task, codec, shape, speed
        self._lengths: dict[str, list[int]] = {}

    def _ttt_lengths(self, cfg: TTTConfig) -> list[int]:
        key = repr(cfg)  # a config is not hashable (it holds a list)
        if key not in self._lengths:
            self._lengths[key] = [len(s) for s in build_dataset(self.task, self.codec, cfg)]
        return self._lengths[key]

    def _decode(self, tasks: Sequence[Task], cfg: PredictConfig) -> float:
        queries, _ = make_queries(tasks, self.codec, cfg)
        if not queries:
            return 0.0
        budget = cfg.token_budget or self.shape.token_budget
        return decode_seconds([len(q.prompt) for q in queries], [q.max_new for q in queries], budget, self.shape,
                              self.speed)

    def __call__(self, plan: Plan) -> dict[str, float]:
        p, pcfg = plan.policy, plan.predict
        out = dict.fromkeys(STAGES, 0.0)
        if p.icl_first or not p.ttt:
            out["icl"] = self._decode([self.task], replace(pcfg, views=min(p.first_views or pcfg.views, pcfg.views)))
        if p.ttt:
            rounds = plan.rounds
            step = ttt_step_seconds(self._ttt_lengths(plan.ttt), plan.ttt.batch_size, self.shape, self.speed,
                                    plan.ttt.adapter)
            k = plan.ensemble.adapters  # each member trains, decodes and scores
            out["ttt"] = sum(rounds) * step * k
            checks = int(p.needs_base_loo) + (len(rounds) - 1 if p.loo_stop else 0) + int(p.pick_by_loo)
            out["loo"] = checks * self._loo(plan) if checks else 0.0  # a policy without the check pays nothing
            more = p.more_orders if len(rounds) > 1 else 1
            rows = k * (DFS_ROWS if pcfg.dfs else 1.0)
            out["predict"] = rows * self._decode([self.task], replace(pcfg, orders=pcfg.orders * more))
            predictions = pcfg.views * pcfg.orders * more * rows
        else:
            k, predictions = 1, pcfg.views * pcfg.orders
        out["select"] = k * self._select(plan, int(predictions))
        if p.ttt and plan.second.steps:
            out["second"] = plan.second.steps * step * k + out["predict"] + out["select"]
        return out

    def units(self, plan: Plan) -> dict[str, float]:
        """Seconds of the pieces an allocation buys one at a time (`testtime.stages.allocate`): one view decoded
        (the mean of the plan's views), one leave-one-out check, one TTT step, and the product of experts: reading
        each test input's prompt under every scoring view (`scoring`), then each candidate scored (`candidate`)."""
        pcfg = plan.predict
        scoring = self._score(plan, 0)
        # The levers, as `__call__` prices them: every member of an ensemble trains (`step`); an adapted view or
        # selection runs through each member (`members`, applied by the allocation where adapted); depth-first
        # sampling decodes DFS_ROWS times greedy decoding's rows, adapted or not.
        k, rows = plan.ensemble.adapters, DFS_ROWS if pcfg.dfs else 1.0
        return {"view": rows * self._decode([self.task], pcfg) / (pcfg.views * pcfg.orders), "loo": self._loo(plan),
                "step": k * ttt_step_seconds(self._ttt_lengths(plan.ttt), plan.ttt.batch_size, self.shape,
                                             self.speed, plan.ttt.adapter),
                "scoring": scoring, "candidate": self._score(plan, 1) - scoring, "members": float(k)}

    def _loo(self, plan: Plan) -> float:
        """One leave-one-out check (`grid_ops.GridOps.leave_one_out`): each held-out demo's prompt and answer read
        whole, in padded batches (they share no prefix); those decoding could not give cost nothing (the check counts
        them failed, unscored)."""
        seqs = [answered(self.codec, lt.train, lt.test[0], plan.predict.max_len) for lt in loo_tasks(self.task)]
        widths = [len(s) for s in seqs if s is not None]
        budget = scoring_budget(plan.select, plan.predict.token_budget)
        return sum(self.speed.row_token * _prefill(len(b), max(widths[i] for i in b), self.shape)
                   for b in budget_batches(widths, budget))

    def _select(self, plan: Plan, predictions: int) -> float:
        """Product-of-experts scoring, as if every test input had as many distinct candidates as it may."""
        candidates = min(plan.select.candidates, predictions)
        if plan.select.method == "vote" or candidates <= plan.attempts:
            return 0.0
        return self._score(plan, candidates)

    def _score(self, plan: Plan, candidates: int) -> float:
        """Each test input's prompt read under every scoring view, then `candidates` answers scored."""
        s = plan.select
        queries, _ = make_queries([self.task], self.codec, replace(plan.predict, views=1, orders=1))
        budget = scoring_budget(s, plan.predict.token_budget)
        return sum(score_seconds(s.views * s.colors, len(q.prompt), q.max_new, candidates, budget, self.shape,
                                 self.speed) for q in queries)


def total(seconds: dict[str, float]) -> float:
    return sum(seconds.values())


# ---------------------------------------------------------------- the cuts


def context_lengths(task: Task, codec: Codec) -> list[int]:
    """lengths[k-1]: the max_len at which every prompt keeps k demonstrations (`encode.prompt_lengths`: the encoder
    drops the longest first), over every test input, as given and turned a quarter (a turn changes a grid's token
    count, and with it which demos are the longest). Linear in the demos: each is encoded once a view."""
    views = [view.apply(task) for view in (Transform(), Transform(d8=1))]
    per_prompt = [prompt_lengths(codec, t.train, q.input) for t in views for q in t.test]
    return [max(column) for column in zip(*per_prompt, strict=True)]


def demos_in_context(lengths: Sequence[int], max_len: int) -> int:
    return sum(1 for n in lengths if n <= max_len)


def _cut_extras(plan: Plan) -> Plan | None:
    if plan.second.steps:
        return replace(plan, second=replace(plan.second, steps=0))
    if plan.predict.dfs is not None:
        return replace(plan, predict=replace(plan.predict, dfs=None))
    if plan.ensemble.adapters > 1:
        return replace(plan, ensemble=replace(plan.ensemble, adapters=plan.ensemble.adapters // 2))
    return None


def _cut_context(plan: Plan, lengths: Sequence[int]) -> Plan | None:
    kept = demos_in_context(lengths, plan.predict.max_len)
    if kept <= 1:
        return None
    max_len = lengths[kept - 2]
    return replace(plan, ttt=replace(plan.ttt, max_len=min(plan.ttt.max_len, max_len)),
                   predict=replace(plan.predict, max_len=max_len))


def _cut_scoring(plan: Plan) -> Plan | None:
    s = plan.select
    if s.method == "vote":
        return None
    if s.colors > 1:
        return replace(plan, select=replace(s, colors=s.colors // 2))
    if s.views > 1:
        return replace(plan, select=replace(s, views=s.views // 2))
    return replace(plan, select=replace(s, method="vote"))


def _cut_views(plan: Plan) -> Plan | None:
    p = plan.predict
    if p.orders > 1:
        return replace(plan, predict=replace(p, orders=p.orders // 2))
    if p.views > 1:
        return replace(plan, predict=replace(p, views=p.views // 2))
    return None


def with_steps(plan: Plan, steps: int) -> Plan:
    # One epoch of that many fresh sequences: fewer steps, none of them a repeat.
    return replace(plan, ttt=replace(plan.ttt, epochs=1, samples=steps * plan.ttt.batch_size))


def _cut_steps(plan: Plan) -> Plan | None:
    if not plan.policy.ttt or plan.ttt.steps <= MIN_TTT_STEPS:
        return None
    return with_steps(plan, max(MIN_TTT_STEPS, plan.ttt.steps // 2))


def refill_steps(plan: Plan, seconds: dict[str, float], most: Plan, room: float,
                  estimate: Callable[[Plan], dict[str, float]]) -> tuple[Plan, dict[str, float]]:
    """As many TTT steps back (up to those of `most`, the plan as configured) as the room a halving left still
    holds: a step costs about the same whatever their number, so the first guess is near, and each miss takes one
    step off."""
    steps = plan.ttt.steps
    per_step = seconds["ttt"] / max(1, plan.steps)
    more = int((room - total(seconds)) // per_step) if per_step > 0 else 0
    for n in range(min(most.ttt.steps, steps + more), steps, -1):
        # Back at the configured steps: the configured recipe itself (its samples and epochs), not one epoch.
        cand = replace(plan, ttt=most.ttt) if n == most.ttt.steps else with_steps(plan, n)
        got = estimate(cand)
        if total(got) <= room:
            return cand, got
    return plan, seconds


def no_ttt(plan: Plan) -> Plan:
    return replace(plan, policy=POLICIES["never"])


def describe(before: Plan, after: Plan, lengths: Sequence[int]) -> list[str]:
    """What `after` cut from `before`, in the order the levers are tried."""
    out = []
    if before.second.steps and not after.second.steps:
        out.append("no second round")
    if before.predict.dfs is not None and after.predict.dfs is None:
        out.append("greedy decoding instead of depth-first sampling")
    if after.ensemble.adapters < before.ensemble.adapters:
        out.append(f"adapters {before.ensemble.adapters} -> {after.ensemble.adapters}")
    a, b = demos_in_context(lengths, before.predict.max_len), demos_in_context(lengths, after.predict.max_len)
    if b < a:
        out.append(f"context {a} -> {b} demo{'s' if b > 1 else ''} (max_len {after.predict.max_len})")
    s0, s1 = before.select, after.select
    v0, v1 = before.predict.views * before.predict.orders, after.predict.views * after.predict.orders
    if s0.method != "vote" and v0 > before.attempts:  # it scored: does it still?
        if s1.method == "vote":
            out.append(f"scoring {s0.views * s0.colors} views -> off (vote)")
        elif v1 <= after.attempts:
            out.append("no scoring (as few answers as attempts)")
        elif s1.views * s1.colors < s0.views * s0.colors:
            out.append(f"scoring views {s0.views * s0.colors} -> {s1.views * s1.colors}")
    if v1 < v0:
        out.append(f"views {v0} -> {v1}")
    if after.policy.ttt and after.ttt.steps < before.ttt.steps:
        out.append(f"TTT {before.ttt.steps} -> {after.ttt.steps} steps")
    if before.policy.ttt and not after.policy.ttt:
        out.append("no TTT")
    return out


@dataclass
class Fit:
    """A task's plan fitted to a budget: the plan that runs, what was cut from the plan as configured, and the
    estimates of both."""

    max_seconds: float
    plan: Plan
    asked: dict[str, float]  # seconds of each stage of the plan as configured
    planned: dict[str, float]  # ... and of the plan that runs
    cuts: list[str]
    speed: Speed
    spent: float = 0.0  # seconds of the budget gone before the task started (loading the model, say)

    @property
    def fits(self) -> bool:
        return self.spent + total(self.planned) <= self.max_seconds

    def line(self) -> str:
        """The fitted plan in one line, for the output before the work starts."""
        def parts(s: dict[str, float]) -> str:
            named = {"TTT": s["ttt"], "decoding": s["icl"] + s["predict"], "scoring": s["loo"] + s["select"],
                     "second round": s.get("second", 0.0)}
            return ", ".join(f"{k} {v:.0f} s" for k, v in named.items() if v >= 0.5) or "each stage under a second"

        loading = f" ({self.spent:.0f} s spent loading)" if self.spent >= 1 else ""
        left = f"the budget of {self.max_seconds:g} s{loading}"
        asked = f"estimated {total(self.asked):.0f} s ({parts(self.asked)})"
        if not self.cuts:
            return f"{asked}, within {left}"
        out = f"{asked}, over {left}; cut to {total(self.planned):.0f} s: {', '.join(self.cuts)}"
        return out if self.fits else out + " (still over: nothing left to cut)"

    def to_json(self) -> dict[str, Any]:
        """The record's note: the budget, what was cut, the estimate of each stage (beside the record's `compute`,
        what each took), the estimate before the cuts, and the timed pace."""
        return {"max_seconds": self.max_seconds, "spent": round(self.spent, 2), "cuts": list(self.cuts),
                "estimate": {k: round(v, 2) for k, v in self.planned.items()},
                "estimate_uncut": round(total(self.asked), 2), "speed": self.speed.to_json()}


def fit(task: Task, plan: Plan, codec: Codec, model: nn.Module | None, speed: Speed, max_seconds: float, *,
        spent: float = 0.0, estimator: Callable[[Plan], dict[str, float]] | None = None) -> Fit:
    """`work` as it is when its estimate fits the `max_seconds` left after `spent`; else cut (see the module's
    docstring) until it fits, or as far as it goes. `estimator` replaces the cost model (a test's)."""
    estimate = estimator or Estimator(task, codec, Shape.of(model), speed)
    lengths = context_lengths(task, codec)
    room = max_seconds - spent
    asked = estimate(plan)
    cur, seconds = plan, asked
    if total(asked) > room:
        room *= MARGIN
    while total(seconds) > room and (nxt := _cut_extras(cur)) is not None:  # what issue 24 adds goes first
        cur, seconds = nxt, estimate(nxt)
    levers = (lambda w: _cut_context(w, lengths), _cut_scoring, _cut_views, _cut_steps)
    moved = True
    while total(seconds) > room and moved:
        moved = False
        for lever in levers:
            nxt = lever(cur)
            if nxt is None:
                continue
            cur, seconds, moved = nxt, estimate(nxt), True
            if total(seconds) <= room:
                break
    if total(seconds) > room and cur.policy.ttt:
        cur = no_ttt(cur)
        seconds = estimate(cur)
    elif cur.policy.ttt and cur.ttt.steps < plan.ttt.steps:
        cur, seconds = refill_steps(cur, seconds, plan, room, estimate)
    return Fit(max_seconds, cur, asked, seconds, describe(plan, cur, lengths), speed, spent)
