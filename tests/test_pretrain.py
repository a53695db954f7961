"""Pretraining recipe: exact resume, data hygiene, learning, config checks (tiny model, CPU)."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import _tiny_pretrain_config
from testtime.core.config import ConfigError
from testtime.data.pretrain_data import BatchStream, SequenceSampler
from testtime.data.sources import load_sources
from testtime.data.tasks import load_tasks
from testtime.model.loading import ModelConfig, load_model
from testtime.model.training import decay_start
from testtime.recipes.pretrain import PretrainConfig, pretrain, read_log


@pytest.fixture(scope="module")
def sources():
    return load_sources(["arc1/train"])


tiny_config = _tiny_pretrain_config


def test_resume_is_bit_exact(tmp_path, sources):
    cfg = tiny_config()
    straight = pretrain(cfg, tmp_path / "a", progress=False, sources=sources)
    assert straight.finished and straight.step == 6

    half = pretrain(cfg, tmp_path / "b", stop_at=3, progress=False, sources=sources)
    assert half.step == 3 and not half.finished and half.model_dir is None
    # Scramble every global RNG, as a fresh process would have them, before continuing.
    torch.manual_seed(12345)
    np.random.seed(12345)
    random.seed(12345)
    rest = pretrain(cfg, tmp_path / "b", progress=False, sources=sources)
    assert rest.step == 6 and rest.finished

    losses_a = [r["loss"] for r in read_log(tmp_path / "a")]
    losses_b = [r["loss"] for r in read_log(tmp_path / "b")]
    assert [r["step"] for r in read_log(tmp_path / "b")] == [1, 2, 3, 4, 5, 6]
    assert losses_a == losses_b
    wa = torch.load(tmp_path / "a" / "checkpoint" / "trainer.pt", weights_only=True)["model"]
    wb = torch.load(tmp_path / "b" / "checkpoint" / "trainer.pt", weights_only=True)["model"]
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    # The export loads as a normal model folder, in fp32 on CPU.
    loaded = load_model(straight.model_dir)
    assert next(loaded.model.parameters()).dtype == torch.float32
    assert (tmp_path / "a" / "loss.png").stat().st_size > 0


def test_sampler_never_draws_evaluation_tasks(sources):
    eval_ids = {t.id for t in load_tasks("arc1/eval")}
    sampler = SequenceSampler(sources, max_len=8192, seed=0)
    assert not set(sampler.task_ids()) & eval_ids
    assert len(set(sampler.task_ids())) == 400
    drawn = {sampler.next()[1] for _ in range(600)}
    assert drawn and not drawn & eval_ids


@pytest.mark.parametrize("name", ["arc2/train", "arc1/eval", "arc2/eval"])
def test_evaluation_data_is_refused(name):
    with pytest.raises(ConfigError, match=name):
        PretrainConfig(datasets=("arc1/train", name))
    with pytest.raises(ConfigError, match=name):
        load_sources([name])


def test_sequences_follow_the_recipe(sources):
    sampler = SequenceSampler(sources, max_len=2048, seed=1)
    for _ in range(50):
        enc, _ = sampler.next()
        assert len(enc) <= 2048
        assert enc.loss_mask[enc.prompt_len :].all()  # the query answer is a target
        assert enc.loss_mask[: enc.prompt_len].any() == (len(enc.demos_used) > 1)  # demo outputs from the 2nd on


def test_batch_stream_respects_budget_and_resumes(sources):
    stream = BatchStream(SequenceSampler(sources, 2048, seed=0), token_budget=8192, pool_size=40, pad_multiple=64)
    for _ in range(7):
        b = stream.next()
        assert b.n_padded <= 8192 and b.input_ids.shape[1] % 64 == 0
        assert (b.labels[:, -1] == -100).all()
    state = json.loads(json.dumps(stream.state_dict()))  # survives JSON, as in the checkpoint
    expect = [stream.next().input_ids for _ in range(6)]
    other = BatchStream(SequenceSampler(sources, 2048, seed=99), token_budget=8192, pool_size=40, pad_multiple=64)
    other.load_state_dict(state)
    for e in expect:
        assert torch.equal(other.next().input_ids, e)


def test_loss_decreases(tmp_path, sources):
    cfg = tiny_config(total_steps=30, log_every=5, lr=5e-3, warmup_steps=3)
    pretrain(cfg, tmp_path, progress=False, sources=sources)
    losses = [r["loss"] for r in read_log(tmp_path)]
    assert losses[-1] < losses[0] - 0.5


def test_config_rejects_unknown_keys_and_wrong_types(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'learning_rate'"):
        PretrainConfig.from_dict({"learning_rate": 1e-3})
    with pytest.raises(ConfigError, match="model: unknown key 'layers'"):
        PretrainConfig.from_dict({"model": {"layers": 3}})
    with pytest.raises(ConfigError, match="total_steps must be an integer"):
        PretrainConfig.from_dict({"total_steps": "10"})
    with pytest.raises(ConfigError, match="betas must be a list of 2 numbers"):
        PretrainConfig.from_dict({"betas": [0.9]})
    path = tmp_path / "c.json"
    path.write_text('{"lr": 2e-3, "max_minutes": null, "model": {"hidden_size": 64, "num_heads": 2}}')
    cfg = PretrainConfig.from_json(path)
    assert cfg.lr == 2e-3 and cfg.model.hidden_size == 64 and cfg.max_minutes is None
    with pytest.raises(ConfigError, match="no such config file"):
        PretrainConfig.from_json(tmp_path / "missing.json")


def test_shipped_config_loads():
    from testtime.model.loading import REPO_ROOT

    cfg = PretrainConfig.from_json(REPO_ROOT / "configs" / "pretrain-base.json")
    assert cfg.datasets == ("arc1/train",)
    grid = PretrainConfig.from_json(REPO_ROOT / "configs" / "pretrain-grid.json")
    assert grid.model == ModelConfig()  # the shipped model's recipe
    assert grid.datasets[1].startswith("re-arc:") and "arc2/train-clean" in grid.datasets
    ft = PretrainConfig.from_json(REPO_ROOT / "configs" / "finetune-gemma3-arc.json")
    assert ft.init_from and ft.datasets == ("arc1/train",) and not ft.train_embeddings


def test_held_out_tasks_are_never_trained_on_and_the_best_model_is_exported(tmp_path, sources, monkeypatch):
    import testtime.recipes.pretrain as pretrain_mod
    from testtime.data.sources import split_holdout
    from testtime.model.loading import load_model

    kept, held = split_holdout(sources, 5)
    assert len(held) == 5 and not {t.id for t in held} & set(kept[0].task_ids())
    assert split_holdout(sources, 5)[1] == held  # the same split every time
    # Exported in float32, so that best/ can be held to the very weights of its step. The run stops at each validation
    # step (its weights are kept from the checkpoint) and resumes; the last stretch, to step 6, validates worse (a
    # wrapped validation adds 10), so the best must stay what the run had reached before that resume.
    cfg = tiny_config(holdout=5, val_every=2, total_steps=4, export_dtype="float32")
    run = tmp_path / "run"
    weights, results = {}, {}
    real_validate = pretrain_mod.validate
    for total, stop in ((4, 2), (4, None), (6, None)):
        if total == 6:
            monkeypatch.setattr(pretrain_mod, "validate", lambda *a, **k: real_validate(*a, **k) + 10.0)
        res = pretrain(dataclasses.replace(cfg, total_steps=total), run, stop_at=stop, sources=sources, progress=False)
        weights[res.step] = torch.load(run / "checkpoint" / "trainer.pt", weights_only=True)["model"]
        results[res.step] = res
    vals = {r["step"]: r["val_loss"] for r in read_log(run) if "val_loss" in r}
    assert list(vals) == [2, 4, 6] and all(np.isfinite(v) for v in vals.values())
    assert vals[4] != vals[2] and vals[6] > max(vals[2], vals[4])
    best_step = min(vals, key=vals.get)
    # Each stretch's best is the lowest loss logged so far, across its resumes; best/ holds that step's weights.
    for step in (2, 4, 6):
        assert results[step].best_val == min(v for s, v in vals.items() if s <= step), step
    best = load_model(run / "best", device="cpu").model.state_dict()
    assert best_step in (2, 4) and best.keys() <= weights[best_step].keys()
    for k, w in best.items():
        assert torch.equal(w, weights[best_step][k]), k


def test_the_last_step_is_validated_whatever_val_every(sources, tmp_path):
    """Runs of equal minutes stop at steps val_every need not divide; each must still log its final model's
    held-out loss (the first arch comparison had wide's last at step 250 of 391)."""
    run = tmp_path / "run"
    pretrain(tiny_config(holdout=3, val_every=4, total_steps=6), run, sources=sources, progress=False)
    assert [r["step"] for r in read_log(run) if r.get("val_loss") is not None] == [4, 6]


def test_holdout_config_is_checked():
    with pytest.raises(ConfigError, match="val_every"):
        tiny_config(holdout=2, val_every=3, log_every=2)
    with pytest.raises(ConfigError, match="arc1/eval cannot be a pretraining source"):
        tiny_config(probe_datasets=("arc1/eval",))


def test_a_grid_model_pretrains_on_rearc_resumes_exactly_and_warm_restarts(tmp_path, write_rearc):
    """A tiny grid-aware model on a tiny RE-ARC-format file: a stopped and resumed run ends where a straight one
    does; then a new run starts from its export (`init_from`), as a later GPU session continues the shipped model."""
    from testtime.data.sources import ReArcSource

    rearc = write_rearc(tmp_path / "re_arc.npz.xz", [f"task{i}" for i in range(5)], pairs_per_task=12)
    grid_model = dataclasses.replace(ModelConfig.tiny(), grid_positions=True, rope_theta=100.0)
    cfg = tiny_config(model=grid_model, datasets=(f"re-arc:{rearc}",))
    straight = pretrain(cfg, tmp_path / "a", progress=False)
    pretrain(cfg, tmp_path / "b", stop_at=3, progress=False)
    pretrain(cfg, tmp_path / "b", progress=False)
    assert [r["loss"] for r in read_log(tmp_path / "a")] == [r["loss"] for r in read_log(tmp_path / "b")]
    loaded = load_model(straight.model_dir)
    assert loaded.model.config.model_type == "testtime_grid"

    warm = tiny_config(init_from=str(straight.model_dir), total_steps=4, datasets=(f"re-arc:{rearc}",))
    res = pretrain(warm, tmp_path / "c", progress=False, sources=[ReArcSource.from_path(rearc)])
    first = read_log(tmp_path / "c")[0]["loss"]
    assert res.finished and first < read_log(tmp_path / "a")[0]["loss"]  # it starts from the trained weights
    assert load_model(res.model_dir).model.config.model_type == "testtime_grid"


class FakeClock:
    """`time` for the pretraining module, whose clock advances only when a training step computes its loss: each
    step takes exactly `step_s` seconds, whatever the machine."""

    def __init__(self, step_s: float) -> None:
        self.now, self.step_s = 1000.0, step_s

    def monotonic(self) -> float:
        return self.now

    def __getattr__(self, name: str):
        import time

        return getattr(time, name)


def test_fit_minutes_lays_the_schedule_over_the_steps_that_fit_and_keeps_it_on_resume(tmp_path, sources, monkeypatch):
    """The cosine ends where the time does: steps are timed over the second half of warmup, the schedule's length is
    what fits in the rest (under the total_steps cap), the last step runs at the floor rate, and a resumed run keeps
    the fitted length instead of measuring again. A fake clock makes every step take 1 s."""
    import testtime.recipes.pretrain as pretrain_mod

    clock = FakeClock(step_s=1.0)
    real_loss = pretrain_mod.loss_sum

    def timed_loss(model, ids, labels):
        clock.now += clock.step_s
        return real_loss(model, ids, labels)

    monkeypatch.setattr(pretrain_mod, "time", clock)
    monkeypatch.setattr(pretrain_mod, "loss_sum", timed_loss)
    monkeypatch.setattr(pretrain_mod, "FIT_RESERVE_S", 0.0)
    # No probes: their validation would run the timed loss too, and move the fake clock.
    cfg = tiny_config(warmup_steps=4, total_steps=100_000, fit_minutes=0.5, min_lr_ratio=0.1, probe_samples=0)
    # Timed from step 2 to step 4: 1 s a step; 30 s - 4 s spent leave 26 s, of which the fit takes 97%: 25 steps.
    fitted = 4 + int(0.97 * 26 / 1.0)
    first = pretrain(cfg, tmp_path / "a", stop_at=8, progress=False, sources=sources)
    assert first.step == 8 and not first.finished
    assert first.total_steps == fitted == 29
    state = json.loads((tmp_path / "a" / "checkpoint" / "state.json").read_text())
    assert state["fitted_steps"] == fitted
    clock.step_s = 5.0  # a slower machine on resume: the schedule fitted before the stop stays
    rest = pretrain(cfg, tmp_path / "a", progress=False, sources=sources)
    assert rest.finished and rest.step == rest.total_steps == fitted
    log = read_log(tmp_path / "a")
    assert log[-1]["step"] == fitted and log[-1]["lr"] == pytest.approx(cfg.lr * cfg.min_lr_ratio, rel=1e-6)
    assert log[-1]["elapsed"] == pytest.approx(8 * 1.0 + (fitted - 8) * 5.0)  # the fake clock's seconds

    clock.step_s = 1.0  # 29 steps would fit again: the total_steps cap holds the schedule to 10
    capped = pretrain(dataclasses.replace(cfg, total_steps=10), tmp_path / "b", progress=False, sources=sources)
    assert capped.finished and capped.step == capped.total_steps == 10
    with pytest.raises(ConfigError, match="fit_minutes"):
        tiny_config(fit_minutes=float("nan"))


def test_wsd_holds_the_rate_then_decays_and_exports_the_weights_at_the_decays_start(tmp_path, sources):
    """schedule "wsd": warmup, the peak rate until the last decay_frac of the steps, then 1 - sqrt down to the floor
    at the last step; stable/ holds the weights as they were when the decay began, the very weights a run stopped
    there exports (the next stretch of a campaign continues from them)."""
    from safetensors.torch import load_file

    cfg = tiny_config(schedule="wsd", total_steps=10, warmup_steps=2, decay_frac=0.3, min_lr_ratio=0.1,
                      probe_samples=0, export_dtype="float32")
    run = pretrain(cfg, tmp_path / "wsd", progress=False, sources=sources)
    assert run.finished and run.step == 10
    lrs = {r["step"]: r["lr"] for r in read_log(tmp_path / "wsd")}  # the rate of the step after each
    assert lrs[1] == pytest.approx(cfg.lr)  # warmup's second step
    assert all(lrs[k] == pytest.approx(cfg.lr) for k in range(2, 7))  # stable until the decay's start, step 7
    # the decay's three steps (7, 8, 9) at 1 - sqrt(1/3), 1 - sqrt(2/3) and 0 of the way from the floor to the peak
    for k, left in ((7, 1 - (1 / 3) ** 0.5), (8, 1 - (2 / 3) ** 0.5), (9, 0.0), (10, 0.0)):
        assert lrs[k] == pytest.approx(cfg.lr * (0.1 + 0.9 * left)), k
    stopped = pretrain(cfg, tmp_path / "stop", stop_at=7, export=True, progress=False, sources=sources)
    assert stopped.step == 7
    stable, at_7 = (load_file(next((d).glob("*.safetensors"))) for d in (tmp_path / "wsd/stable", stopped.model_dir))
    final = load_file(next(run.model_dir.glob("*.safetensors")))
    assert stable.keys() == at_7.keys() and all(torch.equal(stable[k], at_7[k]) for k in stable)
    assert any(not torch.equal(stable[k], final[k]) for k in stable)
    cosine = dataclasses.replace(cfg, schedule="cosine")
    with pytest.raises(ConfigError, match="trained with schedule wsd, not cosine"):  # its rate would jump
        pretrain(cosine, tmp_path / "stop", progress=False, sources=sources)
    # a fresh start in the folder: the last run's stable/ would pass for this one's
    assert pretrain(cosine, tmp_path / "wsd", resume=False, stop_at=7, progress=False, sources=sources).step == 7
    assert not (tmp_path / "wsd/stable").exists()
    assert decay_start(10, 0.3) == 7 and decay_start(10, 0.3, align=4) == 4  # exported at a log step
    with pytest.raises(ConfigError, match="schedule"):
        tiny_config(schedule="linear")
    for frac in (0.0, 1.0):  # no decay, or no stable step before it
        with pytest.raises(ConfigError, match="decay_frac"):
            tiny_config(decay_frac=frac)


def test_wsd_keeps_no_stable_weights_of_a_diverged_step(tmp_path, sources, monkeypatch):
    """The stable weights are exported only after the loss since the last log step was checked: a NaN at the decay's
    start stops the run with no stable/."""
    import testtime.recipes.pretrain as pretrain_mod
    from testtime.model.training import TrainingDiverged

    real, calls = pretrain_mod.loss_sum, []

    def nan_at_step_7(model, ids, labels):
        calls.append(1)
        return real(model, ids, labels) * (float("nan") if len(calls) == 7 else 1.0)

    monkeypatch.setattr(pretrain_mod, "loss_sum", nan_at_step_7)
    cfg = tiny_config(schedule="wsd", total_steps=10, decay_frac=0.3, probe_samples=0)
    with pytest.raises(TrainingDiverged, match="at step 7"):
        pretrain(cfg, tmp_path, progress=False, sources=sources)
    assert not (tmp_path / "stable").exists()


def test_a_diverging_run_stops_and_writes_no_model(tmp_path, sources, monkeypatch):
    """A NaN loss (here forced from step 3) stops pretraining with one line; no model, no checkpoint of it."""
    import testtime.recipes.pretrain as pretrain_mod
    from testtime.model.training import TrainingDiverged

    real, calls = pretrain_mod.loss_sum, []

    def nan_from_step_3(model, ids, labels):
        calls.append(1)
        loss = real(model, ids, labels)
        return loss * float("nan") if len(calls) >= 3 else loss

    monkeypatch.setattr(pretrain_mod, "loss_sum", nan_from_step_3)
    with pytest.raises(TrainingDiverged, match=r"^pretraining diverged at step 3 \(loss nan\)") as e:
        pretrain(tiny_config(), tmp_path, progress=False, sources=sources)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "model").exists() and not (tmp_path / "checkpoint").exists()
    assert [r["step"] for r in read_log(tmp_path)] == [1, 2]  # no log line of a NaN loss


