"""CUDA graphs of the step: the captured code path, its fallback, and (on a GPU) graph against eager.

On a CPU `graphs: on` runs the captured code (`Trainer.step_on`, `attack_batch`) eagerly on
static buffers: it must match the plain run exactly. A capture attempted without CUDA really
fails, which is how the fallback (one line, the trial goes on eagerly) is tested here. The
tests at the end need a CUDA device and are skipped without one.
"""

from __future__ import annotations

import pytest
import torch

from tests.conftest import wartune_lines
from wartune.engine.config import TrainConfig
from wartune.engine.data import load_dataset
from wartune.engine.evaluation import eval_seed, evaluate_flags
from wartune.engine.graphs import GraphedCall, TensorLR, graphs_plan
from wartune.engine.metrics import ExampleFlags
from wartune.engine.trainer import Trainer, train

CUDA = torch.device("cuda")
CPU = torch.device("cpu")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _with(config: TrainConfig, **changes) -> TrainConfig:
    """A validated copy (`model_copy` would leave a λ of 6.0 unparsed)."""
    return TrainConfig.model_validate({**config.model_dump(), **changes})


def _history(result) -> list[tuple[float, ...]]:
    return [(r.val_nat_acc, r.val_rob_acc, r.val_stability, r.l_nat, r.l_rob, r.lambda_last, r.val_lipschitz)
            for r in result.history]  # fmt: skip


def _weights_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


@pytest.mark.parametrize(
    "setting,device,precision,plan",
    [
        ("auto", CPU, "fp32", (False, False)),
        ("off", CUDA, "bf16", (False, False)),
        ("on", CPU, "fp32", (True, False)),
        ("auto", CUDA, "bf16", (True, True)),
        ("auto", CUDA, "fp32", (True, True)),
        ("auto", CUDA, "fp16", (False, False)),
        ("on", CUDA, "fp16", (True, False)),
    ],
)
def test_graphs_plan_captures_on_cuda_only_and_never_with_fp16(setting, device, precision, plan):
    staged, capture, why_not = graphs_plan(setting, device, precision)
    assert (staged, capture) == plan
    assert (why_not is not None) == (staged and not capture or (precision == "fp16" and device.type == "cuda"))


@pytest.mark.parametrize("lam", [6.0, {"kind": "war", "zeta": 5.0}, {"kind": "war", "zeta": 5.0, "ratio": "ema"}])
def test_the_captured_code_path_run_eagerly_on_cpu_matches_the_plain_run_exactly(tiny_config, digits, lam):
    # digits with 300 of its 1,437 training images held out for validation: 1,137 left to train
    # in batches of 128, so every epoch ends with a partial batch; 300 validation images a
    # per-epoch evaluation: one full evaluation batch of 256, staged, and a partial one
    config = _with(tiny_config, lam=lam, eval={"steps": 5, "max_examples": 300}, validation={"examples": 300})
    plain = train(config, data=digits)
    staged = Trainer(_with(config, graphs="on"), digits)
    result = staged.fit()
    assert staged.graph_mode == "eager"
    assert len(staged.data.train_y) == 1137 and [r.val_examples for r in result.history] == [300, 300]
    assert _history(result) == _history(plain)
    assert _weights_equal(result.model, plain.model)


def test_resume_with_graphs_on_reproduces_the_uninterrupted_run(tiny_config, digits, tmp_path):
    config = _with(tiny_config, epochs=3, graphs="on")
    uninterrupted = train(config, data=digits)
    first = Trainer(config, digits)
    first.run_epoch()
    first.save(tmp_path / "trainer.pt")
    resumed = Trainer(config, digits)
    resumed.graphed()  # made before the load: loading must drop it (it would read the old buffers)
    resumed.load(tmp_path / "trainer.pt")
    assert resumed._graphed is None
    assert _history(resumed.fit()) == _history(uninterrupted)


