"""What a policy's cuts would score and cost, replayed over runs already measured (issue 25), before a GPU runs it.

Issue 25 asks the default's accuracy at a fraction of its compute, and where a goal cannot be met, which signal or
cost stands in the way. The measured records of a full run (every task trained) and of a run without TTT hold most
of the answer: the no-TTT run's views say what a cheap pass would have seen, the full run what TTT would have
added. This replays settle's rules over them, task by task, and scores each rule against the full run, paired:

- **answer now where K views agree**: a cheap pass of K views drawn from the no-TTT run's 8 (each view's answer is a
  slot of its record's vote counts; slots the record did not keep, five candidates at most, are views that answered
  something else, or nothing). A task whose top answer holds all K views (settle's `answer_at` 1.0; `--answer-at`)
  is answered with the pass's two most voted grids; every other task gets the full run's answer and cost. The pass
  costs the no-TTT run's decoding seconds times K/8 (no scoring), and is averaged over `--draws` random draws.
- **the same, gated by the base model's leave-one-out check** (`--cheap RUN`: a run of the real cheap pass, such as
  `testtime evaluate --policy settle --budget 0.001`, whose records carry `agreement` and `loo_base`): answered now
  only where its views agree and the base model solves every held-out demo, with that run's own answers. Its device
  may differ from the full run's: its decoding is priced as above, and its check at the check's share of its own
  seconds (the check over the decoding, both measured on its device).
- **scoring cut where the full run's views agree** (settle's `score_none_at`): a test input whose top answer holds at
  least that share of the views is answered by the vote, unscored; it saves the full run's selection seconds.
- **give up after K TTT steps where the training loss stays high** (`--give-up STEP:LOSS`): the full run's records
  keep every step's training loss, so this is the one early stop a replay can make. A task whose mean loss over
  steps K-3..K is above LOSS stops there and answers nothing (no decoding, no scoring): it costs K/steps of its TTT
  seconds and scores 0. The rule's thresholds are read off the same tasks it is scored on, so a row that loses
  nothing is an upper bound on what this signal saves.

A replay is an estimate: apart from the training loss it cannot see a task mid-training (the records keep no check
between rounds), and it prices each stage at the measured runs' batching. The GPU runs of
`scripts/gpu_frontier.sh` measure the policies whole.

    python benchmarks/policy_replay.py FULL --icl NO_TTT [--cheap CHEAP] [--tasks arc1/eval] [--give-up STEP:LOSS ...]
        [--md OUT] [--png OUT]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from miss_profile import run_tasks
from provenance import header, publish

from testtime.core.store import read_config, read_results
from testtime.data.tasks import grids_equal
from testtime.report.compare import score_of, sign_test

VIEWS = 8  # the no-TTT run's views (its config's predict_cfg.views; `main` refuses another count)


@dataclass
class Replay:
    """One rule replayed over every task: its per-task scores and seconds, and how many it answered now."""

    name: str
    scores: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    now: float = 0  # tasks the rule cut
    now_right: float | None = 0.0  # what the rule's early answers scored (None: it answers nothing early)
    now_full: float | None = 0.0  # what the full run scored on the same tasks
    draws: list[list[float]] = field(default_factory=list)  # per-task scores of each draw (won and lost are means)

    def won_lost(self, base: list[float]) -> tuple[float, float]:
        per = [(sum(s > b + 1e-9 for s, b in zip(d, base, strict=True)),
                sum(s < b - 1e-9 for s, b in zip(d, base, strict=True))) for d in self.draws or [self.scores]]
        return float(np.mean([w for w, _ in per])), float(np.mean([lo for _, lo in per]))

    def answer(self, settled: bool, early: float, full: dict[str, Any], pass_s: float) -> None:
        """One task: its early answer's score where the rule settled it, else the full run's answer and cost too."""
        self.scores.append(early if settled else float(full["score"]))
        self.seconds.append(pass_s + (0.0 if settled else float(full["seconds"])))
        self.now += settled
        self.now_right += early if settled else 0.0
        self.now_full += float(full["score"]) if settled else 0.0


def pass_seconds(icl_record: dict[str, Any], k: int) -> float:
    """A cheap pass of `k` views, priced at that share of the no-TTT run's decoding (a pass scores nothing)."""
    return float(icl_record["compute"]["icl"]) * k / VIEWS


