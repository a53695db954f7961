"""Paired comparison of two runs: the sign test, which tasks count, the CLI and its picture."""

import json

import pytest
from typer.testing import CliRunner

from testtime.cli import app
from testtime.report.compare import pair, sign_test


@pytest.mark.parametrize(("won", "lost", "p"), [(18, 0, 7.62939453125e-06), (12, 5, 0.1435), (10, 4, 0.1796),
                                                 (4, 4, 1.0), (0, 0, 1.0), (1, 0, 1.0)])
def test_sign_test_matches_the_exact_binomial(won, lost, p):
    assert sign_test(won, lost) == pytest.approx(p, rel=1e-3)
    assert sign_test(lost, won) == sign_test(won, lost)


def test_pairs_only_tasks_both_runs_scored():
    a = [{"task_id": "t1", "score": 0.0}, {"task_id": "t2", "score": 1.0}, {"task_id": "t3", "score": None},
         {"task_id": "t4", "score": 0.5}, {"task_id": "t5", "score": 0.0}]
    b = [{"task_id": "t2", "score": 0.0}, {"task_id": "t1", "score": 1.0}, {"task_id": "t3", "score": 1.0},
         {"task_id": "t4", "score": 1.0}]
    cmp = pair(a, b)
    assert [p.task_id for p in cmp.pairs] == ["t1", "t2", "t4"]  # t3 has no answer in A, t5 is not in B
    assert cmp.totals == (1.5, 2.0) and (cmp.b_won, cmp.b_lost) == (2, 1)
    assert [p.task_id for p in cmp.changed] == ["t1", "t2", "t4"]


def _run(folder, scores):
    folder.mkdir()
    (folder / "results.jsonl").write_text("".join(json.dumps({"task_id": k, "score": v}) + "\n" for k, v in scores.items()))
    return folder


def test_compare_cli_prints_the_verdict_and_draws_it(tmp_path):
    a = _run(tmp_path / "icl", {f"t{i}": 0.0 for i in range(8)})
    b = _run(tmp_path / "ttt", {**{f"t{i}": 1.0 for i in range(6)}, "t6": 0.0, "t7": 0.0})
    res = CliRunner().invoke(app, ["compare", str(a), str(b), "--png", str(tmp_path / "c.png")])
    assert res.exit_code == 0, res.output
    assert "ttt against icl: 6 tasks won, 0 lost, 2 tied; sign test p = 0.0312" in res.output
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    missing = CliRunner().invoke(app, ["compare", str(a), str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "nope/results.jsonl: no such file" in missing.output
    disjoint = _run(tmp_path / "other", {"x": 1.0})
    none = CliRunner().invoke(app, ["compare", str(a), str(disjoint)])
    assert none.exit_code == 2 and "no task scored in both runs" in none.output


def test_one_run_compares_its_selections(tmp_path):
    """The records of one run carry what each selection scores: vote against product of experts, paired by task."""
    run = tmp_path / "run"
    run.mkdir()
    recs = [{"task_id": f"t{i}", "score": p, "selections": {"poe": p, "vote": v, "greedy": 0.0}}
            for i, (p, v) in enumerate([(1.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0), (0.0, None)])]
    (run / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    res = CliRunner().invoke(app, ["compare", str(run), str(run), "--selection-a", "vote", "--selection-b", "poe"])
    assert res.exit_code == 0, res.output
    assert "run (poe) against run (vote): 2 tasks won, 1 lost, 1 tied" in res.output  # t4 has no vote score


def test_compare_names_the_settings_that_differ(tmp_path):
    """What a paired comparison judges is whatever differs between the runs: the CLI names it, from each run's
    config.json and (adapters a task, which a config's None leaves to the plan) the records."""
    from dataclasses import asdict

    from testtime.api import build_config
    from testtime.report.compare import settings_differ

    def write(run, **settings):
        (run / "config.json").write_text(json.dumps(asdict(build_config(settings=settings))))

    a = _run(tmp_path / "one", {"t0": 1.0, "t1": 0.0})
    b = tmp_path / "two"
    b.mkdir()
    (b / "results.jsonl").write_text("".join(json.dumps({"task_id": f"t{i}", "score": 1.0, "adapters": 2}) + "\n"
                                             for i in range(2)))
    assert settings_differ(a, b) == ["adapters a task: 1 -> 2"]  # no configs: the records alone
    write(a)
    assert settings_differ(a, b) == ["config.json: none in B (settings not compared)", "adapters a task: 1 -> 2"]
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "results.jsonl").write_text("")
    assert settings_differ(a, empty) == ["config.json: none in B (settings not compared)"]  # no count to tell
    write(b, epochs=12, model="m")
    assert settings_differ(a, b) == ["model: None -> m", "ttt_cfg.epochs: None -> 12", "adapters a task: 1 -> 2"]
    res = CliRunner().invoke(app, ["compare", str(a), str(b)])
    assert res.exit_code == 0, res.output
    assert "settings that differ (A -> B): model: None -> m; ttt_cfg.epochs: None -> 12; adapters a task: 1 -> 2" \
        in " ".join(res.output.split())
    assert settings_differ(a, a) == []
    (b / "config.json").write_text("[1]")  # unreadable: named, and the records still compare
    bad = settings_differ(a, b)
    assert len(bad) == 2 and "config.json: a run's config must be an object" in bad[0]
    assert CliRunner().invoke(app, ["compare", str(a), str(b)]).exit_code == 0
