"""The colour-image networks (CIFAR ResNet-18, torchvision ResNet-18s) and the feature
interface every registered model has."""

import math

import pytest
import torch
import torchvision
from torch import nn

from debiaskit.errors import ConfigError
from debiaskit.models import MODELS, build_model, feature_extractor
from debiaskit.models.resnet18 import IMAGENET_MEAN, IMAGENET_STD
from parity import require_data

SHAPES = {name: [(3, 32, 32), (3, 64, 64)] for name in MODELS}
SHAPES["resnet18_imagenet"] = [(3, 32, 32), (3, 224, 224)]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small CPU convolutions run faster single-threaded (no idle OpenMP threads spinning
    on a shared machine); the previous setting is restored."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def cifar(data_dir):
    """The first 16 real CIFAR-10 training images as float NCHW in [0, 1], and labels."""
    require_data("cifar10.npz")
    from debiaskit.data.sources import load_source
    src = load_source("cifar10", data_dir)
    x = torch.from_numpy(src.x_train[:16].copy()).permute(0, 3, 1, 2).float().div(255)
    return x, torch.from_numpy(src.y_train[:16].copy()).long()


@pytest.mark.slow
@pytest.mark.parametrize("name", list(MODELS))
def test_every_model_has_the_feature_interface(name):
    for n, shape in zip((2, 1), SHAPES[name]):
        torch.manual_seed(0)
        net = build_model(name, shape, 7).eval()
        x = torch.rand(n, *shape)
        with torch.no_grad():
            feats = net.forward_features(x)
            logits = net(x)
            assert feats.shape == (n, net.num_features) and logits.shape == (n, 7)
            assert torch.equal(logits, net.forward_head(feats))
            assert torch.equal(net.forward_head(feats, pre_logits=True), feats)
            assert torch.equal(net.features(x), feats)  # the older names are aliases
        assert net.feature_dim == net.num_features
        assert net.get_classifier().in_features == net.num_features


@pytest.mark.parametrize("name", list(MODELS))
def test_feature_extractor_works_for_every_model(name):
    torch.manual_seed(0)
    net = build_model(name, (3, 32, 32), 5).eval()
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        want = net.forward_features(x)
        encoder, dim = feature_extractor(net)
        assert dim == want.shape[1] and torch.equal(encoder(x), want)
    assert not any(isinstance(m, nn.Linear) and m.out_features == 5 for m in encoder.modules())


def test_state_dict_keys_are_the_earlier_ones():
    """SiH's resnet18 keeps torchvision's keys, init and forward; DisEnt's encoders keep
    their key layout (torchvision nets unwrapped, this package's nets wrapped)."""
    torch.manual_seed(0)
    net = build_model("resnet18", (3, 32, 32), 10).eval()
    plain = torchvision.models.resnet18(weights=None, num_classes=10)
    assert list(net.state_dict()) == list(plain.state_dict())
    assert net.conv1.kernel_size == (4, 4) and isinstance(net.maxpool, nn.Identity)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(net(x), torchvision.models.ResNet._forward_impl(net, x))
    encoder, _ = feature_extractor(net)
    assert encoder is net and "conv1.weight" in encoder.state_dict()
    encoder, _ = feature_extractor(build_model("mlp", (3, 28, 28), 10))
    assert list(encoder.state_dict()) == [f"net.body.{i}.{p}" for i in (1, 3, 5)
                                          for p in ("weight", "bias")]


def test_resnet18_cifar_layout_and_size():
    net = build_model("resnet18_cifar", (3, 32, 32), 10)
    assert sum(p.numel() for p in net.parameters()) == 11_173_962
    assert not any(isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)) for m in net.modules())
    assert (net.conv1.kernel_size, net.conv1.stride, net.conv1.out_channels) == ((3, 3), (1, 1), 64)
    projections = [m for m in net.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)]
    assert [(p.in_channels, p.out_channels, p.stride) for p in projections] == [
        (64, 128, (2, 2)), (128, 256, (2, 2)), (256, 512, (2, 2))]
    for stage in (net.layer2, net.layer3, net.layer4):
        shortcut = stage[0].shortcut
        assert isinstance(shortcut[0], nn.Conv2d) and isinstance(shortcut[1], nn.BatchNorm2d)
        assert isinstance(stage[1].shortcut, nn.Identity)
    assert isinstance(net.layer1[0].shortcut, nn.Identity)
    seen = {}
    net.layer4.register_forward_hook(lambda m, i, out: seen.update(map=out))
    with torch.no_grad():
        feats = net.eval().forward_features(torch.rand(2, 3, 32, 32))
    assert seen["map"].shape == (2, 512, 4, 4)  # the average pool runs over the final 4 x 4 map
    # summed as the authors' avg_pool2d(x, 4) sums it (bit-equal: the Domain-Independent
    # parity fixture needs it), the same mean as adaptive pooling up to rounding
    assert torch.equal(feats, nn.functional.avg_pool2d(seen["map"], 4).flatten(1))
    assert torch.allclose(feats, seen["map"].mean((2, 3)), atol=1e-6)