def _top_two(slots: list[int]) -> tuple[float, list[int]]:
    """The sampled views' agreement (their top answer's share, unkept answers included) and their two most voted
    kept answers, ties to the better-ranked."""
    kept = [s for s in slots if s >= 0]
    if not kept:
        return 0.0, []
    counts = np.bincount(kept)
    order = sorted(np.flatnonzero(counts), key=lambda j: (-counts[j], j))
    return counts.max() / len(slots), order[:2]


def sampled_pass(record: dict[str, Any], truths: list, k: int, rng: np.random.Generator) -> tuple[float, float]:
    """A cheap pass of `k` of a no-TTT record's views: (its agreement, lowest over test inputs; its score)."""
    agree, right = [], []
    for qi, truth in enumerate(truths):
        kept = (record.get("votes") or [])[qi] if qi < len(record.get("votes") or []) else []
        slots = [j for j, c in enumerate(kept or []) for _ in range(int(c.get("count", 1)))]
        slots += [-1] * max(0, VIEWS - len(slots))
        share, top = _top_two([slots[s] for s in rng.choice(len(slots), size=k, replace=False)])
        agree.append(share)
        right.append(truth is not None and any(grids_equal(np.asarray(kept[j]["grid"]), truth) for j in top))
    return (min(agree) if agree else 0.0), float(np.mean(right)) if right else 0.0


def replay_views(full: dict, icl: dict, truths: dict, k: int, answer_at: float, draws: int, seed: int) -> Replay:
    """Answer now where `k` views drawn from the no-TTT run agree, averaged over `draws` draws."""
    out = Replay(f"answer now where {k} views agree (>= {answer_at:g})")
    rng = np.random.default_rng(seed)
    runs = []
    for _ in range(draws):
        one = Replay(out.name)
        for tid, rec in full.items():
            share, score = sampled_pass(icl[tid], truths[tid], k, rng)
            one.answer(share >= answer_at, score, rec, pass_seconds(icl[tid], k))
        runs.append(one)
    out.scores = list(np.mean([r.scores for r in runs], axis=0))
    out.seconds = list(np.mean([r.seconds for r in runs], axis=0))
    out.now, out.now_right, out.now_full = (float(np.mean([getattr(r, a) for r in runs]))
                                            for a in ("now", "now_right", "now_full"))
    out.draws = [r.scores for r in runs]
    return out


def replay_cheap(full: dict, icl: dict, cheap: dict, k: int, answer_at: float, gate: bool) -> Replay:
    """Answer now where the measured cheap pass agrees (and, with `gate`, its base model passes every held-out demo)."""
    out = Replay(f"answer now where the cheap pass's {k} views agree" + (" and the check passes" if gate else ""))
    for tid, rec in full.items():
        c = cheap[tid]
        sig = (c.get("policy") or {}).get("signals") or {}
        spent = c.get("compute") or {}
        decode_s = pass_seconds(icl[tid], k)
        check_s = decode_s * float(spent.get("loo", 0.0)) / max(float(spent.get("icl", 0.0)), 1e-9) if gate else 0.0
        settled = sig.get("agreement", 0.0) >= answer_at and (not gate or sig.get("loo_base") == 1.0)
        out.answer(settled, float(c["score"]), rec, decode_s + check_s)
    return out


