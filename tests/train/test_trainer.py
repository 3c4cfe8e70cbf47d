"""Shared trainer utilities: schedule, optimizer groups, accumulation and clipping, MFU, checkpoints,
MLflow logging without duplicated steps."""

from __future__ import annotations

import itertools
import math
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from mlflow import MlflowClient
from safetensors.torch import load_file

from components.core.tracking import Tracker, TrackerHandle
from components.model.checkpoint import CheckpointError
from components.model.gpt import GPT, GPTConfig
from components.train import trainer
from components.train.throughput import mfu, peak_flops, peak_memory_mb
from components.train.trainer import (
    MetricLogger,
    Runtime,
    load_checkpoint_state,
    load_checkpoint_weights,
    lr_at,
    make_optimizer,
    optimizer_step,
    save_checkpoint,
    scores_across_workers,
    set_lr,
)

CPU = Runtime(rank=0, world_size=1, device=torch.device("cpu"), dtype=torch.float32)


def tiny_gpt(seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    shape = {"vocab_size": 64, "context_length": 16, "n_layer": 2, "n_head": 2, "n_embd": 32, **overrides}
    return GPT(GPTConfig(**shape))


def adamw(model: GPT) -> torch.optim.AdamW:
    return make_optimizer(model, lr=1e-2, weight_decay=0.1, betas=(0.9, 0.95), eps=1e-8, device=CPU.device)


def batch(rows: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 64, (rows, 17), generator=g)
    return ids[:, :-1], ids[:, 1:]


def test_schedule_warms_up_linearly_then_decays_to_a_tenth():
    kw = {"max_steps": 100, "lr": 1.0, "warmup_steps": 10, "min_lr_ratio": 0.1}
    assert [lr_at(s, **kw) for s in range(3)] == pytest.approx([0.1, 0.2, 0.3])
    assert lr_at(9, **kw) == pytest.approx(1.0)  # the peak at the last warm-up step
    assert lr_at(10, **kw) == pytest.approx(1.0)
    assert lr_at(99, **kw) == pytest.approx(0.1)  # the last step
    assert lr_at(54, **kw) == pytest.approx(0.55, abs=0.01)  # halfway through the cosine
    decay = [lr_at(s, **kw) for s in range(10, 100)]
    assert all(a >= b for a, b in itertools.pairwise(decay))
    assert lr_at(0, max_steps=5, lr=2.0, warmup_steps=0) == pytest.approx(2.0)


def test_optimizer_groups_decay_matrices_only():
    model = tiny_gpt(block="gpt2")
    opt = adamw(model)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() < 2 for p in no_decay["params"])
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == model.config.num_params()
    assert opt.defaults["betas"] == (0.9, 0.95) and not opt.defaults["fused"]


def test_accumulated_micro_batches_equal_one_big_batch():
    x, y = batch(8, seed=1)
    big, accumulated = tiny_gpt(), tiny_gpt()
    # SGD: the update is the gradient itself (Adam's first step would be about lr * sign(gradient),
    # which blows float rounding in near-zero gradients up to lr)
    opt_big, opt_acc = (
        torch.optim.SGD(big.parameters(), lr=1.0),
        torch.optim.SGD(accumulated.parameters(), lr=1.0),
    )
    loss_big, norm_big = optimizer_step(big, opt_big, [(x, y)], CPU, grad_clip=1.0)
    micro = [(x[i : i + 2], y[i : i + 2]) for i in range(0, 8, 2)]
    loss_acc, norm_acc = optimizer_step(accumulated, opt_acc, micro, CPU, grad_clip=1.0)
    assert float(loss_acc) == pytest.approx(float(loss_big), rel=1e-6)
    assert float(norm_acc) == pytest.approx(float(norm_big), rel=1e-5)
    for a, b in zip(big.parameters(), accumulated.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert all(p.grad is None for p in accumulated.parameters())  # cleared for the next step


def test_clipping_bounds_the_update_and_reports_the_norm_before_clipping():
    x, y = batch(4, seed=2)
    model = tiny_gpt()
    before = [p.detach().clone() for p in model.parameters()]
    sgd = torch.optim.SGD(model.parameters(), lr=1.0)  # update = -gradient, so it shows the clipping
    _, norm = optimizer_step(model, sgd, [(x, y)], CPU, grad_clip=0.01)
    step = torch.cat([(p.detach() - b).flatten() for p, b in zip(model.parameters(), before, strict=True)])
    assert float(norm) > 0.5  # a fresh model's gradient is far larger than 0.01
    assert float(step.norm()) == pytest.approx(0.01, rel=1e-3)

    unclipped = tiny_gpt()
    _, norm0 = optimizer_step(
        unclipped, torch.optim.SGD(unclipped.parameters(), lr=1.0), [(x, y)], CPU, grad_clip=0
    )
    assert float(norm0) == pytest.approx(float(norm), rel=1e-5)


def test_peak_flops_table_and_mfu(monkeypatch):
    assert peak_flops("cpu") is None
    names = {
        "NVIDIA H100 80GB HBM3": 989e12,
        "NVIDIA H100 PCIe": 756e12,
        "NVIDIA H100 NVL": 835e12,
        "NVIDIA A100-SXM4-80GB": 312e12,
        "NVIDIA A100 80GB PCIe": 312e12,
        "NVIDIA A10G": 70e12,
        "NVIDIA L4": 121e12,
        "NVIDIA L40S": 362e12,
        "Some Future GPU": None,
    }
    for name, flops in names.items():
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None, name=name: name)
        assert peak_flops(torch.device("cuda", 0)) == flops, name
    # GPT-2 small: about 6 * 124M FLOPs per token; 8 H100s at 400k tokens/s each
    config = GPTConfig(vocab_size=50304, context_length=1024)
    per_token = config.flops_per_token()
    assert per_token == pytest.approx(6 * 124e6 + 12 * 12 * 12 * 64 * 1024, rel=0.01)
    assert mfu(8 * 400e3, per_token, 8, 989e12) == pytest.approx(400e3 * per_token / 989e12)
    assert mfu(1000.0, per_token, 1, None) is None


