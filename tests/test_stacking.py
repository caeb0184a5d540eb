"""Stacked λ-trials: a member of a stack is its lone trial.

Float32 training is chaotic: the grouped layers round differently from the lone ones (1e-7),
and PGD's sign of a near-zero gradient can flip on that, so two trajectories drift apart over
many steps the way a lone run drifts from itself when its thread count changes. So the
equivalence is pinned step by step, in float64: from the same state, the stack's step gives
every member its lone step's l_nat, l_rob, λ_t, attack gradients and weights to 1e-9; then
the stack is set to the lone states again. Whole runs are compared in float64 too.
"""

from __future__ import annotations

import pytest
import torch

from wartune.engine.attacks import start_noise
from wartune.engine.batches import train_batches
from wartune.engine.config import TrainConfig
from wartune.engine.models import create_model
from wartune.engine.stacked_trainer import StackedTrainer, why_not_stacked
from wartune.engine.stacking import StackedNet, member_state, stack_models, stackable
from wartune.engine.trainer import Trainer

WAR = {"kind": "war", "zeta": 5.0, "lambda0": 2.0, "alpha": 0.2, "alpha_per": "step"}
MEMBERS = [(1.0, 3), (WAR, 4), (6.0, 5), (WAR | {"zeta": 9.0}, 3)]  # (λ, seed): fixed and WAR, seeds shared and not


def _config(lam, seed: int, objective: str = "trades", model: str = "wrn10-0.5", epochs: int = 1, attack_steps: int = 3) -> TrainConfig:
    return TrainConfig(model=model, objective=objective, lam=lam, epochs=epochs, batch_size=128, attack={"steps": attack_steps},
                       eval={"steps": 3, "max_examples": 90}, seed=seed, threads=1)  # fmt: skip


@pytest.mark.parametrize("name", ["wrn10-0.5", "cnn-8", "mlp-32"])
def test_a_stack_of_models_gives_each_members_own_logits_and_weights_back(name):
    models = []
    for seed in range(3):
        torch.manual_seed(seed)
        models.append(create_model(name, 10, 1, 8))
    net = StackedNet(stack_models(models), 3)
    x = torch.rand(3 * 5, 1, 8, 8)
    for training in (False, True):  # running statistics, then batch statistics
        net.train(training)
        for model in models:
            model.train(training)
        lone = torch.cat([m(x[5 * k : 5 * (k + 1)]) for k, m in enumerate(models)])
        torch.testing.assert_close(net(x), lone, rtol=1e-5, atol=1e-6)
    for k, model in enumerate(models):  # the BN statistics both just updated, and the weights
        torch.testing.assert_close(member_state(net.grouped, k, model.state_dict()), model.state_dict())


def _double(trainer: Trainer) -> Trainer:
    """The trainer in float64 (its parameters converted in place, so its SGD still holds them)."""
    trainer.model.double()
    return trainer


def _lockstep(configs: list[TrainConfig], digits) -> int:
    """Each step: the lone trials and the stack step from the same state; compare; realign.
    In float64, where rounding cannot flip an attack's gradient sign, so the tolerance is tight."""
    lone = [_double(Trainer(c, digits)) for c in configs]
    stack = StackedTrainer([_double(Trainer(c, digits)) for c in configs])
    feeds = [train_batches(t.data, 128, t.generator, t.device) for t in lone]
    steps = 0
    for batches in zip(*feeds, strict=True):
        batches = tuple((x.double(), y) for x, y in batches)
        noises = [start_noise(x, t.train_attack, t.generator) for (x, _), t in zip(batches, lone, strict=True)]
        alone = [t.step_on(x, y, n) for (x, y), t, n in zip(batches, lone, noises, strict=True)]
        together = stack.step_on(
            torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches]), torch.cat(noises)
        )
        for k, (l_nat, l_rob, lambda_t, grad_l1) in enumerate(alone):
            for name, got, want in (("l_nat", together[0][k], l_nat), ("l_rob", together[1][k], l_rob),
                                    ("lambda_t", together[2][k], lambda_t),
                                    ("grad_l1", together[3].chunk(len(lone))[k], grad_l1)):  # fmt: skip
                torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12, msg=f"step {steps + 1}, member {k}: {name}")
        stack.sync_members()
        for twin, t in zip(stack.members, lone, strict=True):
            torch.testing.assert_close(twin.model.state_dict(), t.model.state_dict(), rtol=1e-9, atol=1e-12)
            twin.model.load_state_dict(t.model.state_dict())
            twin.optimizer.load_state_dict(t.optimizer.state_dict())
            twin.controller.load_state_dict(t.controller.state_dict())
        stack.restack()
        steps += 1
    return steps


