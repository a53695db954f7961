"""Test-time training on the CPU with a tiny model: the data, the loss, and the two training paths."""

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from testtime.data.encode import END, GridCodec
from testtime.data.tasks import load_tasks
from testtime.model.lora import attach_multi_lora, find_target_modules
from testtime.model.training import pad_right, target_loss
from testtime.stages.ttt import TTTConfig, build_dataset, train_adapters, train_peft, wants_graphs


def test_dataset_uses_only_demonstrations(flip_task):
    task = flip_task()
    data = build_dataset(task, GridCodec(), TTTConfig(samples=24))
    assert len(data) == 24
    test_out = GridCodec.grid_ids(task.test[0].output)
    test_in = GridCodec.grid_ids(task.test[0].input)
    for enc in data:
        ids = enc.input_ids
        # Neither the test input nor its output appears in any training sequence.
        for needle in (test_in, test_out):
            windows = np.lib.stride_tricks.sliding_window_view(ids, len(needle))
            assert not (windows == needle).all(1).any()
        # Loss sits on the answer, which ends with the end token.
        assert enc.loss_mask[-1] and ids[-1] == END
    assert len({e.input_ids.tobytes() for e in data}) == 24  # deduplicated


def test_dataset_switches(flip_task):
    task = flip_task()
    codec = GridCodec()
    plain = build_dataset(task, codec, TTTConfig(samples=6, leave_one_out=False, augment=False))
    assert all(e.demos_used == () for e in plain)
    assert len({e.input_ids.tobytes() for e in plain}) == 3  # only the 3 demos, repeated
    no_demo_loss = build_dataset(task, codec, TTTConfig(samples=6, loss_on_demos=False))
    for e in no_demo_loss:
        assert e.loss_mask.sum() == len(e) - e.prompt_len


def test_ttt_lowers_loss_on_demonstrations(tiny_llama, flip_task):
    model = tiny_llama()
    codec = GridCodec()
    task = flip_task()
    cfg = TTTConfig(samples=8, epochs=15, batch_size=4, lr=2e-2)
    data = build_dataset(task, codec, cfg)
    lora = attach_multi_lora(model, 1, rank=8, alpha=16)

    def loss() -> float:
        ids, mask = pad_right(data, codec.pad_id, "cpu")
        lora.use(torch.zeros(len(data), dtype=torch.long))
        with torch.no_grad():
            return float(target_loss(model, ids, mask, [slice(0, len(data))])[0])

    before = loss()
    result = train_adapters(model, lora.parameters(), [data], cfg, pad_id=codec.pad_id, select=lora.use)
    after = loss()
    assert after < 0.8 * before
    assert result.losses[0][-1] < result.losses[0][0]


def test_target_modules_found_from_architecture(tiny_llama):
    assert find_target_modules(tiny_llama()) == ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]


def test_batched_adapters_equal_one_task_at_a_time_with_peft(tiny_llama, flip_task):
    codec = GridCodec()
    tasks = [flip_task(s, f"t{s}") for s in range(3)]
    cfg = TTTConfig(samples=4, epochs=2, batch_size=2, lr=1e-2, rank=4, alpha=8, grad_clip=0.05)
    data = [build_dataset(t, codec, cfg) for t in tasks]

    model = tiny_llama()
    lora = attach_multi_lora(model, len(tasks), rank=cfg.rank, alpha=cfg.alpha, seed=7)
    init = [lora.state(k) for k in range(len(tasks))]
    batched = train_adapters(model, lora.parameters(), data, cfg, pad_id=codec.pad_id, select=lora.use,
                             task_ids=[t.id for t in tasks])
    for k, task in enumerate(tasks):
        peft_model, alone = train_peft(tiny_llama(), data[k], cfg, pad_id=codec.pad_id, task_id=task.id, init=init[k])
        np.testing.assert_allclose(batched.losses[k], alone.losses[0], rtol=1e-4, atol=1e-5)
        want = lora.state(k)
        got = {n: p for n, p in peft_model.named_parameters() if "lora_" in n}
        assert len(got) == len(want)
        for name, value in want.items():
            module, _, kind = name.rpartition(".lora_")
            peft_name = f"base_model.model.{module}.lora_{kind.split('.')[0]}.default.weight"
            # Adam divides by tiny second moments, so float sums in another order move a weight by ~1e-5.
            torch.testing.assert_close(got[peft_name].detach(), value, rtol=1e-3, atol=1e-4)
        # Training changed the adapter: the comparison is not between two untouched inits.
        moved = max(float((want[n] - init[k][n]).abs().max()) for n in want)
        assert moved > 1e-2


def test_detach_restores_the_base_model(tiny_llama, noisy_lora):
    model = tiny_llama()
    ids = torch.randint(0, 10, (2, 20))
    with torch.no_grad():
        before = model(input_ids=ids).logits
    ref = copy.deepcopy(model)
    lora = noisy_lora(model, 2)  # non-zero adapters (a fresh one is a no-op, and its detach would prove nothing)
    lora.use(torch.tensor([0, 1]))
    with torch.no_grad():
        adapted = model(input_ids=ids).logits
    assert (adapted - before).abs().amax() > 0.1  # the adapters moved the logits...
    lora.detach()
    assert type(model.model.layers[0].self_attn.q_proj) is type(ref.model.layers[0].self_attn.q_proj)
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, before)  # ...and detached, they are gone