def test_divergence_between_log_steps_is_never_checkpointed(tmp_path, sources, monkeypatch):
    import testtime.recipes.pretrain as pretrain_mod
    from testtime.model.training import TrainingDiverged

    real = pretrain_mod.loss_sum
    monkeypatch.setattr(pretrain_mod, "loss_sum", lambda m, i, lab: real(m, i, lab) * float("inf"))
    cfg = tiny_config(log_every=5, checkpoint_minutes=1e-9)  # a checkpoint is due after every step
    with pytest.raises(TrainingDiverged, match="pretraining diverged at step 1"):
        pretrain(cfg, tmp_path, progress=False, sources=sources)
    assert not (tmp_path / "checkpoint").exists() and not (tmp_path / "model").exists()


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[1] / "configs").glob("*.json")), ids=lambda p: p.name)
def test_every_shipped_config_reads_and_its_model_builds(path):
    """Each config in configs/ reads as its recipe's config with no unknown field or value out of range, and a
    pretraining config's model builds (on the meta device: shapes only), so a GPU session never starts on one that
    cannot."""
    from testtime.model.loading import build_model
    from testtime.recipes.grid import load_eval_config

    if path.name.startswith(("recipe-", "eval-")):
        load_eval_config(path)
        return
    cfg = PretrainConfig.from_json(path)
    if cfg.init_from is None:  # a fine-tune or a warm restart starts from a model folder, not from a ModelConfig
        names = ("a", "b") if cfg.model.task_embedding else ()  # pretraining names its tasks' rows
        with torch.device("meta"):
            model = build_model(cfg.model, names)
        assert sum(p.numel() for p in model.parameters()) > 0


