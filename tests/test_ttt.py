"""Test-time training on the CPU with a tiny model: the data, the loss, and the two training paths."""

import copy

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from testtime.encode import END, GridCodec
from testtime.lora import attach_multi_lora, find_target_modules
from testtime.tasks import Example, Task, load_tasks
from testtime.ttt import TTTConfig, _pad_right, build_dataset, target_loss, train_adapters, train_peft


def tiny_model(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=32, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=2048,
                      initializer_range=0.3)  # large enough that a frozen head can express sharp outputs
    return LlamaForCausalLM(cfg).eval()


def small_task(seed: int = 0, tid: str = "t") -> Task:
    rng = np.random.default_rng(seed)
    demos = []
    for _ in range(3):
        g = rng.integers(0, 10, size=(3, 4)).astype(np.uint8)
        demos.append(Example(g, np.ascontiguousarray(g[:, ::-1])))
    q = rng.integers(0, 10, size=(3, 4)).astype(np.uint8)
    return Task(tid, tuple(demos), (Example(q, np.ascontiguousarray(q[:, ::-1])),))


def test_dataset_uses_only_demonstrations():
    task = small_task()
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


def test_dataset_switches():
    task = small_task()
    codec = GridCodec()
    plain = build_dataset(task, codec, TTTConfig(samples=6, leave_one_out=False, augment=False))
    assert all(e.demos_used == () for e in plain)
    assert len({e.input_ids.tobytes() for e in plain}) == 3  # only the 3 demos, repeated
    no_demo_loss = build_dataset(task, codec, TTTConfig(samples=6, loss_on_demos=False))
    for e in no_demo_loss:
        assert e.loss_mask.sum() == len(e) - e.prompt_len


def test_ttt_lowers_loss_on_demonstrations():
    model = tiny_model()
    codec = GridCodec()
    task = small_task()
    cfg = TTTConfig(samples=8, epochs=15, batch_size=4, lr=2e-2)
    data = build_dataset(task, codec, cfg)
    lora = attach_multi_lora(model, 1, rank=8, alpha=16)

    def loss() -> float:
        ids, mask = _pad_right(data, codec.pad_id, "cpu")
        lora.use(torch.zeros(len(data), dtype=torch.long))
        with torch.no_grad():
            return float(target_loss(model, ids, mask, [slice(0, len(data))])[0])

    before = loss()
    result = train_adapters(model, lora.parameters(), [data], cfg, pad_id=codec.pad_id, select=lora.use)
    after = loss()
    assert after < 0.8 * before
    assert result.losses[0][-1] < result.losses[0][0]


def test_target_modules_found_from_architecture():
    assert find_target_modules(tiny_model()) == ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]


def test_batched_adapters_equal_one_task_at_a_time_with_peft():
    codec = GridCodec()
    tasks = [small_task(s, f"t{s}") for s in range(3)]
    cfg = TTTConfig(samples=4, epochs=2, batch_size=2, lr=1e-2, rank=4, alpha=8, grad_clip=0.05)
    data = [build_dataset(t, codec, cfg) for t in tasks]

    model = tiny_model()
    lora = attach_multi_lora(model, len(tasks), rank=cfg.rank, alpha=cfg.alpha, seed=7)
    init = [lora.state(k) for k in range(len(tasks))]
    batched = train_adapters(model, lora.parameters(), data, cfg, pad_id=codec.pad_id, select=lora.use,
                             task_ids=[t.id for t in tasks])
    for k, task in enumerate(tasks):
        peft_model, alone = train_peft(tiny_model(), data[k], cfg, pad_id=codec.pad_id, task_id=task.id, init=init[k])
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


def test_detach_restores_the_base_model():
    model = tiny_model()
    ids = torch.randint(0, 10, (2, 20))
    before = model(input_ids=ids).logits
    ref = copy.deepcopy(model)
    lora = attach_multi_lora(model, 2)
    lora.detach()
    assert type(model.model.layers[0].self_attn.q_proj) is type(ref.model.layers[0].self_attn.q_proj)
    torch.testing.assert_close(model(input_ids=ids).logits, before)


@pytest.mark.parametrize("task_id", ["00576224"])
def test_dataset_on_a_real_task(task_id):
    task = next(t for t in load_tasks("arc1/eval") if t.id == task_id)
    data = build_dataset(task, GridCodec(), TTTConfig())
    assert len(data) == TTTConfig().samples


def test_batched_predictions_equal_one_task_at_a_time():
    from testtime.predict import PredictConfig, greedy_generate, make_queries

    codec = GridCodec()
    tasks = [small_task(s, f"t{s}") for s in range(3)]
    cfg = TTTConfig(samples=4, epochs=2, batch_size=2, lr=1e-2, rank=4, alpha=8)
    data = [build_dataset(t, codec, cfg) for t in tasks]
    model = tiny_model()
    lora = attach_multi_lora(model, len(tasks), rank=cfg.rank, alpha=cfg.alpha, seed=3)
    train_adapters(model, lora.parameters(), data, cfg, pad_id=codec.pad_id, select=lora.use,
                   task_ids=[t.id for t in tasks])
    queries, _ = make_queries(tasks, codec, PredictConfig(views=2))
    together = greedy_generate(model, [q.prompt for q in queries], [q.max_new for q in queries], codec,
                               adapter_index=[q.task for q in queries], select=lora.use)
    for k in range(len(tasks)):
        alone_model = tiny_model()
        alone = attach_multi_lora(alone_model, 1, rank=cfg.rank, alpha=cfg.alpha)
        with torch.no_grad():
            for name, layer in alone.layers.items():
                layer.lora_A[0].copy_(lora.layers[name].lora_A[k])
                layer.lora_B[0].copy_(lora.layers[name].lora_B[k])
        mine = [i for i, q in enumerate(queries) if q.task == k]
        got = greedy_generate(alone_model, [queries[i].prompt for i in mine], [queries[i].max_new for i in mine],
                              codec, adapter_index=[0] * len(mine), select=alone.use)
        assert [g.tokens for g in got] == [together[i].tokens for i in mine]
    # The adapters matter: without them the answers differ somewhere.
    bare = greedy_generate(model, [q.prompt for q in queries], [q.max_new for q in queries], codec)
    assert [g.tokens for g in bare] != [g.tokens for g in together]


def test_adapter_fast_paths_equal_the_per_row_gather():
    model = tiny_model()
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
    lora.use(None)
    assert lora.ctx.single is None and not torch.equal(model(input_ids=ids).logits, fast)