def replay_scoring(full: dict, score_none_at: float) -> Replay:
    """The full run, with its vote instead of its scored choice where its views agree; selection's seconds saved."""
    out = Replay(f"full run, unscored where its views agree (>= {score_none_at:g})", now_right=None, now_full=None)
    for rec in full.values():
        # a candidate's `count` is the views that answered it (what settle's agreement counts), `votes` its weight
        shares = [max((int(c.get("count", c.get("votes", 0))) for c in kept), default=0) / VIEWS
                  for kept in rec.get("votes") or []]
        settled = bool(shares) and min(shares) >= score_none_at
        vote = score_of(rec, "vote")
        out.scores.append(float(vote) if settled and vote is not None else float(rec["score"]))
        out.seconds.append(float(rec["seconds"]) - (float(rec["compute"]["select"]) if settled else 0.0))
        out.now += settled
    return out


def step_losses(record: dict[str, Any]) -> list[float] | None:
    """A record's training loss at each TTT step (NaN where a step's loss was not finite, which the record keeps
    as null); None where the task did not train."""
    losses = record.get("ttt_loss")
    return [float("nan") if x is None else float(x) for x in losses] if losses else None


def replay_give_up(full: dict, step: int, loss_at: float) -> Replay:
    """The full run, with the tasks whose training loss is still above `loss_at` at `step` given up there."""
    out = Replay(f"give up after {step} TTT steps where the loss is above {loss_at:g}", now_right=0.0)
    for rec in full.values():
        losses = step_losses(rec)
        trained_on = losses is not None and step < len(losses)  # a task that stops by itself has nothing to give up
        window = [x for x in losses[max(0, step - 4):step] if not np.isnan(x)] if trained_on else []  # steps K-3..K
        stop = bool(window) and float(np.mean(window)) > loss_at
        # early, a given-up task's answer is none: it scores 0, and of its work it paid `step` TTT steps only
        out.answer(stop, 0.0, rec, float(rec["compute"]["ttt"]) * step / len(losses) if stop else 0.0)
    return out


def give_up_spec(text: str) -> tuple[int, float]:
    """`STEP:LOSS` of --give-up, checked: a step of at least 1 and a loss of at least 0."""
    try:
        step, loss = text.split(":")
        parsed = int(step), float(loss)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give STEP:LOSS, say 24:0.2") from None
    if parsed[0] < 1 or not parsed[1] >= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: the step must be at least 1 and the loss at least 0")
    return parsed


def by_task(run: Path) -> dict[str, dict[str, Any]]:
    records = {r["task_id"]: r for r in read_results(run) if not r.get("error")}
    if not records:
        raise ValueError(f"{run}: no records without errors")
    return records


def table(full: dict, rows: list[Replay]) -> list[str]:
    base_s, base = sum(float(r["seconds"]) for r in full.values()), [float(r["score"]) for r in full.values()]
    out = ["| rule | tasks it cut | their early answers scored | the full run scored on them | pass@2 | compute "
           "(share of the full run's) | tasks won | lost | sign test p |", "|---|---|---|---|---|---|---|---|---|",
           f"| the full run (every task trained) | 0 | - | - | {sum(base):.1f} | 1.00 | - | - | - |"]

    def num(x: float | None) -> str:
        return "-" if x is None else f"{x:.1f}"

    for r in rows:
        won, lost = r.won_lost(base)
        out.append(f"| {r.name} | {r.now:g} | {num(r.now_right)} | {num(r.now_full)} | {sum(r.scores):.1f} | "
                   f"{sum(r.seconds) / base_s:.2f} | {won:g} | {lost:g} | {sign_test(round(won), round(lost)):.2f} |")
    return out


