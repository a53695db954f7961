"""The grid recipe: ARC tasks -> (policy) adapters -> augmented predictions -> selection -> pass@2.

One task through `solve_task`, top to bottom:

1. `plan_of(cfg)` (in `GridKind`): the config resolved once into a `policy.Plan`, the policy's stages with the TTT
   schedule, the views and the selection; an unknown or contradictory policy fails here, before a model loads.
2. `GridKind.fit_budget`: with a time budget, the plan cut until its estimate fits (`budget.fit`); a task cut keeps
   its own plan and runs alone.
3. `GridKind.prepare`: the task's TTT data from its demonstrations, as its plan says.
4. `GridKind.run_group`: `policy.run_policy` runs the plan's stages (ICL, leave-one-out checks, TTT rounds,
   prediction) over `GridOps`, the plain calls; then the vote, the selection (`select`) and the records.

`GridKind` is how the run pipeline (`runs`) runs ARC tasks: `evaluate` runs a task set into a run folder,
`solve_tasks` a batch of tasks in memory, through the same groups.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Annotated, Any

from tqdm.auto import tqdm

from testtime.core import store
from testtime.core.config import SECONDS, ConfigError, Range, check, check_value, read_json, typed
from testtime.data.encode import Codec, TooLongError
from testtime.data.tasks import Task, TaskError, load_tasks
from testtime.model.loading import load_model
from testtime.model.lora import MultiLoRA
from testtime.recipes import runs
from testtime.recipes.grid_ops import GridOps, device_clock
from testtime.recipes.grid_records import error_record, group_records
from testtime.recipes.grid_rounds import second_round
from testtime.recipes.joint import JointConfig, joint_stage, read_joint
from testtime.report.report import summarize, write_report
from testtime.report.submission import write_submission
from testtime.stages import budget
from testtime.stages.allocate import (
    Ledger,
    Pace,
    Units,
    run_anytime,
    second_round_price,
    selection_work,
    within,
)
from testtime.stages.engine import auto_token_budget, budget_batches
from testtime.stages.ensemble import (
    EnsembleConfig,
    member_adapters,
    member_datasets,
)
from testtime.stages.loo_audit import Audit
from testtime.stages.policy import (
    DEFAULT_POLICY,
    Outcome,
    Plan,
    get_policy,
    resolve_plan,
    run_policy,
)
from testtime.stages.predict import PredictConfig
from testtime.stages.second_round import SecondRoundConfig
from testtime.stages.selection import Ranked, SelectConfig, rank_candidates, scoring_budget
from testtime.stages.ttt import TTTConfig, max_tasks_together
from testtime.stages.vote import Candidate, hierarchical_vote


@dataclass
class EvalConfig:
    tasks: str = "arc1/eval"
    model: str | None = None  # None: the shipped base model
    ttt: bool = True
    limit: Annotated[int | None, runs.TASKS] = None
    device: str | None = None  # None: cuda when available
    # tasks trained and predicted together; None: by device, see runs.GROUP_SIZES
    max_group: Annotated[int | None, runs.GROUP] = None
    policy: str | None = None  # see testtime.stages.policy; None: its DEFAULT_POLICY with ttt, "never" without
    # Seconds a task on average over the run, spent where the signals say a task is unsolved (testtime.stages.allocate);
    # None: no budget. It takes a policy that allocates (anytime, the one it implies where none is named, or settle).
    budget: Annotated[float | None, Range(0, 1e6, lo_open=True)] = None
    # Also decode every held-out demo the leave-one-out check scores, and record where the two verdicts differ and
    # what decoding took (outside the record's compute): the check's cost against decoding's, measured in the policy.
    audit_loo: bool = False
    attempts: Annotated[int, Range(1, 16)] = 2
    ttt_cfg: TTTConfig = field(default_factory=TTTConfig)
    predict_cfg: PredictConfig = field(default_factory=PredictConfig)
    select_cfg: SelectConfig = field(default_factory=SelectConfig)
    joint_cfg: JointConfig = field(default_factory=JointConfig)
    ensemble_cfg: EnsembleConfig = field(default_factory=EnsembleConfig)  # adapters per task (stages.ensemble)
    second_cfg: SecondRoundConfig = field(default_factory=SecondRoundConfig)  # a second round (stages.second_round)


def config_to_dict(cfg: EvalConfig) -> dict[str, Any]:
    return asdict(cfg)


def config_from_dict(d: Any, where: str = "config") -> EvalConfig:
    """An EvalConfig from a JSON object; unknown keys and values of the wrong type are one-line ConfigErrors."""
    return typed(EvalConfig, d, where)


def load_eval_config(path: str | Path) -> EvalConfig:
    return config_from_dict(read_json(path), str(path))


def task_cost(task: Task) -> int:
    """Estimated work of a task, in grid tokens (one per cell and row end) of its demos and test inputs."""
    grids = [g for e in task.train for g in (e.input, e.output)] + [e.input for e in task.test]
    return sum(g.shape[0] * (g.shape[1] + 1) for g in grids) * (1 + len(task.test))


def effective_policy(cfg: EvalConfig) -> str:
    """`cfg.policy`, or what `cfg.ttt` (and a budget) asks for when no policy is named."""
    if cfg.policy and not cfg.ttt and cfg.policy != "never":
        raise ConfigError(f"--no-ttt contradicts policy {cfg.policy!r}; drop one of them")
    if cfg.budget is not None and not cfg.ttt:
        raise ConfigError("--no-ttt leaves --budget nothing to spend; drop one of them")
    if cfg.budget is not None and cfg.policy and not get_policy(cfg.policy).anytime:
        raise ConfigError(f"--budget is spent by a policy that allocates (anytime, settle), not {cfg.policy!r}")
    return cfg.policy or ("anytime" if cfg.budget is not None else DEFAULT_POLICY if cfg.ttt else "never")


def plan_of(cfg: EvalConfig) -> Plan:
    """The plan every task of a run of `cfg` follows (unless the time budget cuts its own): see `policy.Plan`."""
    return resolve_plan(effective_policy(cfg), cfg.ttt_cfg, cfg.predict_cfg, cfg.select_cfg, cfg.attempts,
                        cfg.ensemble_cfg, cfg.second_cfg)


def default_out(cfg: EvalConfig) -> Path:
    name = effective_policy(cfg)
    return Path("runs") / f"{cfg.tasks.replace('/', '-')}-{'icl' if name == 'never' else name}"


def plan_groups(tasks: Sequence[Task], lengths: dict[str, int], tcfg: TTTConfig, size: int,
                members: int = 1) -> list[list[Task]]:
    """Tasks of similar sequence length together, at most `size` a group, each group under the training token
    budget."""
    # A task's training rows are batch_size sequences of its longest length, for each of its `members` adapters.
    widths = [lengths.get(t.id, 0) * tcfg.batch_size * members for t in tasks]
    return [[tasks[i] for i in b] for b in budget_batches(widths, tcfg.token_budget, max_rows=size)]


class GridKind(runs.AdapterSlots):
    """ARC tasks in the run pipeline (`runs.TaskKind`); holds the model and its adapter slots across groups.

    `plan` is the run's plan, resolved once from `cfg`. With `max_seconds`, each task's plan is fitted to that many
    seconds before it starts (`testtime.stages.budget`, pricing the work at `speed`, timed on first use); a task the
    budget cut runs alone, with its own plan, and `say` hears one line about it. With `show_steps`, each group's TTT
    steps show a progress bar. `candidates`, where set to a dict, receives every task's ranked candidates."""

    name, noun = "grid", "tasks"

    def __init__(self, cfg: EvalConfig, model=None, codec: Codec | None = None, *, max_seconds: float | None = None,
                 say: Callable[[str], None] | None = None, speed: budget.Speed | None = None,
                 show_steps: bool = False, tokenizer=None) -> None:
        self.cfg = cfg
        self.plan: Plan = plan_of(cfg)
        self.own: dict[str, Plan] = {}  # the plan of each task the budget cut
        self.fits: dict[str, budget.Fit] = {}
        self.max_seconds, self.say, self.speed, self.show_steps = max_seconds, say, speed, show_steps
        self.candidates: dict[str, list[list[Ranked]]] | None = None
        self.model, self.codec, self.tokenizer = model, codec, tokenizer
        self.lora: MultiLoRA | None = None
        self.datasets: dict[str, list] = {}
        self.lengths: dict[str, int] = {}
        self.joint_dir: Path | None = None
        # A policy that allocates (`testtime.stages.allocate`): each task's pieces of work, the pace they run at,
        # and with a budget its ledger; `finished` is what the run's finished tasks spent: (run's tasks, seconds, done).
        self.units: dict[str, Units] = {}
        self.shape: budget.Shape | None = None
        self.pace = Pace()
        self.ledger: Ledger | None = None
        self.finished: tuple[int, float, int] | None = None

    @property
    def cuda(self) -> bool:
        return next(self.model.parameters()).device.type == "cuda"

    def cost(self, task: Task) -> int:
        return task_cost(task)

    def load(self, device: str):
        if self.model is None:
            loaded = load_model(self.cfg.model, device)
            self.model, self.codec, self.tokenizer = loaded.model, loaded.codec, loaded.tokenizer
        self.model.eval()
        return self.model

    def before_tasks(self, tasks: Sequence[Task], out_dir: Path, pending: bool, show_progress: bool = True) -> None:
        """The joint stage (`testtime.recipes.joint`) over all the run's tasks, when configured and tasks are `pending`; the
        per-task adapters then start from its weights. With a budget, what the run's finished tasks spent (a resumed
        run spends what is left)."""
        if self.cfg.budget is not None:
            ids = {t.id for t in tasks}
            done = {r["task_id"]: float(r.get("seconds") or 0.0) for f in store.result_files(out_dir)
                    for r in store.read_file_records(f) if r["task_id"] in ids}
            self.finished = (len(tasks), sum(done.values()), len(done))
        jc = self.cfg.joint_cfg
        if not jc.runs_for(len(tasks)):
            return
        from testtime.model.loading import default_model_dir

        self.joint_dir = Path(jc.dir) if jc.dir else out_dir / "joint"
        if not pending:
            return
        res = joint_stage(self.model, self.tokenizer, self.codec, tasks, jc, self.joint_dir,
                          base=str(self.cfg.model or default_model_dir()), progress=show_progress)
        self.model = res.model

    def plan_for(self, group: Sequence[Task]) -> Plan:
        """The plan a group follows: its task's own where the budget cut it (it then runs alone)."""
        return self.own.get(group[0].id, self.plan) if len(group) == 1 else self.plan

    def fit_budget(self, task: Task, spent: float = 0.0) -> budget.Fit:
        """The task's plan fitted to the budget (timing the model first, once); a task cut keeps its own plan."""
        if self.speed is None:
            self.speed = budget.measure_speed(self.model)
        fitted = budget.fit(task, self.plan, self.codec, self.model, self.speed, self.max_seconds, spent=spent)
        self.fits[task.id] = fitted
        if fitted.cuts:
            self.own[task.id] = fitted.plan
        return fitted

    def prepare(self, tasks: Sequence[Task]) -> tuple[list[Task], list[dict[str, Any]]]:
        """Each task fitted to the budget (if any, and not fitted yet), then its TTT data."""
        ready, bad = [], []
        for t in tasks:
            try:
                if self.max_seconds is not None and t.id not in self.fits:
                    fitted = self.fit_budget(t)
                    if fitted.cuts and self.say:
                        self.say(f"task {t.id}: {fitted.line()}")
                plan = self.plan_for([t])
                if plan.policy.ttt:
                    data = member_datasets(t, self.codec, plan.ttt, plan.ensemble)
                    self.datasets.update(data)
                    self.lengths[t.id] = max(len(s) for d in data.values() for s in d)
                else:
                    self.lengths[t.id] = sum(e.input.size + e.output.size for e in t.train)
                if plan.policy.anytime or self.cfg.budget is not None:
                    # Under a budget every task has its prices, one the time budget cut to no TTT too: the ledger
                    # shares the run's seconds by them.
                    self.units[t.id] = self._units(t, plan)
                ready.append(t)
            except TooLongError as e:
                bad.append(error_record(t, str(e)))
        if self.cfg.budget is not None and self.ledger is None:
            n_run, seconds, n_done = self.finished or (len(tasks), 0.0, 0)
            self.ledger = Ledger.start(self.cfg.budget, n_run, seconds, n_done, len(tasks),
                                       {t.id: self.units[t.id].reference(self.plan_for([t])) for t in ready})
        return ready, bad

    def _units(self, task: Task, plan: Plan) -> Units:
        """The task's pieces of work priced by the cost model (`budget.Estimator.units`), on a pace timed once."""
        if self.speed is None:
            self.speed = budget.measure_speed(self.model)
        if self.shape is None:
            self.shape = budget.Shape.of(self.model)
        return Units.of(budget.Estimator(task, self.codec, self.shape, self.speed).units(plan))

    def groups(self, tasks: Sequence[Task], size: int) -> list[list[Task]]:
        rest = [t for t in tasks if t.id not in self.own]
        alone = [[t] for t in tasks if t.id in self.own]  # with plans of their own
        if self.plan.policy.ttt:
            members = self.plan.ensemble.adapters
            cap = max_tasks_together(self.model, self.plan.ttt)  # adapters, for a bank of full ones
            size = min(size, max(1, cap // members) if cap else size)
            return plan_groups(rest, self.lengths, self.plan.ttt, size, members) + alone
        return [list(rest[i: i + size]) for i in range(0, len(rest), size)] + alone

    def run_group(self, group: list[Task], token_budget: int | None = None) -> list[dict[str, Any]]:
        """The group's plan, stage by stage: the policy's stages (`run_policy`), the vote, the selection, the
        records. `token_budget` replaces the plan's generation budget (an out-of-memory retry's)."""
        plan = self.plan_for(group)
        if token_budget is not None:
            plan = plan.with_token_budget(token_budget)
        fits = [self.fits[t.id] for t in group if t.id in self.fits]
        with tqdm(total=plan.steps, desc="test-time training", unit="step",
                  disable=not (self.show_steps and plan.policy.ttt)) as bar:
            if fits and len(fits) == len(group):  # the bar's time left covers the steps; the stages after are estimated
                after = sum(budget.total(f.planned) - f.planned["ttt"] for f in fits)
                bar.set_postfix_str(f"then about {after:.0f} s more")
            try:
                audit = Audit.of(len(group), lambda: device_clock(self.cuda)) if self.cfg.audit_loo else None
                ops = GridOps(self, group, plan.predict, plan.ttt, plan.select, bar.update, plan.ensemble, audit=audit)
                allot = None
                if plan.policy.anytime:
                    allot = self.ledger.allot([t.id for t in group]) if self.ledger is not None else None
                    out = run_anytime(plan, len(group), ops, [self.units[t.id] for t in group], self.pace, allot)
                else:
                    out = run_policy(plan, len(group), ops)
            finally:
                if self.lora is not None:
                    self.lora.use(None)
        votes = [[hierarchical_vote(pl, per_group=plan.predict.per_group) for pl in p.predictions] for p in out.final]
        t0 = device_clock(self.cuda)
        ranked = self.select(group, votes, out, plan)
        dt = device_clock(self.cuda) - t0
        for spent in out.spent:
            spent["select"] = dt / len(group)
        if plan.policy.anytime:  # the pace of scoring, for the next group's prices
            adapted = [out.adapted(i) for i in range(len(group))]
            self.pace.observe("select", dt, selection_work([self.units[t.id] for t in group],
                                                           [[len(v) for v in vs] for vs in votes], out.score, plan,
                                                           adapted))
        rounds = None
        if plan.second.steps and plan.policy.ttt:
            # Under a budget the round is bought last, with what the group has left of its allotment.
            afford = None if allot is None else partial(
                self._affordable, group, plan, allot - sum(sum(sp.values()) for sp in out.spent))
            rounds = second_round(plan, group, out, votes, ranked, lambda tasks, data: GridOps(
                self, tasks, plan.predict, plan.ttt, plan.select, None, plan.ensemble, data), self.model, self.codec,
                afford)
        if self.candidates is not None:
            self.candidates.update((t.id, r) for t, r in zip(group, ranked, strict=True))
        records = group_records(group, plan, out, votes, ranked, self.fits, rounds, audit.notes if audit else None)
        if self.ledger is not None:
            self.ledger.charge([t.id for t in group], sum(r["seconds"] for r in records))
        return records

    def _affordable(self, group: list[Task], plan: Plan, room: float, chosen: list[int]) -> list[int]:
        """Of the tasks `chosen` for a second round, those whose price still fits `room` seconds."""
        return within(chosen, {i: second_round_price(self.units[group[i].id], self.pace, plan) for i in chosen}, room)

    def select(self, group: list[Task], votes: list[list[list[Candidate]]], out: Outcome,
               plan: Plan) -> list[list[list[Ranked]]]:
        """Each task's candidates ranked by the plan's selection: scored through the task's adapter where its final
        answers came from it, else through the base model; as many as the policy left it to score (`Outcome.score`:
        none, the vote's order, or its top few)."""
        scfg = replace(plan.select, token_budget=scoring_budget(plan.select, plan.predict.token_budget))
        adapted = [i for i in range(len(group)) if out.adapted(i)]
        ranked: list[Any] = [None] * len(group)
        for items, adapters in (
                (adapted, [m.take(adapted) for m in member_adapters(self.lora, len(group), plan.ttt, plan.ensemble)]
                          if adapted else None),
                ([i for i in range(len(group)) if i not in adapted], None)):
            for k in dict.fromkeys(out.score[i] for i in items):  # as configured (None) first, in order
                some = [j for j, i in enumerate(items) if out.score[i] == k]
                cfg = scfg if k is None else replace(scfg, method="vote") if k == 0 else replace(scfg, candidates=k)
                got = rank_candidates(self.model, [group[items[j]] for j in some], [votes[items[j]] for j in some],
                                      self.codec, cfg, adapters=[m.take(some) for m in adapters] if adapters else None,
                                      max_len=plan.predict.max_len, attempts=plan.attempts)
                for j, r in zip(some, got, strict=True):
                    ranked[items[j]] = r
        return ranked

    def token_budget(self) -> int:
        return self.plan.predict.token_budget or auto_token_budget(self.model)

    def error_record(self, task: Task, error: str) -> dict[str, Any]:
        return error_record(task, error)

    def postfix(self, records: Sequence[dict[str, Any]]) -> dict[str, str]:
        scored = [r for r in records if r.get("score") is not None]
        return {"pass2": f"{sum(r['score'] for r in scored):.1f}/{len(scored)}"} if scored else {}

    def summarize(self, records: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """The run's totals; with a budget, also what it spent against it, a task on average."""
        out = summarize(records, joint=read_joint(self.joint_dir))
        if self.cfg.budget is not None and records:
            out["budget"] = {"seconds_per_task": self.cfg.budget,
                             "spent_per_task": round(out["total_seconds"] / len(records), 4)}
        return out

    def finish(self, out_dir: Path, records, tasks: Sequence[Task], all_tasks: Sequence[Task]) -> None:
        """Kaggle-style `submission.json` and the HTML report."""
        write_submission(records, out_dir / store.SUBMISSION, tasks=tasks)
        write_report(out_dir, list(all_tasks))


def evaluate(cfg: EvalConfig, out_dir: Path, *, model=None, codec: Codec | None = None, tokenizer=None,
             tasks: Sequence[Task] | None = None, show_progress: bool = True,
             max_minutes: float | None = None, skipped: Sequence[str] = (), max_seconds: float | None = None,
             say: Callable[[str], None] | None = None, speed: budget.Speed | None = None,
             labels: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """Run (or resume) an evaluation of grid tasks into `out_dir` (see `runs.run`); with `max_seconds`, each task's
    work is fitted to that many seconds (`testtime.stages.budget`), and `say` hears of every task cut. `labels` (task
    id -> label: a stream's familiar and novel queries, say) go into each record as it is written (`label`), for
    analysis: the task kind, and so the policy, never holds them."""
    check(cfg)
    check_value("max_seconds", max_seconds, SECONDS)
    # an unknown or contradictory policy fails here, before any model loads
    kind = GridKind(cfg, model, codec, max_seconds=max_seconds, say=say, speed=speed, tokenizer=tokenizer)
    tasks = load_tasks(cfg.tasks) if tasks is None else tasks
    return runs.run(kind, config_to_dict(cfg), tasks, out_dir, device=cfg.device, limit=cfg.limit,
                    max_group=cfg.max_group, max_minutes=max_minutes, skipped=skipped, show_progress=show_progress,
                    annotate=None if labels is None else runs.labelled(labels))


@dataclass
class Solved:
    """What `solve_tasks` returns: the records (in the order of the tasks), each task's ranked candidates (none for a
    task that could not run), and the pace the budget timed (to hand the next call)."""

    records: list[dict[str, Any]]
    candidates: dict[str, list[list[Ranked]]]
    speed: budget.Speed | None


def solve_tasks(tasks: Sequence[Task], cfg: EvalConfig, model, codec: Codec, *, max_seconds: float | None = None,
                spent: float = 0.0, say: Callable[[str], None] | None = None, speed: budget.Speed | None = None,
                show_progress: bool = True) -> Solved:
    """Tasks solved together in memory, without a run folder: the plan resolved once, each task's plan fitted to
    `max_seconds` less the `spent` ones (loading, say; `say` hears each fitted plan before the work starts), then
    the run loop's groups (`runs.solve`), trained and decoded together. Task ids must be distinct."""
    check_value("max_seconds", max_seconds, SECONDS)
    kind = GridKind(check(cfg), model, codec, max_seconds=max_seconds, speed=speed, show_steps=show_progress)
    kind.candidates = {}
    device = next(model.parameters()).device
    kind.load(str(device))
    if max_seconds is not None:
        for t in tasks:
            try:
                fitted = kind.fit_budget(t, spent)
            except TooLongError:
                continue  # prepare reports it as the task's error
            if say:
                say(fitted.line() if len(tasks) == 1 else f"task {t.id}: {fitted.line()}")
    records = runs.solve(kind, tasks, size=runs.group_size(cfg.max_group, device, kind.name))
    return Solved(records, kind.candidates, kind.speed)


def solve_task(task: Task, cfg: EvalConfig, model, codec: Codec, *, show_progress: bool = True,
               max_seconds: float | None = None, spent: float = 0.0, say: Callable[[str], None] | None = None
               ) -> dict[str, Any]:
    """One task, start to end (`solve_tasks`), with a progress bar over its TTT steps (and the time they have left);
    returns its record. A task that cannot run at all (too long for any context) is a TaskError."""
    solved = solve_tasks([task], cfg, model, codec, max_seconds=max_seconds, spent=spent, say=say,
                         show_progress=show_progress)
    rec = solved.records[0]
    if task.id not in solved.candidates:
        raise TaskError(rec["error"])
    return rec
