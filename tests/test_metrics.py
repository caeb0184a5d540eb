"""Robust ⇔ correct ∧ stable, per example (paper Sec. 3.1), and the aggregates."""

import pytest
import torch

from wartune.engine import metrics as metrics_module
from wartune.engine.metrics import ExampleFlags, example_flags, summarize


def test_flags_by_hand():
    y = torch.tensor([0, 1, 2, 3])
    pred_nat = torch.tensor([0, 1, 0, 3])
    pred_adv = torch.tensor([0, 2, 2, 1])
    f = example_flags(pred_nat, pred_adv, y)
    assert f.correct.tolist() == [True, True, False, True]
    assert f.stable.tolist() == [True, False, False, False]
    # example 2: the attack lands on the right class from a wrong prediction: not robust
    assert f.robust.tolist() == [True, False, False, False]
    m = summarize(f, torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert (m.nat_acc, m.rob_acc, m.stability, m.lipschitz, m.n) == (0.75, 0.25, 0.25, 2.5, 4)


@pytest.mark.parametrize("seed", range(5))
def test_robust_iff_correct_and_stable_for_every_example(seed):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (500,), generator=g)
    pred_nat = torch.randint(0, 4, (500,), generator=g)
    pred_adv = torch.where(torch.rand(500, generator=g) < 0.5, pred_nat, torch.randint(0, 4, (500,), generator=g))
    f = example_flags(pred_nat, pred_adv, y)
    assert torch.equal(f.robust, f.correct & f.stable)


def test_summarize_refuses_empty_sets():
    empty = torch.zeros(0, dtype=torch.long)
    with pytest.raises(ValueError, match="no examples to summarise"):
        summarize(example_flags(empty, empty, empty), torch.zeros(0))


def test_flags_of_batches_join_in_order_and_a_test_result_is_their_summary():
    # two batches of a test split, as `evaluate_flags` collects them
    first = example_flags(torch.tensor([0, 1, 0]), torch.tensor([0, 2, 2]), torch.tensor([0, 1, 2]))
    second = example_flags(torch.tensor([3, 3]), torch.tensor([3, 1]), torch.tensor([3, 3]))
    every = ExampleFlags.cat([first, second])
    assert every.correct.tolist() == [True, True, False, True, True]
    assert every.stable.tolist() == [True, False, False, True, False]
    assert every.robust.tolist() == [True, False, False, True, False]
    assert every.robust.device.type == "cpu"
    result = metrics_module.TestResult(summarize(every, torch.tensor([1.0, 1.0, 1.0, 2.0, 5.0])), every)
    assert (result.metrics.nat_acc, result.metrics.rob_acc, result.metrics.stability, result.metrics.lipschitz, result.metrics.n) == (
        pytest.approx(0.8), pytest.approx(0.4), pytest.approx(0.4), 2.0, 5,
    )  # fmt: skip
    assert result.metrics.rob_acc == result.flags.robust.float().mean().item()


def test_summarising_no_examples_is_refused_with_the_reason():
    empty = ExampleFlags(torch.zeros(0, dtype=torch.bool), torch.zeros(0, dtype=torch.bool), torch.zeros(0, dtype=torch.bool))
    with pytest.raises(ValueError, match="^no examples to summarise$"):
        summarize(empty, torch.zeros(0))