def test_resnet18_cifar_normalises_inside_and_checks_its_options():
    torch.manual_seed(0)
    plain = build_model("resnet18_cifar", (3, 32, 32), 10).eval()
    mean, std = [0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]
    normed = build_model("resnet18_cifar", (3, 32, 32), 10, mean=mean, std=std).eval()
    normed.load_state_dict({**plain.state_dict(), "mean": normed.mean, "std": normed.std})
    x = torch.rand(2, 3, 32, 32)
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(normed(x), plain((x - m) / s), atol=1e-5)
    with pytest.raises(ConfigError, match="one value per channel"):
        build_model("resnet18_cifar", (3, 32, 32), 10, mean=[0.5])


def _reference_resnet18(seed=0):
    """A fresh torchvision resnet18 with random weights and non-trivial BN statistics."""
    torch.manual_seed(seed)
    ref = torchvision.models.resnet18(weights=None)
    for m in ref.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            nn.init.uniform_(m.weight, 0.5, 1.5)
    return ref.eval()


@pytest.mark.slow
def test_resnet18_imagenet_loads_a_local_state_dict(tmp_path):
    ref = _reference_resnet18()
    path = tmp_path / "resnet18.pth"
    torch.save(ref.state_dict(), path)
    x = torch.rand(2, 3, 64, 64)
    ref.fc = nn.Identity()
    net = build_model("resnet18_imagenet", (3, 64, 64), 6, weights=str(path)).eval()
    raw = build_model("resnet18_imagenet", (3, 64, 64), 6, weights=str(path),
                      normalize=False).eval()
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.equal(raw.forward_features(x), ref(x))
        assert torch.equal(net.forward_features(x), ref((x - mean) / std))
    assert net.fc.weight.shape == (6, 512) and net(x).shape == (2, 6)
    legacy = tmp_path / "legacy.pth"  # saved before BN counted batches; any fc size
    torch.save({k: v for k, v in _reference_resnet18().state_dict().items()
                if not k.endswith("num_batches_tracked") and not k.startswith("fc.")}
               | {"fc.weight": torch.zeros(3, 512), "fc.bias": torch.zeros(3)}, legacy)
    old = build_model("resnet18_imagenet", (3, 64, 64), 6, weights=str(legacy)).eval()
    with torch.no_grad():
        assert torch.equal(old.forward_features(x), net.forward_features(x))
    fresh = build_model("resnet18_imagenet", (3, 64, 64), 6)
    assert float(fresh.mean.abs().sum()) == 0.0 and float((fresh.std - 1).abs().sum()) == 0.0
    assert not torch.equal(fresh.conv1.weight, raw.conv1.weight)


def test_resnet18_imagenet_refuses_bad_weight_files(tmp_path):
    good = tmp_path / "good.pth"
    torch.save(_reference_resnet18().state_dict(), good)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[:100_000])
    foreign = tmp_path / "foreign.pth"
    torch.save(build_model("resnet18_cifar", (3, 32, 32), 10).state_dict(), foreign)
    reshaped = tmp_path / "reshaped.pth"  # SiH's variant: the same keys, a 4 x 4 stem
    torch.save(build_model("resnet18", (3, 32, 32), 10).state_dict(), reshaped)
    nested = tmp_path / "nested.pth"
    torch.save({"epoch": 3, "conv1.weight": [1, 2]}, nested)
    pickled = tmp_path / "model.pth"  # a whole module, not its state dict
    torch.save(build_model("resnet20", (3, 32, 32), 10), pickled)
    cases = [(tmp_path / "absent.pth", "not found"), (truncated, "cannot read"),
             (foreign, "missing keys"), (reshaped, "wrong shapes conv1.weight"),
             (nested, "not a state dict"), (pickled, "not a state dict")]
    for path, says in cases:
        with pytest.raises(ConfigError, match=says) as err:
            build_model("resnet18_imagenet", (3, 224, 224), 6, weights=str(path))
        assert "\n" not in str(err.value) and "weights=PATH" in str(err.value)
    for shape in ((1, 224, 224), (3, 28, 28)):
        with pytest.raises(ConfigError, match="resnet18_imagenet needs"):
            build_model("resnet18_imagenet", shape, 6)


@pytest.mark.slow
def test_one_sgd_step_on_real_cifar_images_changes_the_loss(cifar):
    x, y = cifar
    torch.manual_seed(0)
    net = build_model("resnet18_cifar", (3, 32, 32), 10, mean=x.mean((0, 2, 3)).tolist(),
                      std=x.std((0, 2, 3)).tolist())
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    loss = nn.functional.cross_entropy(net(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    with torch.no_grad():
        after = float(nn.functional.cross_entropy(net(x), y))
    before = float(loss.detach())
    assert math.isfinite(after) and after < before - 1e-3, (before, after)


def test_resnet20_pools_the_final_map_as_lffs_resnet20():
    """ResNet-20's pooled features are the mean over the final map computed as LfF's
    ResNet-20 does (avg_pool2d with the map as kernel: bit-equal, which the lff-cc10
    parity fixture needs), the same value as adaptive average pooling, for non-square
    maps too."""
    torch.manual_seed(0)
    net = build_model("resnet20", (3, 32, 24), 10)
    seen = {}
    net.stages.register_forward_hook(lambda m, i, out: seen.__setitem__("map", out))
    feats = net.forward_features(torch.rand(2, 3, 32, 24))
    fmap = seen["map"]
    assert fmap.shape[-2:] == (8, 6)
    assert torch.equal(feats, nn.functional.avg_pool2d(fmap, (8, 6)).flatten(1))
    assert torch.allclose(feats, fmap.mean((2, 3)), atol=1e-6)