def test_a_failed_capture_says_so_in_one_line_and_the_trial_runs_on_eagerly(tiny_config, digits, capfd):
    # 300 validation images a per-epoch evaluation: one full evaluation batch of 256
    config = _with(tiny_config, eval={"steps": 5, "max_examples": 300}, validation={"examples": 300})
    plain = train(config, data=digits)
    trainer = Trainer(_with(config, graphs="on"), digits)
    trainer.capture = True  # as on a GPU; without CUDA the capture itself fails for real
    for call in trainer.graphed():
        call.warmup = 0  # a warm-up runs on a CUDA side stream: capture at the first call
    result = trainer.fit()
    lines = [line for line in wartune_lines(capfd.readouterr().err) if "capture" in line]
    assert len(lines) == 2  # one for the training step, one for the evaluation attack, never repeated
    assert "training step failed" in lines[0] and "evaluation attack failed" in lines[1]
    assert trainer.graph_mode.startswith("failed: ")
    assert _history(result) == _history(plain)


def test_a_graphed_call_stages_full_batches_and_passes_other_shapes_through():
    seen: list[torch.Tensor] = []

    def double(x: torch.Tensor, noise: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        seen.append(x)
        return (2 * x,)

    call = GraphedCall(double, batch=4, name="test", capture=False)
    a, b, short = torch.ones(4, 2), torch.full((4, 2), 3.0), torch.ones(3, 2)
    assert torch.equal(call(a, None)[0], 2 * a) and torch.equal(call(b, None)[0], 2 * b)
    assert seen[0] is seen[1] and seen[0] is not a  # one static buffer, refilled
    assert torch.equal(call(short, None)[0], 2 * short) and seen[2] is short


def test_tensor_lr_is_swapped_in_for_the_capture_and_follows_the_schedule():
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, fused=True)
    lr = TensorLR(optimizer, CPU)
    with lr.swapped_in():
        assert optimizer.param_groups[0]["lr"] is lr.tensors[0]
        assert float(lr.tensors[0]) == pytest.approx(0.1)
    assert optimizer.param_groups[0]["lr"] == 0.1  # the float again: schedules and checkpoints see a float
    optimizer.param_groups[0]["lr"] = 0.05  # as a schedule sets it, between epochs
    lr.refresh()
    assert float(lr.tensors[0]) == pytest.approx(0.05)


def test_a_fused_sgd_step_with_the_tensor_lr_equals_the_float_lr_step():
    torch.manual_seed(0)
    models = [torch.nn.Linear(5, 3) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    optimizers = [torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, weight_decay=2e-4, fused=True) for m in models]
    lr = TensorLR(optimizers[1], CPU)
    x = torch.randn(8, 5)
    for _ in range(3):
        for i, (model, optimizer) in enumerate(zip(models, optimizers, strict=True)):
            optimizer.zero_grad()
            model(x).square().sum().backward()
            if i == 1:
                with lr.swapped_in():
                    optimizer.step()
            else:
                optimizer.step()
    assert _weights_equal(*models)


def test_auto_keeps_cpu_runs_unstaged(tiny_config, digits):
    trainer = Trainer(tiny_config, digits)
    assert trainer.graphed() is None and trainer.graph_mode == "off"


# --- on a GPU ---------------------------------------------------------------------------------


def _gpu_config(**changes) -> TrainConfig:
    """A small CIFAR-shaped run: 8 full batches of 32 an epoch (3 warm-up, a capture, then replays),
    evaluated each epoch on 512 validation images (two full evaluation batches)."""
    base = {"model": "wrn10-1", "dataset": "synthetic-cifar10", "lam": 6.0, "epochs": 1, "batch_size": 32,
            "attack": {"steps": 3}, "eval": {"steps": 5, "max_examples": 512}, "seed": 5, "device": "cuda",
            "precision": "bf16", "schedule": "cosine"}  # fmt: skip
    return TrainConfig(**{**base, **changes})


def _small_cifar(train: int = 256, validation: int = 512, test: int = 512):
    """`train` training images and a validation split of the next `validation` ones (given, so
    the trainer carves none: synthetic-cifar10's default of 1,000 would not fit), and `test`."""
    data = load_dataset("synthetic-cifar10")
    end = train + validation
    data.train_x, data.train_y, data.val_x, data.val_y = (
        data.train_x[:train], data.train_y[:train], data.train_x[train:end], data.train_y[train:end]
    )  # fmt: skip
    data.test_x, data.test_y = data.test_x[:test], data.test_y[:test]
    return data