@pytest.mark.parametrize("task_id", ["00576224"])
def test_dataset_on_a_real_task(task_id):
    task = next(t for t in load_tasks("arc1/eval") if t.id == task_id)
    data = build_dataset(task, GridCodec(), TTTConfig())
    assert len(data) == TTTConfig().samples


def test_batched_predictions_equal_one_task_at_a_time(tiny_llama, flip_task):
    from testtime.model.lora import Adapters
    from testtime.stages.engine import greedy_generate
    from testtime.stages.predict import PredictConfig, make_queries

    codec = GridCodec()
    tasks = [flip_task(s, f"t{s}") for s in range(3)]
    cfg = TTTConfig(samples=4, epochs=2, batch_size=2, lr=1e-2, rank=4, alpha=8)
    data = [build_dataset(t, codec, cfg) for t in tasks]
    model = tiny_llama()
    lora = attach_multi_lora(model, len(tasks), rank=cfg.rank, alpha=cfg.alpha, seed=3)
    train_adapters(model, lora.parameters(), data, cfg, pad_id=codec.pad_id, select=lora.use,
                   task_ids=[t.id for t in tasks])
    queries, _ = make_queries(tasks, codec, PredictConfig(views=2))
    together = greedy_generate(model, [q.prompt for q in queries], [q.max_new for q in queries], codec,
                               adapters=Adapters(lora, tuple(q.task for q in queries)))
    for k in range(len(tasks)):
        alone_model = tiny_llama()
        alone = attach_multi_lora(alone_model, 1, rank=cfg.rank, alpha=cfg.alpha)
        with torch.no_grad():
            for name, layer in alone.layers.items():
                layer.lora_A[0].copy_(lora.layers[name].lora_A[k])
                layer.lora_B[0].copy_(lora.layers[name].lora_B[k])
        mine = [i for i, q in enumerate(queries) if q.task == k]
        got = greedy_generate(alone_model, [queries[i].prompt for i in mine], [queries[i].max_new for i in mine],
                              codec, adapters=Adapters(alone, (0,) * len(mine)))
        assert [g.tokens for g in got] == [together[i].tokens for i in mine]
    # The adapters matter: without them the answers differ somewhere.
    bare = greedy_generate(model, [q.prompt for q in queries], [q.max_new for q in queries], codec)
    assert [g.tokens for g in bare] != [g.tokens for g in together]


def test_adapter_fast_paths_equal_the_per_row_gather(tiny_llama):
    model = tiny_llama()
    lora = attach_multi_lora(model, 3, rank=2, alpha=4)
    with torch.no_grad():
        for p in lora.parameters():
            p.normal_(0, 0.3)  # a non-trivial adapter in every slot
    ids = torch.randint(0, 10, (4, 12))
    lora.use(torch.full((4,), 1))
    assert lora.ctx.single == 1
    fast = model(input_ids=ids).logits
    lora.ctx.single = None  # force the general path on the same rows
    slow = model(input_ids=ids).logits
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)
    lora.use(torch.tensor([2, 0, 1, 0]))  # mixed rows: the CPU's per-adapter loop equals the per-row gather
    assert lora.ctx.single is None and lora.ctx.segments == [(0, 0, 2), (1, 2, 3), (2, 3, 4)]
    looped = model(input_ids=ids).logits
    lora.ctx.segments = None
    gathered = model(input_ids=ids).logits
    torch.testing.assert_close(looped, gathered, rtol=1e-5, atol=1e-5)
    # Rows sorted already (TTT's lockstep batches): no gathers, the same outputs and gradients.
    lora.use(torch.tensor([0, 0, 1, 2]))
    assert lora.ctx.segments == [(0, 0, 2), (1, 2, 3), (2, 3, 4)] and lora.ctx.order is None
    ordered = model(input_ids=ids).logits
    ordered.square().sum().backward()
    grads = [p.grad.clone() for p in lora.parameters()]
    for p in lora.parameters():
        p.grad = None
    lora.ctx.segments = None
    gathered = model(input_ids=ids).logits
    gathered.square().sum().backward()
    torch.testing.assert_close(ordered, gathered, rtol=1e-5, atol=1e-5)
    for a, p in zip(grads, lora.parameters(), strict=True):
        torch.testing.assert_close(a, p.grad, rtol=1e-4, atol=1e-5)
    lora.use(None)
    assert lora.ctx.single is None and not torch.equal(model(input_ids=ids).logits, fast)


