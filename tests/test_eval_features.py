"""The feature networks: the tiny seeded net, batching invariance, and the FID Inception loading
a state dict in pytorch-fid's layout (built here from a table of its layers, random values)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from i2i.eval.features import (
    FeatureBatches,
    FeatureError,
    TinyFeatures,
    describe,
    features,
    open_features,
)
from i2i.eval.inception import InceptionError, _mean_pool, load_inception


def pictures(count: int, seed: int = 0) -> list[torch.Tensor]:
    """(3, H, W) uint8 pictures of varied sizes."""
    rng = np.random.default_rng(seed)
    return [torch.from_numpy(rng.integers(0, 256, (3, 20 + 3 * i, 24 + i))).to(torch.uint8)
            for i in range(count)]


def test_the_tiny_net_is_the_same_on_every_build_and_says_it_is_not_comparable():
    x = pictures(3)
    a, b = features(TinyFeatures(), x), features(TinyFeatures(), x)
    assert a.shape == (3, 128) and np.array_equal(a, b)
    assert not np.allclose(a[0], a[1])
    about = describe(open_features("tiny"))
    assert about["comparable"] is False and "NOT comparable" in about["note"]


@pytest.mark.parametrize("batch", [1, 2, 5])
def test_features_do_not_depend_on_the_batch(batch):
    net = TinyFeatures()
    x = pictures(5)
    one_by_one = np.concatenate([features(net, [p], batch_size=1) for p in x])
    np.testing.assert_allclose(features(net, x, batch_size=batch), one_by_one, rtol=1e-5,
                               atol=1e-6)


def test_a_batch_of_no_pictures_is_refused():
    with pytest.raises(ValueError, match="the feature batch size must be at least 1, got 0"):
        FeatureBatches(TinyFeatures(), batch_size=0)


@pytest.mark.parametrize("name, weights, message", [
    ("inception", None, "FID needs the Inception weights: --inception PATH, see README"),
    ("tiny", "x.pth", "'tiny' takes none: leave out --inception"),
    ("vgg", None, "unknown feature network 'vgg'; known: inception, tiny"),
])
def test_feature_networks_asked_wrongly_are_refused(name, weights, message):
    with pytest.raises(FeatureError, match=message.replace("(", r"\(")):
        open_features(name, weights)


# pytorch-fid's pt_inception-2015-12-05 layout, written from torchvision's Inception3 layers:
# (name, in channels, out channels, kernel height, kernel width) of each conv + BN.
def _block_a(cin: int, pool: int) -> list[tuple]:
    return [("branch1x1", cin, 64, 1, 1), ("branch5x5_1", cin, 48, 1, 1),
            ("branch5x5_2", 48, 64, 5, 5), ("branch3x3dbl_1", cin, 64, 1, 1),
            ("branch3x3dbl_2", 64, 96, 3, 3), ("branch3x3dbl_3", 96, 96, 3, 3),
            ("branch_pool", cin, pool, 1, 1)]


def _block_c(c7: int) -> list[tuple]:
    return [("branch1x1", 768, 192, 1, 1), ("branch7x7_1", 768, c7, 1, 1),
            ("branch7x7_2", c7, c7, 1, 7), ("branch7x7_3", c7, 192, 7, 1),
            ("branch7x7dbl_1", 768, c7, 1, 1), ("branch7x7dbl_2", c7, c7, 7, 1),
            ("branch7x7dbl_3", c7, c7, 1, 7), ("branch7x7dbl_4", c7, c7, 7, 1),
            ("branch7x7dbl_5", c7, 192, 1, 7), ("branch_pool", 768, 192, 1, 1)]


def _block_e(cin: int) -> list[tuple]:
    return [("branch1x1", cin, 320, 1, 1), ("branch3x3_1", cin, 384, 1, 1),
            ("branch3x3_2a", 384, 384, 1, 3), ("branch3x3_2b", 384, 384, 3, 1),
            ("branch3x3dbl_1", cin, 448, 1, 1), ("branch3x3dbl_2", 448, 384, 3, 3),
            ("branch3x3dbl_3a", 384, 384, 1, 3), ("branch3x3dbl_3b", 384, 384, 3, 1),
            ("branch_pool", cin, 192, 1, 1)]


LAYERS = [("Conv2d_1a_3x3", 3, 32, 3, 3), ("Conv2d_2a_3x3", 32, 32, 3, 3),
          ("Conv2d_2b_3x3", 32, 64, 3, 3), ("Conv2d_3b_1x1", 64, 80, 1, 1),
          ("Conv2d_4a_3x3", 80, 192, 3, 3)]
BLOCKS = {
    "Mixed_5b": _block_a(192, 32), "Mixed_5c": _block_a(256, 64), "Mixed_5d": _block_a(288, 64),
    "Mixed_6a": [("branch3x3", 288, 384, 3, 3), ("branch3x3dbl_1", 288, 64, 1, 1),
                 ("branch3x3dbl_2", 64, 96, 3, 3), ("branch3x3dbl_3", 96, 96, 3, 3)],
    "Mixed_6b": _block_c(128), "Mixed_6c": _block_c(160), "Mixed_6d": _block_c(160),
    "Mixed_6e": _block_c(192),
    "Mixed_7a": [("branch3x3_1", 768, 192, 1, 1), ("branch3x3_2", 192, 320, 3, 3),
                 ("branch7x7x3_1", 768, 192, 1, 1), ("branch7x7x3_2", 192, 192, 1, 7),
                 ("branch7x7x3_3", 192, 192, 7, 1), ("branch7x7x3_4", 192, 192, 3, 3)],
    "Mixed_7b": _block_e(1280), "Mixed_7c": _block_e(2048),
}


def pytorch_fid_state(counters: bool = True, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random state dict with the key names and shapes of pytorch-fid's weights file."""
    g = torch.Generator().manual_seed(seed)
    layers = LAYERS + [(f"{block}.{name}", *rest) for block, convs in BLOCKS.items()
                       for name, *rest in convs]
    state = {}
    for name, cin, cout, kh, kw in layers:
        state[f"{name}.conv.weight"] = torch.randn(cout, cin, kh, kw, generator=g) * \
            (2 / (cin * kh * kw)) ** 0.5
        state[f"{name}.bn.weight"] = 1 + 0.1 * torch.randn(cout, generator=g)
        state[f"{name}.bn.bias"] = 0.1 * torch.randn(cout, generator=g)
        state[f"{name}.bn.running_mean"] = 0.1 * torch.randn(cout, generator=g)
        state[f"{name}.bn.running_var"] = 1 + torch.rand(cout, generator=g)
        if counters:
            state[f"{name}.bn.num_batches_tracked"] = torch.tensor(0)
    state["fc.weight"] = 0.01 * torch.randn(1008, 2048, generator=g)
    state["fc.bias"] = torch.zeros(1008)
    return state