@pytest.mark.parametrize("objective", ["trades", "madry"])
@pytest.mark.parametrize("k", [1, 3, 4])
def test_each_step_of_a_stack_is_each_members_lone_step(digits, objective, k):
    """Fixed λ and WAR members, shared and distinct seeds: l_nat, l_rob, λ_t, the attack's
    gradient norms and the updated weights, step by step over an epoch of WRN-10-0.5."""
    configs = [_config(lam, seed, objective) for lam, seed in MEMBERS[:k]]
    assert _lockstep(configs, digits) == 10  # 1,437 training digits less 216 for validation: 1,221 in batches of 128


@pytest.fixture
def float64_batches(monkeypatch):
    """Training and evaluation batches in float64, for trainers whose models are float64."""
    from wartune.engine import batches
    from wartune.engine.data import to_float

    monkeypatch.setattr(batches, "to_float", lambda images: to_float(images).double())


def test_whole_stacked_runs_are_their_lone_runs(digits, float64_batches):
    """Two epochs of WRN-10-0.5 under TRADES, fixed λ and WAR members, in float64 with no
    realigning: the lr schedule, the generators, WAR's state and the momentum carried from
    epoch to epoch; every step, every epoch's record, the best epoch and its weights."""
    configs = [_config(lam, seed, epochs=2) for lam, seed in MEMBERS]
    lone = [_double(Trainer(c, digits)) for c in configs]
    for t in lone:
        t.fit()
    stack = StackedTrainer([_double(Trainer(c, digits)) for c in configs])
    # the stack evaluates every member on its first member's validation split: whatever their
    # seeds, the members hold out the same 216 training images
    held = stack.members[0].validation_indices
    assert len(held) == 216 and all(torch.equal(m.validation_indices, held) for m in stack.members)
    stack.fit()
    for alone, member in zip(lone, stack.members, strict=True):
        for a, b in zip(alone.step_traces, member.step_traces, strict=True):
            for name in ("l_nat", "l_rob", "lambda_t"):
                got, want = torch.tensor(getattr(b, name)), torch.tensor(getattr(a, name))
                torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12, msg=name)
        assert [(r.val_nat_acc, r.val_rob_acc, r.val_stability, r.val_examples, r.lr) for r in member.history] == [
            (r.val_nat_acc, r.val_rob_acc, r.val_stability, r.val_examples, r.lr) for r in alone.history
        ]
        assert member.best_epoch == alone.best_epoch
        torch.testing.assert_close(member.best_state, alone.best_state, rtol=1e-9, atol=1e-12)


def test_a_diverging_member_is_dropped_and_the_others_train_on(digits, float64_batches):
    configs = [_config(lam, seed, "madry", "cnn-8", epochs=2) for lam, seed in MEMBERS[:3]]
    members = [_double(Trainer(c, digits)) for c in configs]
    with torch.no_grad():  # member 1's weights poisoned: its loss is NaN from the first step
        next(members[1].model.parameters()).fill_(float("nan"))
    stack = StackedTrainer(members)
    first = stack.run_epoch()
    assert "diverged at epoch 1" in str(first[1]) and stack.ids == [0, 2] and stack.dropped == {1: "diverged"}
    stack.fit()
    lone = _double(Trainer(configs[2], digits))
    lone.fit()
    assert [r.val_rob_acc for r in stack.members[1].history] == [r.val_rob_acc for r in lone.history]