def test_diverged_test_time_training_stops_with_one_line(tmp_path, tiny, small_cfg, synthetic_tasks, monkeypatch):
    """A NaN TTT loss: evaluate stops with one line and records nothing of that group; solve says the same."""
    import testtime.stages.ttt as ttt_mod
    from testtime.data.tasks import save_task
    from testtime.model.loading import save_model
    from testtime.model.training import TrainingDiverged
    from testtime.recipes.grid import evaluate

    real = ttt_mod.target_loss
    monkeypatch.setattr(ttt_mod, "target_loss", lambda *a: real(*a) * float("nan"))
    model, codec = tiny
    with pytest.raises(TrainingDiverged, match=r"^test-time training of task t0 diverged at step 1 \(loss nan\)"):
        evaluate(small_cfg(policy="always"), tmp_path / "run", model=model, codec=codec, tasks=synthetic_tasks(2),
                 show_progress=False)
    assert not (tmp_path / "run" / "results.jsonl").exists()
    from typer.testing import CliRunner

    from testtime.cli import app

    folder = save_model(model, None, tmp_path / "model")
    task = save_task(synthetic_tasks(1)[0], tmp_path / "t.json")
    res = CliRunner().invoke(app, ["solve", str(task), "--model", str(folder), "--device", "cpu", "--samples", "2",
                                   "--epochs", "1", "--views", "1"])
    # After the progress bars of the training that diverged, one error line.
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert res.stderr.splitlines()[-1].startswith("error: test-time training of task t diverged at step 1 (loss nan)")


@pytest.mark.parametrize(("setting", "adapters", "device", "want"), [
    (None, 1, "cuda", True),    # a lone task's one adapter on a GPU, whose steps the host's launches bound
    (None, 2, "cuda", True),    # the default: a lone task's two adapters, as many launches a step
    (None, 3, "cuda", False),   # a batch of tasks is bound by the device, and the padding would cost
    (None, 1, "cpu", False),    # no graphs off a GPU
    (True, 3, "cuda", True), (False, 1, "cuda", False), (True, 1, "cpu", False)])
def test_graphs_by_default_where_a_run_trains_one_tasks_adapters(setting, adapters, device, want):
    assert wants_graphs(TTTConfig(cuda_graphs=setting), adapters, torch.device(device)) is want


def test_graphs_by_default_only_for_the_case_measured(monkeypatch):
    """By default a lone task's steps replay only with our own LoRA adapter; peft's, full-weight training and the
    shared ablation's one adapter over a batch of tasks (device-bound) run eagerly unless asked."""
    import testtime.stages.ttt as ttt

    cuda = torch.device("cuda")
    assert not wants_graphs(TTTConfig(), 1, cuda, stacked=False)  # peft's
    assert not wants_graphs(TTTConfig(adapter="full"), 1, cuda)
    assert wants_graphs(TTTConfig(adapter="full", cuda_graphs=True), 1, cuda)
    seen = []
    monkeypatch.setattr(ttt, "train_adapters", lambda model, params, datasets, cfg, **kw: seen.append(cfg) or
                        ttt.TrainResult(losses=[[0.0]], tokens=0))
    for n in (1, 3):
        ttt.train_group(None, SimpleNamespace(parameters=lambda: [], use=None), [[]] * n, TTTConfig(shared=True),
                        pad_id=0, task_ids=[f"t{i}" for i in range(n)])
    assert [c.cuda_graphs for c in seen] == [None, False]  # one task: the default's rule; a batch: eager


@pytest.mark.parametrize("samples", [4, 5])  # 5 with batches of 2: each epoch ends on a short batch
def test_fixed_shape_steps_train_as_the_dynamic_ones(tiny_llama, tiny_grid_model, flip_task, samples):
    """The steps a CUDA graph captures (`ttt_graph`: every batch padded to the widest sequence and to batch_size rows,
    targets gathered by index) give the same losses and adapters as the usual steps, run here without a graph."""
    codec = GridCodec()
    tasks = [flip_task(s, f"t{s}") for s in range(3)]
    cfg = TTTConfig(samples=samples, epochs=2, batch_size=2, lr=1e-2, rank=4, alpha=8, grad_clip=0.05)
    data = [build_dataset(t, codec, cfg) for t in tasks]
    assert len({len(s) for d in data for s in d}) > 1  # ragged: the fixed shapes pad
    for make in (tiny_llama, tiny_grid_model):
        runs = []
        for static in (False, True):
            model = make()
            lora = attach_multi_lora(model, len(tasks), rank=cfg.rank, alpha=cfg.alpha, seed=7)
            result = train_adapters(model, lora.parameters(), data, cfg, pad_id=codec.pad_id, select=lora.use,
                                    task_ids=[t.id for t in tasks], static=static)
            runs.append((result, [lora.state(k) for k in range(len(tasks))]))
        (dyn, dyn_state), (fixed, fixed_state) = runs
        assert dyn.tokens == fixed.tokens
        np.testing.assert_allclose(fixed.losses, dyn.losses, rtol=1e-4, atol=1e-5)
        for want, got in zip(dyn_state, fixed_state, strict=True):
            for name in want:
                torch.testing.assert_close(got[name], want[name], rtol=1e-3, atol=1e-4)
        assert max(float((dyn_state[0][n] - fixed_state[1][n]).abs().max()) for n in dyn_state[0]) > 1e-3