def test_each_training_source_is_probed_apart_from_the_training_stream(tmp_path, flip_task, write_rearc):
    """`probe_loss` names each source and falls as the model fits it; a dataset probed but not trained on
    (`probe_datasets`: its pairs flip their inputs as the training tasks do) is logged beside them; drawing the
    probes leaves the training stream as it was (the same losses step for step with none)."""
    from testtime.data.sources import TaskSource

    srcs = [TaskSource([flip_task(i, f"a{i}", (3, 3)) for i in range(4)]),
            TaskSource([flip_task(i, f"b{i}", (2, 4)) for i in range(4, 8)])]
    unseen = write_rearc(tmp_path / "unseen.npz", ["u0", "u1"])
    cfg = tiny_config(datasets=("arc1/train", "re-arc:x.npz"), total_steps=8, val_every=4, max_len=512,
                      token_budget=2048, probe_samples=6, probe_datasets=(f"gen:{unseen}",))
    pretrain(cfg, tmp_path / "probed", sources=srcs, progress=False)
    log = read_log(tmp_path / "probed")
    probed = [r for r in log if "probe_loss" in r]
    names = {"arc1/train", "re-arc", "gen (not trained)"}
    assert [r["step"] for r in probed] == [4, 8] and all(set(r["probe_loss"]) == names for r in probed)
    assert all(probed[1]["probe_loss"][k] < probed[0]["probe_loss"][k] for k in names)
    pretrain(dataclasses.replace(cfg, probe_samples=0, probe_datasets=()), tmp_path / "plain", sources=srcs,
             progress=False)
    plain = read_log(tmp_path / "plain")
    assert not any("probe_loss" in r for r in plain)
    assert [r["loss"] for r in plain] == [r["loss"] for r in log]
    assert (tmp_path / "probed" / "loss.png").stat().st_size > 0



