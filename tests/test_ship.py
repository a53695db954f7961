"""The campaign's ship rule (testtime.report.ship): the 400's verdict, the guards' thresholds, the decision, and
`testtime ship`, which campaign_ship_checks.sh runs on the device."""

import json

import pytest
from typer.testing import CliRunner

from testtime.cli import app
from testtime.report.ship import ShipError, decide, guard, losses_p, yardstick


def _records(scores, adapters=1):
    return [{"task_id": f"t{i}", "score": s, **({"adapters": adapters} if adapters > 1 else {})}
            for i, s in enumerate(scores)]


def _split(won, lost, tied=20):
    """The shipped model's and a stretch's records: the stretch wins `won` tasks and loses `lost`."""
    shipped = [0.0] * won + [1.0] * lost + [1.0] * tied
    stretch = [1.0] * won + [0.0] * lost + [1.0] * tied
    return _records(shipped), _records(stretch)


@pytest.mark.parametrize(("won", "lost", "word"), [(3, 2, "better"), (2, 2, "not-better"), (2, 3, "not-better")])
def test_the_400_ship_only_on_more_tasks(won, lost, word):
    v = yardstick(*_split(won, lost))
    assert v.word == word and v.passes == (word == "better")
    assert v.line.startswith(f"{word}: stretch ") and f"({won} won, {lost} lost" in v.line


def test_a_stretch_that_scored_fewer_tasks_is_partial_but_an_unanswerable_shipped_task_is_not():
    shipped, stretch = _split(3, 0)
    assert yardstick(shipped, stretch[:-1]).word == "partial"
    shipped[-1]["score"] = None  # no known answer: neither run scores it
    assert yardstick(shipped, stretch[:-1]).word == "better"


def test_runs_of_different_adapters_a_task_are_refused():
    shipped, _ = _split(3, 0)
    with pytest.raises(ShipError, match=r"\[1\] adapters a task, the stretch's \[2\]"):
        yardstick(shipped, _records([1.0] * len(shipped), adapters=2))


@pytest.mark.parametrize(("won", "lost", "word"), [(0, 2, "clear"), (8, 13, "clear"), (0, 3, "clear"),
                                                   (0, 4, "worse"), (13, 22, "worse"), (14, 22, "clear"),
                                                   (22, 10, "clear")])
def test_a_guard_holds_a_ship_only_on_a_loss_beyond_the_noise(won, lost, word):
    """The ninth stretch's checks (0 won and 2 lost on ARC-AGI-2, 8 and 13 without TTT) are clear; 4 losses and no
    win (all v9 scores on ARC-AGI-2), or 13 wins and 22 losses (p = 0.09), hold it; 14 and 22 (p = 0.12) do not, nor
    does a split that favours the stretch."""
    v = guard("no-ttt", *_split(won, lost))
    assert v.word == word and v.line.startswith(f"no-ttt {word}: ")


@pytest.mark.parametrize(("won", "lost", "p"), [(0, 4, 0.0625), (0, 0, 1.0), (13, 22, 0.0877), (4, 0, 1.0),
                                                (1, 1, 0.75)])
def test_losses_p_is_the_one_sided_binomial_tail(won, lost, p):
    assert losses_p(won, lost) == pytest.approx(p, rel=1e-3)


def test_a_guard_that_paired_fewer_tasks_or_none_is_partial_and_holds_the_ship():
    shipped, stretch = _split(0, 0)
    assert guard("arc2", shipped, stretch[:-1]).word == "partial"
    assert guard("arc2", [], []).word == "partial"  # a reference with nothing scored passes nothing
    assert decide([yardstick(*_split(3, 0)), guard("arc2", shipped, stretch[:-1])]) == "hold (arc2)"


def test_the_decision_names_what_held_it():
    better, worse = yardstick(*_split(3, 0)), guard("arc2", *_split(0, 6))
    assert decide([better, guard("arc2", *_split(0, 1))]) == "ship"
    assert decide([better, worse]) == "hold (arc2)"
    assert decide([yardstick(*_split(0, 0)), worse]) == "hold (400, arc2)"
    shipped, stretch = _split(3, 0)
    assert decide([yardstick(shipped, stretch[:-1])]) == "hold (400)"  # partial never ships


def _run(folder, records):
    folder.mkdir(parents=True)
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(folder)


def test_the_command_prints_each_verdict_then_the_decision(tmp_path):
    both = {"yardstick": _split(3, 1), "arc2": _split(1, 7)}
    runs = [_run(tmp_path / f"{name}{i}", records) for name, pair in both.items() for i, records in enumerate(pair)]
    res = CliRunner().invoke(app, ["ship", runs[0], runs[1], "--guard", f"arc2:{runs[2]}:{runs[3]}"])
    assert res.exit_code == 0, res.output
    out = res.output.splitlines()
    assert out[0].startswith("better: stretch 23 against shipped 21")
    assert out[1].startswith("arc2 worse: ") and out[-1] == "hold (arc2)"
    alone = CliRunner().invoke(app, ["ship", runs[0], runs[1]])
    assert alone.exit_code == 0 and alone.output.count("\n") == 1  # no guard: no decision


@pytest.mark.parametrize("bad", ["nowhere", "guard"])
def test_a_missing_run_or_a_malformed_guard_is_one_line(tmp_path, bad):
    shipped = _run(tmp_path / "shipped", _split(1, 0)[0])
    args = ["ship", shipped, str(tmp_path / "nowhere")] if bad == "nowhere" else \
        ["ship", shipped, shipped, "--guard", f"arc2:{shipped}"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2 and res.output.count("\n") == 1
    assert ("nowhere/results.jsonl" if bad == "nowhere" else "not NAME:SHIPPED:STRETCH") in res.output