@pytest.mark.parametrize("native", [True, False])
def test_auto_dtype_on_cpu_is_bf16_only_with_native_bf16(monkeypatch, native):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    cpu = torch.device("cpu")
    assert trainer.resolve_dtype("auto", cpu) == (torch.bfloat16 if native else torch.float32)
    assert trainer.resolve_dtype("float32", cpu) == torch.float32
    assert trainer.resolve_dtype("bfloat16", cpu) == torch.bfloat16


def test_peak_memory_on_cpu_is_the_process_rss():
    assert 10 < peak_memory_mb(torch.device("cpu")) < 100_000


def test_checkpoint_resume_continues_exactly(tmp_path):
    """Weights, AdamW state and the RNG (dropout is on) restored: the next losses are bit-identical."""
    model = tiny_gpt(dropout=0.2)
    opt = adamw(model)
    torch.manual_seed(123)
    for i in range(3):
        set_lr(opt, 0.01 * (i + 1))
        optimizer_step(model, opt, [batch(4, seed=i)], CPU, grad_clip=1.0)
    save_checkpoint(tmp_path, model, opt, {"step": 3, "data": {"epoch": 0, "row": 12}}, CPU)
    expected = [
        float(optimizer_step(model, opt, [batch(4, seed=10 + i)], CPU, grad_clip=1.0)[0]) for i in range(3)
    ]

    resumed = tiny_gpt(seed=99, dropout=0.2)  # other initial weights and RNG: all of it must come back
    load_checkpoint_weights(tmp_path, resumed)
    resumed_opt = adamw(resumed)
    torch.manual_seed(0)
    progress = load_checkpoint_state(tmp_path, resumed, resumed_opt, CPU)
    assert progress == {"step": 3, "data": {"epoch": 0, "row": 12}}
    got = [
        float(optimizer_step(resumed, resumed_opt, [batch(4, seed=10 + i)], CPU, grad_clip=1.0)[0])
        for i in range(3)
    ]
    assert got == expected


def test_checkpoint_files_need_no_pickle_and_store_a_tied_matrix_once(tmp_path):
    model = tiny_gpt()
    opt = adamw(model)
    optimizer_step(model, opt, [batch(2, seed=0)], CPU, grad_clip=1.0)
    save_checkpoint(tmp_path, model, opt, {"step": 1}, CPU)
    weights = load_file(str(tmp_path / "model.safetensors"))
    assert "tok_emb.weight" in weights and "lm_head.weight" not in weights
    state = torch.load(tmp_path / "optimizer.pt", weights_only=True)
    assert set(state["state"]) >= {"tok_emb.weight", "blocks.0.attn.qkv.weight"}  # keyed by name
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "model.safetensors",
        "optimizer.pt",
        "progress.json",
        "rng-rank00000.pt",
    ]


def test_weights_of_another_shape_are_refused_naming_the_tensor(tmp_path):
    model = tiny_gpt()
    save_checkpoint(tmp_path, model, adamw(model), {"step": 0}, CPU)
    wider = tiny_gpt(n_embd=48, n_head=2)
    with pytest.raises(
        CheckpointError, match=r"tok_emb.weight: shape \(64, 32\) in the checkpoint .*\(64, 48\)"
    ):
        load_checkpoint_weights(tmp_path, wider)
    deeper = tiny_gpt(n_layer=3)
    with pytest.raises(CheckpointError, match=r"blocks.2.attn.qkv.weight: in the model but missing"):
        load_checkpoint_weights(tmp_path, deeper)