def plot(full: dict, icl: dict, rows: list[Replay], png: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base_s = sum(float(r["seconds"]) for r in full.values())
    fig, ax = plt.subplots(figsize=(7, 4))
    fixed = [(sum(float(r["seconds"]) for r in icl.values()) / base_s, sum(float(r["score"]) for r in icl.values()),
              "no TTT (measured)"), (1.0, sum(float(r["score"]) for r in full.values()), "full run (measured)")]
    ax.plot([x for x, _, _ in fixed], [y for _, y, _ in fixed], "ks--", label="measured runs")
    for x, y, name in fixed:
        ax.annotate(name, (x, y), fontsize=7, xytext=(4, -10), textcoords="offset points")
    for r in rows:
        ax.plot(sum(r.seconds) / base_s, sum(r.scores), "o", label=r.name)
    return save_compute_plot(fig, ax, png, "compute, share of the full run's", legend_size=6)


def save_compute_plot(fig, ax, png: Path, xlabel: str, legend_size: int) -> Path:
    """A pass@2-against-compute figure's labels and legend, saved to `png` and closed (escalate_replay's too)."""
    import matplotlib.pyplot as plt

    ax.set_xlabel(xlabel)
    ax.set_ylabel("pass@2 (tasks)")
    ax.legend(fontsize=legend_size, loc="lower right")
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return png


def main(argv: list[str] | None = None) -> list[str]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("full", type=Path, help="a run that trained every task (the default)")
    ap.add_argument("--icl", type=Path, required=True, help="a run of the same tasks without TTT, 8 views")
    ap.add_argument("--cheap", type=Path, default=None, help="a run of the real cheap pass (signals and answers)")
    ap.add_argument("--cheap-views", type=int, default=2, help="the views of that pass (settle's first_views)")
    ap.add_argument("--tasks", default=None, help="the runs' tasks, where the full run's config.json names none")
    ap.add_argument("--views", type=int, nargs="+", default=[2, 4, 8], help="cheap passes of this many views")
    ap.add_argument("--answer-at", type=float, default=1.0, help="the agreement that answers now (settle's 1.0)")
    ap.add_argument("--score-none-at", type=float, nargs="+", default=[0.625, 0.5])
    ap.add_argument("--give-up", type=give_up_spec, nargs="*", default=[(24, 0.2), (24, 0.1), (32, 0.1), (48, 0.05)],
                    metavar="STEP:LOSS", help="give a task up after STEP TTT steps where its loss is above LOSS")
    ap.add_argument("--draws", type=int, default=20, help="random draws of the views a cheap pass samples")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--md", type=Path, default=None, help="append the table here")
    ap.add_argument("--png", type=Path, default=None)
    args = ap.parse_args(argv)
    try:
        full, icl = by_task(args.full), by_task(args.icl)
        cheap = by_task(args.cheap) if args.cheap else None
        tasks = run_tasks(args.full, args.tasks)
        views = ((read_config(args.icl) or {}).get("predict_cfg") or {}).get("views", VIEWS)
        if views != VIEWS:
            raise ValueError(f"{args.icl}: predicted under {views} views; a replay samples from {VIEWS}")
        if any(k < 1 or k > VIEWS for k in args.views):
            raise ValueError(f"--views: each between 1 and {VIEWS}, got {args.views}")
        # Only tasks every run answered, so that each rule is paired with the full run on the same tasks.
        common = [t for t in full if t in icl and (cheap is None or t in cheap) and t in tasks]
        if not common:
            raise ValueError("the runs share no task without errors")
    except (OSError, ValueError) as e:
        sys.exit(f"error: {e}")
    full = {t: full[t] for t in common}
    truths = {t: [ex.output for ex in tasks[t].test] for t in common}
    rows = [replay_views(full, icl, truths, k, args.answer_at, args.draws, args.seed) for k in args.views]
    if cheap is not None:
        rows += [replay_cheap(full, icl, cheap, args.cheap_views, args.answer_at, gate) for gate in (False, True)]
    rows += [replay_scoring(full, s) for s in args.score_none_at]
    rows += [replay_give_up(full, step, loss) for step, loss in args.give_up]
    lines = [*header(f"Policy cuts replayed over {args.full} and {args.icl}", "cpu"), "",
             f"{len(common)} tasks that every run answered without an error; {args.draws} draws of the views.", "",
             *table(full, rows)]
    publish(lines, args.md)
    if args.png:
        print(f"wrote {plot(full, {t: icl[t] for t in common}, rows, args.png)}")
    return lines


if __name__ == "__main__":
    main()
