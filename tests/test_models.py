"""The model registry: names, fractional widths, parameter counts, errors."""

import pytest
import torch

from wartune.engine.models import check_model_name, create_model, model_width
from wartune.errors import ModelNameError


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_wrn34_10_has_the_standard_parameter_count_on_cifar10():
    assert _params(create_model("wrn34-10", 10, 3, 32)) == 46_160_474


@pytest.mark.parametrize(
    ("name", "published"),
    [
        ("wrn28-10", 36_479_194),  # RobustBench's default architecture (Zagoruyko & Komodakis: 36.5 M)
        ("resnet18-1", 11_173_962),  # pytorch-cifar's ResNet18 on CIFAR-10
        # pytorch-cifar's PreActResNet18 (11,171,146) plus Rice et al.'s last BatchNorm2d(512): 1,024 more
        ("preactresnet18-1", 11_172_170),
    ],
)
def test_the_cifar_baselines_have_their_published_parameter_counts(name, published):
    assert _params(create_model(name, 10, 3, 32)) == published


def test_resnet_width_scales_every_stage_and_the_thin_net_stacks():
    from wartune.engine.stacking import stack_models, stackable

    thin = create_model("preactresnet18-0.5", 10, 3, 32)
    assert thin.linear.in_features == 256 and thin.conv1.out_channels == 32 and model_width("resnet18-0.5") == 0.5
    assert stackable("preactresnet18-0.5", thin) is None and stackable("resnet18-0.5", create_model("resnet18-0.5")) is None
    members = [create_model("resnet18-0.25", 10, 1, 8).eval() for _ in range(2)]
    x = torch.rand(3, 1, 8, 8)
    grouped = stack_models(members).eval()
    from wartune.engine.stacking import StackedNet

    out = StackedNet(grouped, 2)(torch.cat([x, x]))  # each member's logits from the grouped net are its own
    assert torch.allclose(out[:3], members[0](x), atol=1e-5) and torch.allclose(out[3:], members[1](x), atol=1e-5)


def test_fractional_widen_factor_gives_a_thinner_net():
    thin, one = create_model("wrn34-0.5", 10, 3, 32), create_model("wrn34-1", 10, 3, 32)
    assert _params(thin) < _params(one)
    assert thin.fc.in_features == 32 and one.fc.in_features == 64


@pytest.mark.parametrize(
    "name", ["wrn34-0.5", "wrn16-2", "wrn10-1", "resnet18-0.25", "preactresnet18-0.25", "densenet40-bc-k12", "cnn-16", "mlp-32"]
)
@pytest.mark.parametrize("shape", [(1, 8, 10), (3, 32, 100)])
def test_every_family_runs_on_digits_and_cifar_shapes(name, shape):
    channels, size, classes = shape
    model = create_model(name, classes, channels, size).eval()
    with torch.no_grad():
        out = model(torch.rand(2, channels, size, size))
    assert out.shape == (2, classes)


@pytest.mark.parametrize("shape", [(1, 28, 10), (3, 32, 100)])
def test_smallcnn_is_trades_mnist_network(shape):
    channels, size, classes = shape
    model = create_model("smallcnn", classes, channels, size).eval()
    with torch.no_grad():
        out = model(torch.rand(2, channels, size, size))
    assert out.shape == (2, classes) and torch.all(out == 0)  # TRADES zero-initialises the last layer
    if shape == (1, 28, 10):
        assert _params(model) == 312_202  # conv 32-32-64-64, fc 1024-200-200-10


def test_smallcnn_refuses_images_below_16_pixels():
    check_model_name("smallcnn", 16)
    with pytest.raises(ModelNameError, match="at least 16 pixels; this dataset's are 8"):
        check_model_name("smallcnn", 8)


def test_width_of_each_family():
    assert [model_width(n) for n in ("wrn34-0.5", "densenet40-bc-k64", "mlp-256", "smallcnn")] == [0.5, 64.0, 256.0, 32.0]


@pytest.mark.parametrize("name", ["resnet18", "wrn34", "wrn33-1", "wrn34-0", "mlp-x"])
def test_unknown_or_malformed_names_list_the_families(name):
    with pytest.raises(ModelNameError) as err:
        create_model(name)
    assert name in str(err.value)
    if "depth" not in str(err.value) and "width" not in str(err.value):
        assert "wrn" in str(err.value) and "mlp" in str(err.value)