def _history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def test_restarted_logger_skips_the_steps_the_run_already_has(tracking_uri, tmp_path):
    tracker = Tracker(tracking_uri, "test_trainer_logger", run_name="pretrain", spool_dir=tmp_path)
    handle = tracker.handle()
    first = MetricLogger(handle, CPU, spool_dir=tmp_path)
    for step in range(1, 7):  # logged, then the worker dies after step 6
        first.log({"train/loss": 10.0 - step, "val/loss": 20.0 - step if step % 3 == 0 else None}, step)
    first.flush()

    # Restarted from the checkpoint at step 3: steps 4..6 come again (same values), then new ones.
    second = MetricLogger(handle, CPU, resumed_step=3, spool_dir=tmp_path)
    for step in range(4, 10):
        second.log({"train/loss": 10.0 - step, "val/loss": 20.0 - step if step % 3 == 0 else None}, step)
    second.flush()
    client = MlflowClient(tracking_uri)
    assert _history(client, handle.run_id, "train/loss") == [(s, 10.0 - s) for s in range(1, 10)]
    assert _history(client, handle.run_id, "val/loss") == [(3, 17.0), (6, 14.0), (9, 11.0)]

    # Other ranks never log.
    quiet = MetricLogger(handle, Runtime(1, 2, torch.device("cpu"), torch.float32))
    assert quiet.tracker is None
    quiet.log({"train/loss": 0.0}, 100)


def test_without_mlflow_a_restarted_logger_drops_steps_up_to_the_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setattr(trainer, "logged_steps", lambda handle: None)  # MLflow cannot be asked
    handle = TrackerHandle("sqlite:///" + str(tmp_path / "x.db"), "e", "run-id", "pretrain")
    logger = MetricLogger(handle, CPU, resumed_step=5, spool_dir=tmp_path)
    logger.tracker.flush = lambda: True  # keep the records in the buffer to look at them
    logger.tracker._maybe_flush = lambda: None
    for step in (4, 5, 6):
        logger.log({"train/loss": float(step)}, step)
    assert [m[3] for m in logger.tracker._buffer.metrics] == [6]


def test_lr_reaches_every_param_group():
    model = tiny_gpt()
    opt = adamw(model)
    set_lr(opt, 0.123)
    assert [g["lr"] for g in opt.param_groups] == [0.123, 0.123]
    assert not math.isnan(opt.param_groups[0]["lr"])


SCORED_ITEM_COUNTS = (7, 1)  # 7: stand-in batches on ranks 1 and 2; 1: ranks 1 and 2 have no item at all


def _score_items_on_rank(rank: int, world: int, port: int, queue) -> None:
    """One of `world` gloo processes: score items 0..n-1 as (x, -x) in batches of 2, for each n of
    SCORED_ITEM_COUNTS; report the scores it got back and the batches it was asked to score."""
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        runtime = Runtime(rank=rank, world_size=world, device=torch.device("cpu"), dtype=torch.float32)
        for n_items in SCORED_ITEM_COUNTS:
            batches: list[list[int]] = []

            def score(batch, asked=batches):
                asked.append(list(batch))
                return torch.tensor([[float(x) for x in batch], [-float(x) for x in batch]])

            scores = scores_across_workers(list(range(n_items)), runtime, 2, score, per_item=2)
            queue.put((n_items, rank, scores, batches))
    finally:
        dist.destroy_process_group()


def test_scores_across_workers_come_back_in_item_order_and_every_rank_runs_as_many_batches():
    world = 3
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_score_items_on_rank, args=(r, world, port, queue)) for r in range(world)]
    for p in procs:
        p.start()
    try:
        results = [queue.get(timeout=120) for _ in range(world * len(SCORED_ITEM_COUNTS))]
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    assert sorted((n, rank) for n, rank, _, _ in results) == sorted(
        (n, rank) for n in SCORED_ITEM_COUNTS for rank in range(world)
    )
    for n_items, rank, scores, batches in results:
        expected = torch.tensor([[float(i) for i in range(n_items)], [-float(i) for i in range(n_items)]])
        torch.testing.assert_close(scores, expected)  # every rank gets all items' scores, in order
        # Its own items, and as many batches as every other rank (FSDP's collectives pair up): item 0
        # stands in for a batch it has no items for.
        own, per_rank = list(range(n_items))[rank::world], math.ceil(n_items / world)
        assert batches == [own[lo : lo + 2] or [0] for lo in range(0, per_rank, 2)]
    assert scores_across_workers([], CPU, 2, lambda batch: torch.zeros(2, 0), per_item=2).shape == (2, 0)