def test_what_cannot_share_a_stack_is_named():
    assert "differ in lr" in why_not_stacked([_config(1.0, 0), _config(1.0, 0).model_copy(update={"lr": 0.05})])
    assert "fp16" in why_not_stacked([_config(1.0, 0).model_copy(update={"precision": "fp16"})])
    assert why_not_stacked([_config(1.0, 0), _config(WAR, 7)]) is None
    assert "cannot be stacked" in stackable("smallcnn", create_model("smallcnn", 10, 1, 28))
    assert "cannot be stacked" in stackable("densenet40-bc-k12", create_model("densenet40-bc-k12", 10, 3, 32))


def _histories(trainers: list[Trainer]) -> list[list[tuple[float, ...]]]:
    return [[(r.l_nat, r.l_rob, r.lambda_last, r.val_nat_acc, r.val_rob_acc, r.val_stability) for r in t.history] for t in trainers]


def test_a_stack_resumes_from_its_members_resume_points_as_if_never_stopped(digits, float64_batches):
    """Stopped after epoch 1 of 3, each member's lone resume point loaded into a new stack:
    the same records, step traces and best weights as the stack that never stopped."""
    configs = [_config(lam, seed, "madry", "cnn-8", epochs=3) for lam, seed in MEMBERS[:3]]
    whole = StackedTrainer([_double(Trainer(c, digits)) for c in configs])
    whole.fit()
    first = StackedTrainer([_double(Trainer(c, digits)) for c in configs])
    first.run_epoch()
    points = first.state_dicts()
    members = [_double(Trainer(c, digits)) for c in configs]
    for member_id, member in enumerate(members):
        member.load_state_dict(points[member_id])
    resumed = StackedTrainer(members)
    assert resumed.epoch == 1
    resumed.fit()
    assert _histories(resumed.members) == _histories(whole.members)
    for a, b in zip(resumed.members, whole.members, strict=True):
        assert [t.lambda_t for t in a.step_traces] == [t.lambda_t for t in b.step_traces]
        torch.testing.assert_close(a.best_state, b.best_state, rtol=0, atol=0)


def test_a_member_stopped_by_a_scheduler_leaves_the_others_as_they_were(digits, float64_batches):
    """ASHA stops member 0 after epoch 1: the stack shrinks, and the others' runs are their lone runs."""
    configs = [_config(lam, seed, "madry", "cnn-8", epochs=2) for lam, seed in MEMBERS[:3]]
    stack = StackedTrainer([_double(Trainer(c, digits)) for c in configs])
    stack.run_epoch()
    stack.drop([0], "stopped")
    assert (stack.size, stack.ids, stack.dropped) == (2, [1, 2], {0: "stopped"})
    stack.fit()
    lone = [_double(Trainer(c, digits)) for c in configs[1:]]
    for t in lone:
        t.fit()
    for a, b in zip(_histories(stack.members), _histories(lone), strict=True):
        torch.testing.assert_close(torch.tensor(a), torch.tensor(b), rtol=1e-9, atol=1e-12)


def test_train_stack_returns_each_configs_train_result_in_order(digits, float64_batches, monkeypatch):
    """The plain-Python entry point: one result per config, as `train` gives it (float64 here,
    through the trainers the stack builds)."""
    from wartune import train, train_stack
    from wartune.engine import stacked_trainer, trainer

    for module in (stacked_trainer, trainer):  # every Trainer built in float64
        built = module.Trainer

        class Float64Trainer(built):  # type: ignore[misc, valid-type]
            def __init__(self, *args, **kwargs) -> None:
                super().__init__(*args, **kwargs)
                self.model.double()

        monkeypatch.setattr(module, "Trainer", Float64Trainer)
    configs = [_config(lam, seed, "madry", "cnn-8", epochs=2) for lam, seed in MEMBERS[:3]]
    stacked = train_stack(configs, digits)
    for config, result in zip(configs, stacked, strict=True):
        alone = train(config, data=digits)
        assert result.config == config and result.best_epoch == alone.best_epoch
        assert [(r.val_nat_acc, r.val_rob_acc) for r in result.history] == [(r.val_nat_acc, r.val_rob_acc) for r in alone.history]