def test_the_layout_table_has_the_file_s_documented_keys():
    state = pytorch_fid_state()
    assert len(LAYERS) + sum(map(len, BLOCKS.values())) == 94          # conv + BN layers
    assert len(state) == 94 * 6 + 2
    assert state["Conv2d_1a_3x3.conv.weight"].shape == (32, 3, 3, 3)
    assert state["Mixed_5b.branch1x1.conv.weight"].shape == (64, 192, 1, 1)
    assert state["Mixed_7c.branch_pool.conv.weight"].shape == (192, 2048, 1, 1)
    assert state["fc.weight"].shape == (1008, 2048)


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("inception") / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(pytorch_fid_state(), path)
    return path


def test_inception_loads_the_layout_strictly_and_gives_2048_features(weights):
    net = open_features("inception", weights)
    assert describe(net) == {"network": "inception", "dim": 2048, "comparable": True}
    x = pictures(2)
    got = features(net, x, batch_size=2)                     # two 299x299 forwards
    assert got.shape == (2, 2048) and np.isfinite(got).all() and (got >= 0).all()
    assert not np.allclose(got[0], got[1])
    alone = np.concatenate([features(net, [p], batch_size=1) for p in x])   # two more forwards
    np.testing.assert_allclose(got, alone, rtol=1e-5, atol=1e-6)
    loaded = net.state_dict()
    state = pytorch_fid_state()
    for key in ("Conv2d_1a_3x3.conv.weight", "Mixed_6e.branch7x7dbl_5.bn.running_var",
                "fc.weight"):
        assert torch.equal(loaded[key], state[key])


def test_inception_loads_a_file_without_batch_counters(tmp_path):
    path = tmp_path / "old.pth"
    torch.save(pytorch_fid_state(counters=False), path)
    assert load_inception(path).Mixed_7c.max_pool           # the FID graph's max pool branch


def test_the_fid_blocks_leave_padding_out_of_their_means():
    ones = torch.ones(1, 2, 5, 5)
    assert torch.equal(_mean_pool(ones), ones)              # counting the padding gives 4/9


def _saved(tmp_path: Path, state) -> Path:
    path = tmp_path / "w.pth"
    torch.save(state, path)
    return path


@pytest.mark.parametrize("change, message", [
    (lambda s: s.pop("Mixed_6b.branch7x7_2.conv.weight"),
     "missing (1): Mixed_6b.branch7x7_2.conv.weight"),
    (lambda s: s.update({"AuxLogits.fc.weight": torch.zeros(1000, 768)}),
     "unexpected (1): AuxLogits.fc.weight"),
    (lambda s: s.update({"fc.weight": torch.zeros(1000, 2048)}),
     "mis-shaped (1): fc.weight (1000, 2048) (expected (1008, 2048))"),
])
def test_a_state_dict_of_another_layout_is_refused_naming_the_keys(tmp_path, change, message):
    state = pytorch_fid_state()
    change(state)
    with pytest.raises(InceptionError) as err:
        load_inception(_saved(tmp_path, state))
    assert message in str(err.value) and "pytorch-fid layout" in str(err.value)


def test_missing_unreadable_and_non_state_dict_files_are_refused(tmp_path):
    with pytest.raises(InceptionError, match="not found; give the path of pt_inception"):
        load_inception(tmp_path / "nowhere.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file" * 10)
    with pytest.raises(InceptionError, match="could not read .* as a PyTorch state dict"):
        load_inception(garbage)
    with pytest.raises(InceptionError, match="holds no state dict of tensors"):
        load_inception(_saved(tmp_path, [torch.zeros(3)]))
