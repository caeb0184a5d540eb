"""The engine without Ray: determinism, resume, checkpoints, and the plain `train` API."""

import math

import pytest
import torch

from wartune.engine.batches import train_batches
from wartune.engine.config import TrainConfig
from wartune.engine.evaluation import eval_seed, evaluate_model
from wartune.engine.models import create_model
from wartune.engine.records import StepLog, StepTrace
from wartune.engine.trainer import DivergedError, Trainer, best_model_meta, train
from wartune.results.model_files import load_model, save_model_files


def _changed(config: TrainConfig, **changes) -> TrainConfig:
    return TrainConfig.model_validate({**config.model_dump(), **changes})


def _metrics(history):
    return [(r.nat_acc, r.rob_acc, r.stability, r.l_nat, r.l_rob, r.lambda_last, r.lipschitz) for r in history]


def test_train_returns_history_with_every_metric(tiny_config, digits):
    result = train(tiny_config, data=digits)
    assert [r.epoch for r in result.history] == [1, 2]
    for r in result.history:
        assert 0 <= r.rob_acc <= r.nat_acc <= 1
        assert 0 <= r.stability <= 1 and r.lambda_last == 6.0
        assert r.l_nat > 0 and r.l_rob >= 0 and r.lipschitz > 0
        assert r.zeta == pytest.approx(r.l_nat / r.l_rob)
        assert r.eval_examples == 90
    assert result.best.rob_acc == max(r.rob_acc for r in result.history)


def test_robust_accuracy_never_exceeds_stability_or_accuracy(tiny_config, digits):
    # robust ⇔ correct ∧ stable per example implies rob_acc ≤ min(nat_acc, stability)
    for r in train(tiny_config, data=digits).history:
        assert r.rob_acc <= min(r.nat_acc, r.stability) + 1e-9


def test_seeded_runs_are_identical(tiny_config, digits):
    assert _metrics(train(tiny_config, data=digits).history) == _metrics(train(tiny_config, data=digits).history)


# a fixed λ, and WAR with every piece of controller state in use (window ring buffer, hold
# flag): this cnn-8's ratios are in the hundreds, so ζ 700 releases the hold in epoch 1
SETTLE = {"kind": "war", "zeta": 700.0, "lambda0": 6.0, "hold": True, "ratio": "window", "alpha_per": "epoch", "alpha": 0.3}


