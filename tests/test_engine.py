"""The engine without Ray: determinism, resume, checkpoints, and the plain `train` API."""

import errno
import io
import itertools
import math
import os
from pathlib import Path

import pytest
import torch

from wartune.engine.attacks import PGDConfig, pgd_from, start_noise
from wartune.engine.batches import eval_batches, train_batches
from wartune.engine.config import TrainConfig
from wartune.engine.data import TensorDataset
from wartune.engine.evaluation import eval_seed, evaluate_flags, evaluate_model
from wartune.engine.metrics import RobustnessMetrics, example_flags
from wartune.engine.models import create_model
from wartune.engine.records import EpochRecord, StepLog, StepTrace
from wartune.engine.trainer import DivergedError, Trainer, best_model_meta, train
from wartune.results.model_files import load_model, save_model_files


def _changed(config: TrainConfig, **changes) -> TrainConfig:
    return TrainConfig.model_validate({**config.model_dump(), **changes})


def _metrics(history):
    return [(r.val_nat_acc, r.val_rob_acc, r.val_stability, r.l_nat, r.l_rob, r.lambda_last, r.val_lipschitz) for r in history]


def _copy_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _cnn8(state: dict[str, torch.Tensor]) -> torch.nn.Module:
    model = create_model("cnn-8", 10, 1, 8)
    model.load_state_dict(state)
    return model


