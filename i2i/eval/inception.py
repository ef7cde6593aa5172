"""The FID Inception-v3: the network published FID numbers are measured with.

FID is defined by one network, the TensorFlow Inception graph of 2015-12-05. pytorch-fid
converted its weights to a PyTorch state dict, `pt_inception-2015-12-05-6726825d.pth`, whose
key names follow torchvision's Inception3 (`Conv2d_1a_3x3.conv.weight`,
`Mixed_5b.branch1x1.bn.running_mean`, ..., `Mixed_7c.branch_pool.conv.weight`, `fc.weight` for
its 1008 classes). This module computes the same function under those names, so that file
loads strictly (every key, every shape), and it differs from an ImageNet Inception-v3 where the
TensorFlow graph does:

- batch norm with eps 1e-3 after every convolution (which has no bias);
- the average pools of the A and C blocks and of the first E block (Mixed_7b) leave the padding
  out of each mean (count_include_pad=False);
- the last E block (Mixed_7c) pools its pool branch with a max, not an average;
- pictures are resized to 299 x 299 (bilinear, align_corners=False) and taken in [-1, 1]
  (i2i's image range: pixel / 127.5 - 1).

The features are the 2048 channels after Mixed_7c, averaged over positions (the graph's
`pool_3`). `fc` is loaded, as the file holds it, but never run.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

SIZE = 299                  # the side every picture is resized to
DIM = 2048                  # features per picture
CLASSES = 1008              # fc's outputs in the converted file
WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
# Present or absent in a file depending on the PyTorch that saved it; never used in eval mode.
OPTIONAL = "num_batches_tracked"


class InceptionError(ValueError):
    """A weights file that is not the FID Inception's state dict."""