@pytest.mark.parametrize("lam", [6.0, SETTLE], ids=["fixed", "war-settle"])
def test_resume_after_an_interrupted_epoch_reproduces_the_uninterrupted_run(tiny_config, digits, tmp_path, lam):
    config = _changed(tiny_config, epochs=3, lam=lam)
    uninterrupted = train(config, data=digits)

    first = Trainer(config, digits)
    first.run_epoch()
    first.save(tmp_path / "trainer.pt")
    # the second epoch starts and is killed half-way: its batches advance the RNG and weights
    batches = train_batches(digits, config.batch_size, first.generator, first.device)
    first.train_step(*next(batches))
    del first

    resumed = Trainer(config, digits)
    resumed.load(tmp_path / "trainer.pt")
    result = resumed.fit()
    assert _metrics(result.history) == _metrics(uninterrupted.history)
    assert [t.lambda_t for t in result.step_traces] == [t.lambda_t for t in uninterrupted.step_traces]
    assert isinstance(lam, float) or len(set(uninterrupted.step_traces[1].lambda_t)) > 1  # λ_t moved in the killed epoch
    for a, b in zip(result.model.state_dict().values(), uninterrupted.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_train_with_checkpoint_file_resumes_instead_of_restarting(tiny_config, digits, tmp_path):
    path = tmp_path / "run.pt"
    interrupted = Trainer(tiny_config, digits)
    interrupted.run_epoch()
    interrupted.save(path)  # what `train(..., checkpoint=path)` leaves after epoch 1
    assert torch.load(path, weights_only=True)["epoch"] == 1
    resumed = train(tiny_config, checkpoint=path, data=digits)
    assert _metrics(resumed.history) == _metrics(train(tiny_config, data=digits).history)
    assert torch.load(path, weights_only=True)["epoch"] == 2
    again = train(tiny_config, checkpoint=path, data=digits)  # finished: nothing is retrained
    assert _metrics(again.history) == _metrics(resumed.history)


def test_train_refuses_a_checkpoint_another_config_wrote(tiny_config, digits, tmp_path):
    # λ 6's checkpoint continued with λ 9 gave a history of λ 6, 6, 9 without a word (issue 28).
    from wartune.errors import ConfigError

    path = tmp_path / "run.pt"
    interrupted = Trainer(tiny_config, digits)
    interrupted.run_epoch()
    interrupted.save(path)
    other = _changed(tiny_config, lam=9.0, epochs=3)
    with pytest.raises(ConfigError, match=r"was trained with other settings \(epochs 2 → 3; lam .*6\.0.* → .*9\.0.*\)"):
        train(other, checkpoint=path, data=digits)
    assert torch.load(path, weights_only=True)["epoch"] == 1  # untouched
    train(_changed(tiny_config, threads=2), checkpoint=path, data=digits)  # how it runs may change


def test_best_model_round_trips_through_safetensors(tiny_config, digits, tmp_path):
    trainer = Trainer(tiny_config, digits)
    trainer.fit()
    save_model_files(trainer.best_state, best_model_meta(trainer), tmp_path)
    model, meta = load_model(tmp_path)
    assert meta["model"] == "cnn-8" and meta["epoch"] == trainer.best_epoch
    x = digits.test_x[:16]
    reference = trainer.model
    reference.load_state_dict(trainer.best_state)
    reference.eval()
    with torch.no_grad():
        assert torch.allclose(model(x), reference(x))


def test_madry_objective_trains_with_its_own_clipped_robust_term(tiny_config, digits):
    # Same seed, same λ: the first step sees the same weights and batch under either objective,
    # so l_nat (clean CE in both) is equal and l_rob is the objective's own: TRADES' KL term
    # against Madry's clipped CE difference (which must be >= 0 at every step).
    from wartune.engine.objectives import madry_losses

    trainer = Trainer(_changed(tiny_config, objective="madry", lam=1.5), digits)
    assert trainer.objective.losses is madry_losses and trainer.train_attack.loss == "ce"  # Madry's own, CE attack
    madry = trainer.fit()
    trades = train(_changed(tiny_config, objective="trades", lam=1.5), data=digits)
    first_madry, first_trades = madry.step_traces[0], trades.step_traces[0]
    assert first_madry.l_nat[0] == pytest.approx(first_trades.l_nat[0], rel=1e-6)
    assert first_madry.l_rob[0] != pytest.approx(first_trades.l_rob[0], rel=1e-3)
    assert all(v >= 0 for trace in madry.step_traces for v in trace.l_rob)


def test_war_controller_moves_lambda_away_from_zero(tiny_config, digits):
    # early in training l_nat / l_rob is in the hundreds; a ζ above it makes λ grow
    result = train(_changed(tiny_config, lam={"kind": "war", "zeta": 2000.0}), data=digits)
    assert all(r.lambda_min >= 0 and math.isfinite(r.lambda_max) for r in result.history)
    assert max(r.lambda_max for r in result.history) > 0
    first = result.step_traces[0]
    assert first.lambda_t[0] == pytest.approx(0.1 * (2000.0 - first.l_nat[0] / first.l_rob[0]))


def test_checkpoint_is_plain_data_and_written_atomically(tiny_config, digits, tmp_path):
    trainer = Trainer(tiny_config, digits)
    trainer.run_epoch()
    path = tmp_path / "run.pt"
    trainer.save(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.pt"]  # the temp file was renamed away
    state = torch.load(path, weights_only=True)
    assert state["format"] == 1 and state["epoch"] == 1 and state["best_epoch"] == 1
    assert state["history"][0]["rob_acc"] == trainer.history[0].rob_acc
    for key, tensor in trainer.best_state.items():
        assert torch.equal(state["best_state"][key], tensor)


def test_evaluation_needs_no_trainer_and_never_touches_the_training_rng(tiny_config, digits):
    trainer = Trainer(tiny_config, digits)
    record = trainer.run_epoch()
    model = create_model("cnn-8", 10, 1, 8)
    model.load_state_dict(trainer.model.state_dict())
    generator_before, torch_before = trainer.generator.get_state(), torch.get_rng_state()
    metrics = evaluate_model(model, digits, tiny_config.eval_pgd(), eval_seed(tiny_config.seed, 1), max_examples=90)
    assert (metrics.nat_acc, metrics.rob_acc, metrics.stability, metrics.lipschitz, metrics.n) == (
        record.nat_acc, record.rob_acc, record.stability, record.lipschitz, record.eval_examples
    )  # fmt: skip
    assert torch.equal(trainer.generator.get_state(), generator_before)
    assert torch.equal(torch.get_rng_state(), torch_before)
    assert trainer.evaluate() == metrics  # the thin delegate: same seed (seed, epoch), same examples


def test_a_diverging_loss_is_caught_at_the_end_of_its_epoch_and_nothing_is_recorded(tiny_config, digits):
    # λ = 1e30 blows the weights up within the first epoch; the step never stops to look
    trainer = Trainer(_changed(tiny_config, lam=1e30), digits)
    with pytest.raises(DivergedError, match=r"loss diverged at epoch 1, step \d+: l_nat="):
        trainer.run_epoch()
    assert trainer.epoch == 0 and trainer.history == [] and trainer.best_state == {}


def test_step_log_reads_back_exactly_what_per_step_item_calls_would():
    log = StepLog()
    steps = [(2.3, 0.004, 6.0, [1.0, 2.0, 3.5]), (2.1, 0.01, 6.0, [0.5, 0.25])]
    for l_nat, l_rob, lambda_t, grads in steps:
        log.append(torch.tensor(l_nat), torch.tensor(l_rob), torch.tensor(lambda_t, dtype=torch.float64), torch.tensor(grads))
    trace, train_lipschitz = log.to_host()
    assert trace.l_nat == [torch.tensor(2.3).item(), torch.tensor(2.1).item()]  # float32 values, widened exactly
    assert trace.l_rob == [torch.tensor(0.004).item(), torch.tensor(0.01).item()]
    assert trace.lambda_t == [6.0, 6.0]
    assert train_lipschitz == pytest.approx((1.0 + 2.0 + 3.5 + 0.5 + 0.25) / 5)


def test_step_trace_names_the_first_non_finite_step():
    assert StepTrace([1.0, 2.0], [0.1, 0.2], [6.0, 6.0]).first_non_finite() is None
    assert StepTrace([1.0, 2.0, math.nan], [0.1, math.inf, 0.3], [6.0] * 3).first_non_finite() == 1


def test_each_epoch_counts_the_war_steps_it_skipped(tiny_config, digits):
    # 1,437 training images in batches of 128: 12 steps an epoch. With a threshold no l_rob
    # reaches, WAR skips all 12 of epoch 1; with a vanishing threshold it skips none of epoch 2.
    trainer = Trainer(_changed(tiny_config, lam={"kind": "war", "zeta": 10.0, "lambda0": 2.0}), digits)
    trainer.controller.min_l_rob = math.inf
    first = trainer.run_epoch()
    trainer.controller.min_l_rob = 1e-30  # below any TRADES l_rob of a real step
    second = trainer.run_epoch()
    assert (first.war_skipped_steps, second.war_skipped_steps) == (12, 0)
    assert trainer.controller.skipped_steps == 12
    assert first.lambda_min == first.lambda_max == 2.0  # every step skipped: λ_t stays λ_0


def test_a_fixed_lambda_skips_no_step(tiny_config, digits):
    assert [r.war_skipped_steps for r in train(tiny_config, data=digits).history] == [0, 0]


def test_best_weights_are_evaluated_once_on_the_whole_test_split(tiny_config, digits):
    trainer = Trainer(tiny_config, digits)
    trainer.fit()
    full = trainer.evaluate_best()
    model = create_model("cnn-8", 10, 1, 8)
    model.load_state_dict(trainer.best_state)
    direct = evaluate_model(model, digits, tiny_config.eval_pgd(), eval_seed(tiny_config.seed, trainer.best_epoch))
    assert full == direct and full.n == len(digits.test_y) == 360
    assert [r.eval_examples for r in trainer.history] == [90, 90]  # the per-epoch subset


def test_a_per_epoch_evaluation_of_the_whole_split_is_reused_not_repeated(tiny_config, digits):
    trainer = Trainer(_changed(tiny_config, eval={"steps": 5}), digits)  # digits: every epoch sees all 360
    trainer.fit()
    best = trainer.history[trainer.best_epoch - 1]
    trainer.eval_attack = None  # an attack now would fail: the figures must come from the epoch
    full = trainer.evaluate_best()
    assert (full.nat_acc, full.rob_acc, full.stability, full.lipschitz, full.n) == (
        best.nat_acc, best.rob_acc, best.stability, best.lipschitz, 360,
    )  # fmt: skip


def test_the_old_checkpoints_module_still_gives_load_model_and_says_where_it_went():
    import importlib

    import wartune
    import wartune.checkpoints

    with pytest.warns(DeprecationWarning, match="use wartune.load_model"):
        old = importlib.reload(wartune.checkpoints)
    assert old.load_model is wartune.load_model is load_model