def test_source_probes_name_every_source_apart(flip_task):
    """Two sources of one kind ("re-arc:a", "re-arc:b") are two probes, each under its dataset's whole name, not one
    overwriting the other under "re-arc"; a kind given once keeps its short name."""
    from testtime.data.encode import GridCodec
    from testtime.data.pretrain_data import source_probes
    from testtime.data.sources import TaskSource

    srcs = [TaskSource([flip_task(i, f"{k}{i}", (3, 3)) for i in range(3)]) for k in "abc"]
    probes = source_probes(("re-arc:a.npz", "re-arc:b.npz", "arc1/train"), srcs, 4, 512, 64, GridCodec(), 0)
    assert set(probes) == {"re-arc:a.npz", "re-arc:b.npz", "arc1/train"} and all(probes.values())
    assert set(source_probes(("arc1/train", "gen:x.npz"), srcs[:2], 4, 512, 64, GridCodec(), 0)) == {"arc1/train", "gen"}
    assert set(source_probes(("arc1/train",), srcs[:2], 4, 512, 64, GridCodec(), 0)) == {"source0", "source1"}


def test_a_source_with_no_draw_under_max_len_has_no_probe(flip_task):
    """An empty probe set would log a loss of 0 (validate's mean over no targets), as if the source were memorized."""
    from testtime.data.encode import GridCodec
    from testtime.data.pretrain_data import source_probes
    from testtime.data.sources import TaskSource

    small = TaskSource([flip_task(i, f"a{i}", (3, 3)) for i in range(3)])
    big = TaskSource([flip_task(i, f"b{i}", (20, 20)) for i in range(3)])
    probes = source_probes(("arc1/train", "gen:x.npz"), [small, big], 4, 200, 64, GridCodec(), 0)
    assert set(probes) == {"arc1/train"} and probes["arc1/train"]