def resized(x: torch.Tensor, size: int) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, size, size), bilinear as the FID reference resizes."""
    if x.shape[-2:] == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


class Conv(nn.Module):
    """conv (no bias) -> batch norm (eps 1e-3) -> ReLU; keys conv.weight and bn.*."""

    def __init__(self, cin: int, cout: int, kernel: int | tuple[int, int], stride: int = 1,
                 padding: int | tuple[int, int] = 0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _mean_pool(x: torch.Tensor) -> torch.Tensor:
    """3x3 average, stride 1, padding 1, the padding left out of each mean (the TF graph's)."""
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class BlockA(nn.Module):
    """Mixed_5b/5c/5d: 1x1, 5x5, double 3x3 and pool branches -> 224 + pool channels."""

    def __init__(self, cin: int, pool: int):
        super().__init__()
        self.branch1x1 = Conv(cin, 64, 1)
        self.branch5x5_1 = Conv(cin, 48, 1)
        self.branch5x5_2 = Conv(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = Conv(cin, 64, 1)
        self.branch3x3dbl_2 = Conv(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = Conv(96, 96, 3, padding=1)
        self.branch_pool = Conv(cin, pool, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        five = self.branch5x5_2(self.branch5x5_1(x))
        double = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), five, double, self.branch_pool(_mean_pool(x))], 1)


class BlockB(nn.Module):
    """Mixed_6a: 288 -> 768 channels at half the size (stride-2 3x3s and a max pool)."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = Conv(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = Conv(cin, 64, 1)
        self.branch3x3dbl_2 = Conv(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = Conv(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        double = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), double, F.max_pool2d(x, 3, stride=2)], 1)


def _seven(cin: int, cout: int, across: bool) -> Conv:
    """A factorised 7x7 half: 1x7 (across) or 7x1, padded to keep the size."""
    return Conv(cin, cout, (1, 7), padding=(0, 3)) if across else \
        Conv(cin, cout, (7, 1), padding=(3, 0))


class BlockC(nn.Module):
    """Mixed_6b..6e: 768 -> 768 channels with factorised 7x7 branches of width `c7`."""

    def __init__(self, cin: int, c7: int):
        super().__init__()
        self.branch1x1 = Conv(cin, 192, 1)
        self.branch7x7_1 = Conv(cin, c7, 1)
        self.branch7x7_2 = _seven(c7, c7, across=True)
        self.branch7x7_3 = _seven(c7, 192, across=False)
        self.branch7x7dbl_1 = Conv(cin, c7, 1)
        self.branch7x7dbl_2 = _seven(c7, c7, across=False)
        self.branch7x7dbl_3 = _seven(c7, c7, across=True)
        self.branch7x7dbl_4 = _seven(c7, c7, across=False)
        self.branch7x7dbl_5 = _seven(c7, 192, across=True)
        self.branch_pool = Conv(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seven = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        double = self.branch7x7dbl_1(x)
        for step in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                     self.branch7x7dbl_5):
            double = step(double)
        return torch.cat([self.branch1x1(x), seven, double, self.branch_pool(_mean_pool(x))], 1)


class BlockD(nn.Module):
    """Mixed_7a: 768 -> 1280 channels at half the size."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = Conv(cin, 192, 1)
        self.branch3x3_2 = Conv(192, 320, 3, stride=2)
        self.branch7x7x3_1 = Conv(cin, 192, 1)
        self.branch7x7x3_2 = _seven(192, 192, across=True)
        self.branch7x7x3_3 = _seven(192, 192, across=False)
        self.branch7x7x3_4 = Conv(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        three = self.branch3x3_2(self.branch3x3_1(x))
        seven = self.branch7x7x3_1(x)
        for step in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            seven = step(seven)
        return torch.cat([three, seven, F.max_pool2d(x, 3, stride=2)], 1)


class BlockE(nn.Module):
    """Mixed_7b (mean pool) and Mixed_7c (max pool): -> 2048 channels, split 1x3 / 3x1 heads."""

    def __init__(self, cin: int, max_pool: bool):
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = Conv(cin, 320, 1)
        self.branch3x3_1 = Conv(cin, 384, 1)
        self.branch3x3_2a = Conv(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = Conv(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = Conv(cin, 448, 1)
        self.branch3x3dbl_2 = Conv(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = Conv(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = Conv(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = Conv(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        three = self.branch3x3_1(x)
        three = torch.cat([self.branch3x3_2a(three), self.branch3x3_2b(three)], 1)
        double = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        double = torch.cat([self.branch3x3dbl_3a(double), self.branch3x3dbl_3b(double)], 1)
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _mean_pool(x)
        return torch.cat([self.branch1x1(x), three, double, self.branch_pool(pooled)], 1)


class FidInception(nn.Module):
    """(N, 3, H, W) pictures in [-1, 1] -> (N, 2048) pool_3 features."""

    name = "inception"
    size = SIZE
    dim = DIM
    comparable = True           # the network published FID numbers use (with its weights)

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = Conv(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = Conv(32, 32, 3)
        self.Conv2d_2b_3x3 = Conv(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = Conv(64, 80, 1)
        self.Conv2d_4a_3x3 = Conv(80, 192, 3)
        self.Mixed_5b = BlockA(192, pool=32)
        self.Mixed_5c = BlockA(256, pool=64)
        self.Mixed_5d = BlockA(288, pool=64)
        self.Mixed_6a = BlockB(288)
        self.Mixed_6b = BlockC(768, c7=128)
        self.Mixed_6c = BlockC(768, c7=160)
        self.Mixed_6d = BlockC(768, c7=160)
        self.Mixed_6e = BlockC(768, c7=192)
        self.Mixed_7a = BlockD(768)
        self.Mixed_7b = BlockE(1280, max_pool=False)
        self.Mixed_7c = BlockE(2048, max_pool=True)
        self.fc = nn.Linear(DIM, CLASSES)           # in the file; features stop before it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = resized(x, SIZE)                                                # (N, 3, 299, 299)
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))   # (N, 64, 147, 147)
        x = F.max_pool2d(x, 3, stride=2)                                    # (N, 64, 73, 73)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))                       # (N, 192, 71, 71)
        x = F.max_pool2d(x, 3, stride=2)                                    # (N, 192, 35, 35)
        x = self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(x)))                  # (N, 288, 35, 35)
        x = self.Mixed_6a(x)                                                # (N, 768, 17, 17)
        x = self.Mixed_6e(self.Mixed_6d(self.Mixed_6c(self.Mixed_6b(x))))
        x = self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(x)))                  # (N, 2048, 8, 8)
        return x.mean(dim=(2, 3))                                           # (N, 2048)


def expected_shapes() -> dict[str, tuple[int, ...]]:
    """Every key of the weights file (num_batches_tracked aside) and its shape."""
    return {k: tuple(v.shape) for k, v in FidInception().state_dict().items()
            if not k.endswith(OPTIONAL)}


def load_inception(path: str | Path) -> FidInception:
    """The FID Inception with the weights at `path` (pytorch-fid's file), in eval mode; every
    key and shape checked, InceptionError naming what differs."""
    path = Path(path)
    if not path.is_file():
        raise InceptionError(f"Inception weights {path} not found; give the path of "
                             f"{WEIGHTS_FILE} (see README, 'Evaluating')")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:            # a pickle error, a zip error, a truncated file...
        raise InceptionError(f"could not read {path} as a PyTorch state dict ({err}); give the "
                             f"path of {WEIGHTS_FILE}") from err
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor)
                                              for v in state.values()):
        raise InceptionError(f"{path} holds no state dict of tensors; give the path of "
                             f"{WEIGHTS_FILE}")
    _check_keys(path, state)
    net = FidInception()
    net.load_state_dict({k: v.float() if v.is_floating_point() else v
                         for k, v in state.items()}, strict=False)
    return net.eval()


def _check_keys(path: Path, state: dict[str, torch.Tensor]) -> None:
    expected = expected_shapes()
    given = {k: v for k, v in state.items() if not k.endswith(OPTIONAL)}
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    wrong = sorted(f"{k} {tuple(given[k].shape)} (expected {expected[k]})"
                   for k in set(expected) & set(given) if tuple(given[k].shape) != expected[k])
    problems = [f"{label} ({len(keys)}): {', '.join(keys[:5])}" + (", ..." if len(keys) > 5
                                                                     else "")
                for label, keys in (("missing", missing), ("unexpected", unexpected),
                                    ("mis-shaped", wrong)) if keys]
    if problems:
        raise InceptionError(f"{path} is not the FID Inception's state dict ({WEIGHTS_FILE}, "
                             f"the pytorch-fid layout): " + "; ".join(problems))