@needs_cuda
@pytest.mark.parametrize("lam", [6.0, {"kind": "war", "zeta": 5.0}])
def test_gpu_graph_steps_match_eager_steps_within_bf16_tolerance(lam):
    data = _small_cifar()
    eager = Trainer(_gpu_config(lam=lam, epochs=2, graphs="off"), data)
    graphed = Trainer(_gpu_config(lam=lam, epochs=2, graphs="on"), data)
    for epoch in range(2):  # the cosine schedule changes lr between the epochs: the graph must follow
        e_trace, _ = eager.train_epoch()
        g_trace, _ = graphed.train_epoch()
        assert graphed.graph_mode == "captured"
        eager.scheduler.step()
        graphed.scheduler.step()
        # steps 4..8 of the first epoch and every step of the second were replays
        assert g_trace.l_nat == pytest.approx(e_trace.l_nat, rel=0.05), epoch
        assert g_trace.l_rob == pytest.approx(e_trace.l_rob, rel=0.25, abs=1e-3), epoch
        assert g_trace.lambda_t == pytest.approx(e_trace.lambda_t, rel=0.1, abs=0.05), epoch
    for a, b in zip(eager.model.parameters(), graphed.model.parameters(), strict=True):
        assert torch.allclose(a, b, rtol=0.05, atol=2e-2)


def _flags_equal(a: ExampleFlags, b: ExampleFlags) -> bool:
    return all(torch.equal(getattr(a, name), getattr(b, name)) for name in ("correct", "stable", "robust"))


@needs_cuda
def test_gpu_graphed_evaluation_judges_every_image_as_the_eager_one(monkeypatch):
    """The same weights (trained an epoch) evaluated eagerly and graphed (a warm-up batch, then a
    capture and replays): every validation image gets the same correct, stable and robust flags,
    at every call. Replays run the eager kernels (cuDNN held to its deterministic ones), so a
    replay that read another batch, or stale weights, flips some image's flags."""
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    data = _small_cifar()
    eager = Trainer(_gpu_config(graphs="off"), data)
    eager.run_epoch()
    graphed = Trainer(_gpu_config(graphs="on"), data)
    graphed.model.load_state_dict(eager.model.state_dict())
    seed = eval_seed(eager.config.seed, eager.epoch)
    reference = evaluate_flags(eager.net, eager.data, eager.eval_attack, seed, 512, split="validation")
    for call in range(3):
        attack = graphed.graphed()[1]
        got = evaluate_flags(graphed.net, graphed.data, graphed.eval_attack, seed, 512, run_batch=attack, split="validation")
        assert got[0] == reference[0] and _flags_equal(got[1], reference[1]), call
    assert graphed.graphed()[1].captured
    flags = reference[1]
    assert flags.correct.numel() == 512
    # flags that tell images apart: some right and some wrong, some moved by the attack and some not
    assert 0 < flags.correct.sum() < 512 and 0 < flags.stable.sum() < 512


@needs_cuda
def test_gpu_graphs_resume_reproduces_the_uninterrupted_run(monkeypatch, tmp_path):
    """Two epochs straight against one epoch, a save, and a resume into a trainer that had trained
    two epochs of its own (its step captured): the same epochs, weights and test flags, bit for
    bit. Every part of the resume point must be restored, and the load must drop that trainer's
    graphs (a replay would update the momentum buffers the load replaced). The lr
    is 1/8, which float32 holds exactly, so an eager warm-up step (a float lr) and a replay (its
    float32 copy) take the same step; cuDNN is held to its deterministic kernels."""
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    data = _small_cifar()
    config = _gpu_config(epochs=2, graphs="on", schedule="constant", lr=0.125)
    uninterrupted = Trainer(config, data)
    straight = uninterrupted.fit()
    first = Trainer(config, data)
    first.run_epoch()
    first.save(tmp_path / "trainer.pt")
    resumed = Trainer(config, data)
    for _ in range(2):  # elsewhere than the save (2 epochs' weights, momentum and draws), its step captured
        resumed.train_epoch()
    assert resumed.graph_mode == "captured"
    resumed.load(tmp_path / "trainer.pt")
    again = resumed.fit()
    assert resumed.graph_mode == "captured" and resumed.epoch == 2
    assert _history(again) == _history(straight)
    assert _weights_equal(again.model, straight.model)
    test, test_again = uninterrupted.evaluate_test(), resumed.evaluate_test()
    assert test_again.metrics == test.metrics and _flags_equal(test_again.flags, test.flags)
