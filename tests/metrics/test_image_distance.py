"""FID Inception architecture and weight loading, and the Fréchet distance (FID / proxy)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import linalg

from implicit_slots.metrics import (
    FIDInceptionV3,
    ProxyFeatureExtractor,
    build_image_distance,
    load_fid_inception,
)


def test_inception_matches_the_published_architecture() -> None:
    model = FIDInceptionV3()
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 94  # InceptionV3 without the auxiliary head has 94 convolutions
    # torchvision's inception_v3 has 27,161,264 parameters; minus its 1000-way fc (2,049,000) and the
    # auxiliary classifier (3,326,696) leaves the 21,785,568 of the feature network.
    assert sum(p.numel() for p in model.parameters()) == 21_785_568
    state = model.state_dict()
    landmarks = {
        "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
        "Conv2d_4a_3x3.bn.running_var": (192,),
        "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
        "Mixed_6e.branch7x7dbl_5.conv.weight": (192, 192, 1, 7),
        "Mixed_7a.branch3x3_2.conv.weight": (320, 192, 3, 3),
        "Mixed_7c.branch3x3dbl_3b.conv.weight": (384, 384, 3, 1),
        "Mixed_7c.branch_pool.conv.weight": (192, 2048, 1, 1),
    }
    for key, shape in landmarks.items():
        assert tuple(state[key].shape) == shape, key


def _random_weights_file(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """A file laid out like pytorch-fid's: fc.* present, no BatchNorm counters, random values."""
    generator = torch.Generator().manual_seed(1)
    state = {}
    for key, value in FIDInceptionV3().state_dict().items():
        if key.endswith("num_batches_tracked"):
            continue
        if key.endswith("conv.weight"):  # scaled so that activations stay finite through 94 layers
            state[key] = torch.randn(value.shape, generator=generator) / value[0].numel() ** 0.5
        elif key.endswith(("running_var", "bn.weight")):
            state[key] = torch.rand(value.shape, generator=generator) + 0.5
        else:
            state[key] = torch.randn(value.shape, generator=generator) * 0.1
    state["fc.weight"] = torch.zeros(1008, 2048)
    state["fc.bias"] = torch.zeros(1008)
    path = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(state, path)
    return path, state


def test_load_weights_file(tmp_path: Path) -> None:
    path, state = _random_weights_file(tmp_path)
    model = load_fid_inception(path)
    loaded = model.state_dict()
    torch.testing.assert_close(
        loaded["Mixed_6b.branch7x7_2.conv.weight"], state["Mixed_6b.branch7x7_2.conv.weight"]
    )
    torch.testing.assert_close(
        loaded["Mixed_7c.branch_pool.bn.running_mean"], state["Mixed_7c.branch_pool.bn.running_mean"]
    )
    model.train()  # must stay frozen
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    features = model(torch.rand(2, 3, 32, 32))
    assert features.shape == (2, 2048) and torch.isfinite(features).all()
    assert build_image_distance(path).name == "fid"


def test_missing_or_mismatched_weights_raise(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"never downloaded.*proxy"):
        load_fid_inception(tmp_path / "absent.pth")
    path, state = _random_weights_file(tmp_path)
    state["Mixed_5b.branch_pool.conv.kernel"] = state.pop("Mixed_5b.branch_pool.conv.weight")
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"1 missing key\(s\) \['Mixed_5b.branch_pool.conv.weight'\]"):
        load_fid_inception(path)
    state["Mixed_5b.branch_pool.conv.weight"] = torch.zeros(64, 192, 1, 1)
    del state["Mixed_5b.branch_pool.conv.kernel"]
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"Mixed_5b.branch_pool.conv.weight: file \(64, 192, 1, 1\)"):
        load_fid_inception(path)


def _frechet_reference(real: np.ndarray, fake: np.ndarray) -> float:
    mu_r, mu_f = real.mean(0), fake.mean(0)
    sigma_r, sigma_f = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
    root = linalg.sqrtm(sigma_r @ sigma_f).real
    return float(((mu_r - mu_f) ** 2).sum() + np.trace(sigma_r + sigma_f - 2 * root))


def test_proxy_distance_matches_scipy_reference() -> None:
    distance = build_image_distance(None)
    assert distance.name == "proxy_feature_distance"
    real = torch.rand(300, 3, 16, 16)
    fake = (torch.rand(300, 3, 16, 16) * 0.6 + 0.2).clamp(0, 1)
    distance.update(real[:150], real=True)
    distance.update(real[150:], real=True)
    distance.update(fake, real=False)
    extractor = ProxyFeatureExtractor(seed=0)
    with torch.no_grad():
        expected = _frechet_reference(extractor(real).double().numpy(), extractor(fake).double().numpy())
    assert expected > 1e-3
    assert distance.compute() == pytest.approx(expected, rel=1e-4)


def test_a_set_against_itself_is_zero() -> None:
    distance = build_image_distance(None)
    images = torch.rand(64, 3, 20, 20)
    distance.update(images, real=True)
    distance.update(images, real=False)
    assert abs(distance.compute()) < 1e-6
    distance.reset()
    with pytest.raises(ValueError, match="need at least 2 real and 2 generated"):
        distance.compute()


def test_proxy_extractor_is_fixed_by_its_seed() -> None:
    images = torch.rand(3, 3, 40, 40)
    torch.manual_seed(123)  # the global seed must not matter
    first = ProxyFeatureExtractor(seed=0)(images)
    torch.manual_seed(456)
    torch.testing.assert_close(ProxyFeatureExtractor(seed=0)(images), first)
    assert not torch.allclose(ProxyFeatureExtractor(seed=1)(images), first)