def _validation_flags_by_hand(
    state: dict[str, torch.Tensor], data: TensorDataset, config: TrainConfig, epoch: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Correct / stable / robust for the first 90 validation images, judged here from the natural
    and adversarial predictions (that epoch's attack and random starts) of the weights `state`."""
    model, attack = _cnn8(state).eval(), config.eval_pgd()
    generator = torch.Generator().manual_seed(eval_seed(config.seed, epoch))
    [(x, y)] = eval_batches(data, 90, 256, torch.device("cpu"), "validation")
    x_adv = pgd_from(model, x, y, attack, start_noise(x, attack, generator)).x_adv
    with torch.no_grad():
        nat, adv = model(x).argmax(dim=1), model(x_adv).argmax(dim=1)
    return nat == y, adv == nat, (nat == y) & (adv == y)


def _step_losses_by_hand(
    state: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor, noise: torch.Tensor | None, attack: PGDConfig
) -> tuple[float, float]:
    """TRADES' l_nat (CE) and l_rob (KL(f(x) ‖ f(x̂)), batch mean) of one step, written out from
    log-softmaxes, at the weights the step began from."""
    model = _cnn8(state)
    x_adv = pgd_from(model, x, y, attack, noise).x_adv
    model.train()
    with torch.no_grad():
        log_p, log_q = model(x).log_softmax(dim=1), model(x_adv).log_softmax(dim=1)
    l_nat = -log_p.gather(1, y[:, None]).mean()
    l_rob = (log_p.exp() * (log_p - log_q)).sum(dim=1).mean()
    return l_nat.item(), l_rob.item()


def test_train_returns_history_with_every_metric(tiny_config, digits, monkeypatch):
    """Each epoch's figures recomputed by hand: the validation figures from that epoch's weights,
    l_nat and l_rob as the epoch's mean of each step's losses taken from the weights, batch and
    random start the step began with, and ζ as the ratio of those two means."""
    steps, evaluated = [], []
    step_on, evaluate = Trainer.step_on, Trainer.evaluate

    def recording_step(self: Trainer, x: torch.Tensor, y: torch.Tensor, noise: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        steps.append((self.epoch + 1, _copy_of(self.model), x, y, noise, self.train_attack))
        return step_on(self, x, y, noise)

    def recording_evaluate(self: Trainer, max_examples: int | None = None) -> RobustnessMetrics:
        evaluated.append((_copy_of(self.model), self.data))
        return evaluate(self, max_examples)

    monkeypatch.setattr(Trainer, "step_on", recording_step)
    monkeypatch.setattr(Trainer, "evaluate", recording_evaluate)
    result = train(tiny_config, data=digits)
    assert [r.epoch for r in result.history] == [1, 2] and len(evaluated) == 2
    for r, (state, data) in zip(result.history, evaluated, strict=True):
        correct, stable, robust = _validation_flags_by_hand(state, data, tiny_config, r.epoch)
        assert r.val_nat_acc == pytest.approx(correct.float().mean().item(), abs=1e-9)
        assert r.val_stability == pytest.approx(stable.float().mean().item(), abs=1e-9)
        assert r.val_rob_acc == pytest.approx(robust.float().mean().item(), abs=1e-9)
        losses = [_step_losses_by_hand(*step[1:]) for step in steps if step[0] == r.epoch]
        assert len(losses) == 10  # 1,221 training images in batches of 128
        l_nat, l_rob = (math.fsum(column) / len(losses) for column in zip(*losses, strict=True))
        assert r.l_nat == pytest.approx(l_nat, rel=1e-5)
        assert r.l_rob == pytest.approx(l_rob, rel=1e-4)  # measured: within 1e-6
        assert r.zeta == pytest.approx(l_nat / l_rob, rel=1e-4)
        assert r.lambda_last == 6.0 and r.val_lipschitz > 0
        assert r.val_examples == 90  # the first 90 of the 216 validation images
    assert result.best.val_rob_acc == max(r.val_rob_acc for r in result.history)


def test_robust_accuracy_never_exceeds_stability_or_accuracy(tiny_config, digits):
    """Robust ⇔ correct ∧ stable per example (Sec. 3.1), so rob_acc ≤ min(nat_acc, stability). The
    flags are checked against the rule written out here, not their own definition: every
    (label, f(x), f(x̂)) over three classes, then each epoch's validation flags against flags
    judged from that epoch's natural and adversarial predictions."""
    y, nat, adv = torch.tensor(list(itertools.product(range(3), repeat=3))).T
    flags = example_flags(nat, adv, y)
    for i, (label, p_nat, p_adv) in enumerate(zip(y.tolist(), nat.tolist(), adv.tolist(), strict=True)):
        expected = (p_nat == label, p_adv == p_nat, p_nat == label and p_adv == label)
        assert (flags.correct[i].item(), flags.stable[i].item(), flags.robust[i].item()) == expected

    trainer = Trainer(tiny_config, digits)
    states = _weights_at_each_epoch(trainer)
    attacked_away = 0
    for r, state in zip(trainer.history, states, strict=True):
        correct, stable, robust = _validation_flags_by_hand(state, trainer.data, tiny_config, r.epoch)
        seed = eval_seed(tiny_config.seed, r.epoch)
        _, got = evaluate_flags(_cnn8(state), trainer.data, tiny_config.eval_pgd(), seed, 90, split="validation")
        assert torch.equal(got.correct, correct) and torch.equal(got.stable, stable) and torch.equal(got.robust, robust)
        assert (r.val_nat_acc, r.val_stability, r.val_rob_acc) == pytest.approx(
            (correct.float().mean().item(), stable.float().mean().item(), robust.float().mean().item()), abs=1e-9
        )
        assert r.val_rob_acc <= min(r.val_nat_acc, r.val_stability)
        attacked_away += int((correct & ~robust).sum())
    assert attacked_away > 0  # the attack flips some correct predictions: robust and correct differ


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
    batches = train_batches(first.data, config.batch_size, first.generator, first.device)
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
    assert meta["val_rob_acc"] == trainer.history[trainer.best_epoch - 1].val_rob_acc
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


def test_checkpoint_is_plain_data_and_written_atomically(tiny_config, digits, tmp_path, monkeypatch):
    """A save that dies half-way through its bytes (a full disk) must leave the previous
    resume point loadable: a `torch.save` straight into the file would leave it torn."""
    trainer = Trainer(tiny_config, digits)
    trainer.run_epoch()
    path = tmp_path / "run.pt"
    trainer.save(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.pt"]  # the temp file was renamed away
    state = torch.load(path, weights_only=True)
    assert state["format"] == 1 and state["epoch"] == 1 and state["best_epoch"] == 1
    assert state["history"][0]["val_rob_acc"] == trainer.history[0].val_rob_acc
    for key, tensor in trainer.best_state.items():
        assert torch.equal(state["best_state"][key], tensor)

    before = path.read_bytes()
    trainer.run_epoch()
    real_save = torch.save

    def half_then_fail(obj: object, f: str | os.PathLike[str]) -> None:
        buffer = io.BytesIO()
        real_save(obj, buffer)
        Path(f).write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        raise OSError(errno.ENOSPC, "No space left on device (simulated)")

    monkeypatch.setattr(torch, "save", half_then_fail)
    with pytest.raises(OSError, match="No space left on device"):
        trainer.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.pt"]  # no torn temp file left beside it
    assert torch.load(path, weights_only=True)["epoch"] == 1  # the epoch-1 resume point, whole
    trainer.save(path)  # untorn, the same save replaces it
    assert torch.load(path, weights_only=True)["epoch"] == 2


def test_evaluation_needs_no_trainer_and_never_touches_the_training_rng(tiny_config, digits):
    # the per-epoch evaluation is a plain function of (model, data, attack, seed) on the
    # trainer's validation split: the first 90 of its 216 held-out training images
    trainer = Trainer(tiny_config, digits)
    record = trainer.run_epoch()
    model = create_model("cnn-8", 10, 1, 8)
    model.load_state_dict(trainer.model.state_dict())
    generator_before, torch_before = trainer.generator.get_state(), torch.get_rng_state()
    metrics = evaluate_model(
        model, trainer.data, tiny_config.eval_pgd(), eval_seed(tiny_config.seed, 1), max_examples=90, split="validation"
    )
    assert (metrics.nat_acc, metrics.rob_acc, metrics.stability, metrics.lipschitz, metrics.n) == (
        record.val_nat_acc, record.val_rob_acc, record.val_stability, record.val_lipschitz, record.val_examples
    )  # fmt: skip
    assert metrics.n == 90
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
    # 1,437 training images less the 216 held out for validation: 1,221 in batches of 128, 10
    # steps an epoch. With a threshold no l_rob reaches, WAR skips all 10 of epoch 1; with a
    # vanishing threshold it skips none of epoch 2.
    trainer = Trainer(_changed(tiny_config, lam={"kind": "war", "zeta": 10.0, "lambda0": 2.0}), digits)
    trainer.controller.min_l_rob = math.inf
    first = trainer.run_epoch()
    trainer.controller.min_l_rob = 1e-30  # below any TRADES l_rob of a real step
    second = trainer.run_epoch()
    assert (first.war_skipped_steps, second.war_skipped_steps) == (10, 0)
    assert trainer.controller.skipped_steps == 10
    assert first.lambda_min == first.lambda_max == 2.0  # every step skipped: λ_t stays λ_0


def test_a_fixed_lambda_skips_no_step(tiny_config, digits):
    assert [r.war_skipped_steps for r in train(tiny_config, data=digits).history] == [0, 0]


def _weights_at_each_epoch(trainer: Trainer) -> list[dict[str, torch.Tensor]]:
    """Run `trainer.fit()`, keeping a copy of the weights at the end of every epoch."""
    states: list[dict[str, torch.Tensor]] = []
    trainer.fit(lambda record, t: states.append({k: v.detach().clone() for k, v in t.model.state_dict().items()}))
    return states


def _same_flags(a, b) -> bool:
    return all(torch.equal(getattr(a, name), getattr(b, name)) for name in ("correct", "stable", "robust"))


def test_best_weights_are_evaluated_once_on_the_whole_test_split(tiny_config, digits):
    trainer = Trainer(tiny_config, digits)
    states = _weights_at_each_epoch(trainer)
    val_rob = [r.val_rob_acc for r in trainer.history]
    assert trainer.best_epoch == val_rob.index(max(val_rob)) + 1  # chosen on the validation split
    assert [r.val_examples for r in trainer.history] == [90, 90]  # the per-epoch validation subset
    last_weights = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    generator_before, torch_before = trainer.generator.get_state(), torch.get_rng_state()

    result = trainer.evaluate_test()
    # it neither moves the trained weights nor draws from the training RNGs
    assert all(torch.equal(v, last_weights[k]) for k, v in trainer.model.state_dict().items())
    assert torch.equal(trainer.generator.get_state(), generator_before)
    assert torch.equal(torch.get_rng_state(), torch_before)

    # the best epoch's weights (as they stood at the end of that epoch), all 360 test images,
    # that epoch's evaluation seed: exactly a plain evaluation of those weights on the test split
    model = create_model("cnn-8", 10, 1, 8)
    model.load_state_dict(states[trainer.best_epoch - 1])
    seed = eval_seed(tiny_config.seed, trainer.best_epoch)
    direct = evaluate_model(model, trainer.data, tiny_config.eval_pgd(), seed)
    assert result.metrics == direct and direct.n == len(digits.test_y) == 360
    _, direct_flags = evaluate_flags(model, trainer.data, tiny_config.eval_pgd(), seed)
    assert _same_flags(result.flags, direct_flags)
    again = trainer.evaluate_test()  # reproducible
    assert again.metrics == result.metrics and _same_flags(again.flags, result.flags)

    # the flags are the metrics, example by example
    flags, metrics = result.flags, result.metrics
    assert all(len(getattr(flags, name)) == 360 for name in ("correct", "stable", "robust"))
    assert flags.robust.float().mean().item() == metrics.rob_acc
    assert flags.correct.float().mean().item() == metrics.nat_acc
    assert flags.stable.float().mean().item() == metrics.stability
    assert torch.equal(flags.robust, flags.correct & flags.stable)
    # correct: the natural prediction is the label; robust: correct and the adversarial
    # prediction (the same attack, redrawn here batch by batch) is the label too
    attack, generator = tiny_config.eval_pgd(), torch.Generator().manual_seed(seed)
    model.eval()
    pred_nat, pred_adv = [], []
    for x, y in eval_batches(trainer.data, None, 256, torch.device("cpu"), "test"):
        x_adv = pgd_from(model, x, y, attack, start_noise(x, attack, generator)).x_adv
        with torch.no_grad():
            pred_nat.append(model(x).argmax(1))
            pred_adv.append(model(x_adv).argmax(1))
    nat, adv = torch.cat(pred_nat), torch.cat(pred_adv)
    assert torch.equal(flags.correct, nat == digits.test_y)
    assert torch.equal(flags.robust, (nat == digits.test_y) & (adv == digits.test_y))
    assert torch.equal(flags.stable, adv == nat)


def test_an_uncapped_per_epoch_evaluation_reads_the_whole_validation_split_and_the_test_split_apart(tiny_config, digits):
    # no eval.max_examples on digits: every epoch sees all 216 validation images; the test
    # result is a fresh attack on the 360 test images, not the best epoch's validation figures
    trainer = Trainer(_changed(tiny_config, eval={"steps": 5}), digits)
    states = _weights_at_each_epoch(trainer)
    assert [r.val_examples for r in trainer.history] == [216, 216]
    model = create_model("cnn-8", 10, 1, 8)
    model.load_state_dict(states[trainer.best_epoch - 1])
    seed = eval_seed(tiny_config.seed, trainer.best_epoch)
    best = trainer.history[trainer.best_epoch - 1]
    on_validation = evaluate_model(model, trainer.data, trainer.config.eval_pgd(), seed, split="validation")
    assert (on_validation.nat_acc, on_validation.rob_acc, on_validation.stability, on_validation.n) == (
        best.val_nat_acc, best.val_rob_acc, best.val_stability, 216,
    )  # fmt: skip
    result = trainer.evaluate_test()
    assert result.metrics == evaluate_model(model, trainer.data, trainer.config.eval_pgd(), seed)
    assert result.metrics.n == 360


def test_a_trainer_holds_out_its_validation_split_from_the_training_split(tiny_config, digits):
    trainer = Trainer(tiny_config, digits)
    assert len(trainer.data.train_y) == 1437 - 216 and len(trainer.validation_indices) == 216
    held = trainer.validation_indices
    assert torch.equal(trainer.data.val_x, digits.train_x[held]) and torch.equal(trainer.data.val_y, digits.train_y[held])
    keep = torch.ones(1437, dtype=torch.bool)
    keep[held] = False
    assert torch.equal(trainer.data.train_x, digits.train_x[keep])  # the rest, in their order
    assert trainer.data.test_x is digits.test_x  # the test split as given, untouched
    # every trial of a search holds out the same images, whatever its own seed
    assert torch.equal(Trainer(_changed(tiny_config, seed=11), digits).validation_indices, held)
    # data that already has a validation split is used as it is
    given = Trainer(tiny_config, trainer.data)
    assert len(given.validation_indices) == 0 and given.data.val_x is trainer.data.val_x
    assert len(given.data.train_y) == 1221


def test_best_model_meta_carries_the_best_epochs_validation_figures(tiny_config, digits):
    trainer = Trainer(tiny_config, digits)
    trainer.fit()
    meta = best_model_meta(trainer)
    best = trainer.history[trainer.best_epoch - 1]
    assert (meta["val_nat_acc"], meta["val_rob_acc"], meta["val_stability"], meta["val_examples"]) == (
        best.val_nat_acc, best.val_rob_acc, best.val_stability, 90,
    )  # fmt: skip
    assert not {"nat_acc", "rob_acc", "stability", "eval_examples"} & meta.keys()


# this release's names of the per-epoch evaluation's figures, and 0.2.0's
RENAMED = {"val_nat_acc": "nat_acc", "val_rob_acc": "rob_acc", "val_stability": "stability",
           "val_lipschitz": "lipschitz", "val_examples": "eval_examples"}  # fmt: skip


def test_an_epoch_record_of_0_2_0_loads_under_the_validation_names(tiny_config, digits):
    record = train(tiny_config, data=digits).history[0]
    old = {RENAMED.get(k, k): v for k, v in record.metrics().items()}
    assert "rob_acc" in old and "val_rob_acc" not in old
    assert EpochRecord.from_dict(old) == record
    assert EpochRecord.from_dict(record.metrics()) == record


class ReadCounted(torch.Tensor):
    """A tensor that counts every torch operation applied to it or to a tensor made from it
    (slices, copies, `.to(device)`, arithmetic: they are `ReadCounted` too)."""

    reads = 0

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        ReadCounted.reads += 1
        return super().__torch_function__(func, types, args, kwargs or {})


def _with_counted_test_split(digits) -> TensorDataset:
    """digits with its test images and labels `ReadCounted`, the count at 0."""
    data = TensorDataset(
        digits.info, digits.train_x, digits.train_y, digits.test_x.as_subclass(ReadCounted), digits.test_y.as_subclass(ReadCounted)
    )
    ReadCounted.reads = 0
    return data


def test_the_test_split_is_not_read_before_the_final_evaluation(tiny_config, digits):
    data = _with_counted_test_split(digits)
    trainer = Trainer(tiny_config, data)  # tiny: 2 epochs, 90 validation images an epoch
    # carving, dataclasses.replace and on_device keep the counted tensors as they are
    assert isinstance(trainer.data.test_x, ReadCounted) and trainer.data.test_x is data.test_x
    trainer.fit()
    assert ReadCounted.reads == 0  # neither building the trainer nor any epoch touched the test split
    result = trainer.evaluate_test()
    assert ReadCounted.reads > 0  # the final evaluation did
    assert result.metrics.n == 360


def test_the_read_counter_sees_every_read_of_the_test_split(tiny_config, digits, monkeypatch):
    # the counter of the test above must see a read when one happens: through slicing, `.to`
    # and `dataclasses.replace` it stays a counter; a plain evaluation of the test split and a
    # per-epoch evaluation made to read the test split are each counted
    import dataclasses

    from wartune.engine import trainer as trainer_module

    data = _with_counted_test_split(digits)
    assert isinstance(data.test_x[:3], ReadCounted) and isinstance(data.test_x.to("cpu"), ReadCounted)
    assert dataclasses.replace(data, train_x=data.train_x).test_x is data.test_x
    ReadCounted.reads = 0
    trainer = Trainer(tiny_config, data)
    evaluate_model(trainer.net, trainer.data, trainer.eval_attack, 0, 90, split="validation")
    assert ReadCounted.reads == 0
    evaluate_model(trainer.net, trainer.data, trainer.eval_attack, 0, 90, split="test")
    assert ReadCounted.reads > 0

    ReadCounted.reads = 0
    leaky = Trainer(tiny_config, data)

    def on_the_test_split(*args, **kwargs):
        return evaluate_model(*args, **{**kwargs, "split": "test"})

    monkeypatch.setattr(trainer_module, "evaluate_model", on_the_test_split)
    leaky.run_epoch()  # an epoch whose evaluation reads the test split, as 0.2.0's did
    assert ReadCounted.reads > 0
