"""The model contract and the registry.

A model is one file under ``models/``: a ``torch.nn.Module`` subclass of :class:`Model` with a
frozen dataclass ``Config`` (paper defaults), registered by name with :func:`register`.
The trainer calls ``loss(batch)``; the evaluator calls ``score(users)`` inside ``scoring()``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from prismrec.config import Checked
from prismrec.data.dataset import Dataset
from prismrec.data.sampler import Batch
from prismrec.errors import DataError, UnknownNameError, UnsupportedError
from prismrec.graphs import prune_from_torch_rng
from prismrec.models.layers import adam_rows_, adam_state, feature_tensor, rows_of  # noqa: F401  (adam_*: re-exported)

_REGISTRY: dict[str, type["Model"]] = {}


@dataclass(frozen=True)
class ModelConfig(Checked):
    """Base class of model configs (an empty config is valid: Pop has no parameters).

    Declare ranges in the field types (``knn_k: PosInt = 10``, ``mode: Literal["a", "b"] = "a"``,
    see :class:`prismrec.config.Checked`) and put checks across fields in ``validate``; do not
    override ``__post_init__``.
    """


class Model(nn.Module):
    """Base class of every recommender.

    Subclasses are registered with ``@register("name")``, set ``description`` and ``Config``, and
    implement ``setup``, ``loss`` and either ``embeddings`` (dot-product models; ``score`` then
    comes for free) or ``score``.

    Class attributes:
        sampler: ``"pairwise"`` (user, pos, neg) batches or ``"users"`` batches of users.
        uses_features: the model reads modality features (plug-ins such as BeFA apply to it).
        features_in_training: the features enter the trained computation (``False`` for a model
            that reads them once in ``setup`` to build fixed graphs: a feature plug-in would
            change nothing there, so the plug-ins refuse it).
        min_modalities: how many modalities it needs at least (default: 1 where it reads features).
        train_defaults: training-config defaults that differ from MMRec's (e.g. learning rate).
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Config: ClassVar[type] = ModelConfig
    sampler: ClassVar[str] = "pairwise"
    uses_features: ClassVar[bool] = False
    features_in_training: ClassVar[bool] = True  # False: features only build fixed structures in setup
    min_modalities: ClassVar[int | None] = None
    train_defaults: ClassVar[dict] = {}
    trainable: ClassVar[bool] = True
    # trains with ``device="cuda"``: set where a training run on a GPU was checked
    # (benchmarks/gpu_check.py); the trainer refuses the others on a GPU rather than fail midway
    runs_on_cuda: ClassVar[bool] = False

    def __init__(self, dataset: Dataset, config: ModelConfig | None = None):
        super().__init__()
        self.config = config if config is not None else self.Config()
        self.n_users, self.n_items = dataset.n_users, dataset.n_items
        need = self.min_modalities if self.min_modalities is not None else int(self.uses_features)
        if len(dataset.features) < need:
            raise DataError(f"model '{self.name}' needs at least {need} modality feature "
                            f"file(s), dataset '{dataset.name}' has {dataset.modalities or 'none'}")
        self.modalities = list(dataset.features) if self.uses_features else []
        for m in self.modalities:  # non-persistent: bundles store features once, not in the weights
            self.register_buffer(f"feat_{m}", feature_tensor(dataset.features[m]), persistent=False)
        self._cache: tuple[torch.Tensor, ...] | None = None
        self.setup(dataset)

    # -- contract -------------------------------------------------------------------------------
    def setup(self, dataset: Dataset) -> None:
        """Create parameters and fixed structures (graphs, feature buffers). Called once."""

    def loss(self, batch: Batch) -> torch.Tensor:
        """Scalar training loss of one batch."""
        raise NotImplementedError

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Final ``(user [n_users, d], item [n_items, d])`` representations; score = dot product."""
        raise NotImplementedError(f"model '{self.name}' is not a dot-product model")

    def score(self, users: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Scores of every item for ``users`` (internal indices) ``[len(users), n_items]``.

        Must be called inside :meth:`scoring`, which computes the embeddings once. ``out``, when
        given, is a float32 ``[len(users), n_items]`` buffer the scores are written into (and
        returned); ranking passes one buffer for all its user blocks.
        """
        if self._cache is None:
            raise RuntimeError("call score() inside `with model.scoring():`")
        u, i_t = self._cache[0], self._cache[-1]
        return torch.mm(u[users], i_t, out=out)

    def scoring_factors(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(users [n_users, d], items [n_items, d])`` when, inside :meth:`scoring`,
        ``score(u)`` is ``users[u] @ itemsᵀ``; ``None`` otherwise (e.g. a model with its own
        ``score``). Ranking uses the factors to skip items that cannot enter a user's top k."""
        if type(self).score is not Model.score or self._cache is None or len(self._cache) != 3:
            return None
        return self._cache[0], self._cache[1]  # prepare_scoring's (users, items, itemsᵀ)

    def features(self, modality: str, items: torch.Tensor | None = None) -> torch.Tensor:
        """Content features of ``modality`` for ``items`` (all items when None) ``[len, d_m]``.

        Models read modality features only through this method, so that plug-ins (BeFA, ERL)
        can refine them without knowing the model's attributes.
        """
        f = getattr(self, f"feat_{modality}")
        return f if items is None else rows_of(f, items)

    def feature_dims(self) -> dict[str, int]:
        """Modality name -> raw feature dimension."""
        return {m: getattr(self, f"feat_{m}").shape[1] for m in self.modalities}

    def behaviour_embedding(self, items: torch.Tensor | None = None) -> torch.Tensor | None:
        """The items' ID (behaviour) embeddings, when the model has them; used by BeFA."""
        return None

    def modality_contributions(self, users: torch.Tensor, items: torch.Tensor) -> dict[str, torch.Tensor] | None:
        """Optional attribution: modality -> contribution ``[len(users)]`` to score(user, item) pairs."""
        return None

    def embed_items(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Optional cold start: representations of unseen items from their raw modality features.

        Args:
            features: modality -> float tensor ``[n, d_m]`` for every modality of the model.

        Returns:
            ``[n, d]`` item vectors comparable with ``embeddings()[1]`` (score = dot product).

        Raises:
            UnsupportedError: the model has no content path for unseen items (the default).
        """
        raise UnsupportedError(f"model '{self.name}' cannot embed unseen items from their features")

    def new_item_features(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Unseen items' raw features as the model's content path reads them (``features()`` of the
        training items): unchanged here; a feature plug-in (BeFA, ERL) refines them as it refines
        the training items'. ``embed_items`` passes its features through this before projecting."""
        return features

    def on_epoch_start(self, epoch: int) -> None:
        """Hook before each training epoch (e.g. FREEDOM's edge pruning)."""

    def lr_factor(self, epoch: int) -> float:
        """Learning-rate multiplier at ``epoch`` (LambdaLR); constant by default."""
        return 1.0

    def configure_optimizer(self, learning_rate: float, weight_decay: float) -> torch.optim.Optimizer:
        """The optimiser; models with special parameter groups override this."""
        return adam(self.parameters(), learning_rate, weight_decay)

    def step_in_backward(self, optimizer: torch.optim.Optimizer | None) -> None:
        """Allow the model to apply ``optimizer``'s update to some parameters inside ``backward()``
        (``None`` withdraws it). The trainer offers this only where a gradient is final when
        ``backward()`` returns: one process, no gradient clipping, one ``backward()`` per
        ``step()``. A parameter updated that way keeps ``grad=None``, so ``step()`` skips it, and
        its optimiser state stays in ``optimizer.state`` (checkpoints and resume are unchanged).
        Default: nothing (every parameter is updated by ``step()``)."""

    # -- helpers --------------------------------------------------------------------------------
    def to_device(self, device: torch.device | str) -> "Model":
        """Move the model to ``device``: its parameters and buffers (``nn.Module.to``) and the fixed
        structures models keep as plain attributes (graphs, index tensors, reusable buffers).

        Returns ``self``. Tensors shared between attributes stay shared (one copy each)."""
        device = torch.device(device)
        self.to(device)
        map_state(self, lambda t: t.to(device))
        return self

    @property
    def device(self) -> torch.device:
        """Where the model's parameters (or, without any, its buffers) live."""
        for t in itertools.chain(self.parameters(), self.buffers()):
            return t.device
        return torch.device("cpu")

    @property
    def is_dot_product(self) -> bool:
        return type(self).embeddings is not Model.embeddings

    def prepare_scoring(self) -> None:
        """Compute what ``score`` needs once (default: the final embeddings)."""
        if self.is_dot_product:
            u, i = (t.detach() for t in self.embeddings())
            # (users, items, itemsᵀ contiguous): the [d, I] layout is ~10% faster in the product
            self._cache = (u, i, i.T.contiguous())

    @contextlib.contextmanager
    def evaluating(self):
        """Eval mode + no grad, the previous mode restored afterwards."""
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                yield self
        finally:
            self.train(was_training)

    @contextlib.contextmanager
    def scoring(self):
        """Eval mode + no grad + cached embeddings, restored afterwards."""
        with self.evaluating():
            try:
                self.prepare_scoring()
                yield self
            finally:
                self._cache = None

    def extra_repr(self) -> str:
        return repr(self.config)


class JointTable:
    """Mixin for models with one ``[n_users + n_items, d]`` ID table ``self.embedding`` (no
    concatenation of user and item tables per batch) and, where their config has ``lr_decay``
    and ``lr_decay_epochs``, MMRec's ``learning_rate_scheduler`` ``lr · decay^(epoch / epochs)``."""

    def init_joint_table(self, d: int) -> None:
        """``self.embedding``, each block initialised like MMRec's separate user and item tables
        (Xavier bounds depend on the block's own shape)."""
        table = torch.empty(self.n_users + self.n_items, d)
        nn.init.xavier_uniform_(table[: self.n_users])
        nn.init.xavier_uniform_(table[self.n_users:])
        self.embedding = nn.Parameter(table)

    @property
    def item_emb(self) -> torch.Tensor:
        return self.embedding[self.n_users:]

    def behaviour_embedding(self, items=None):
        return self.item_emb if items is None else rows_of(self.item_emb, items)

    def lr_factor(self, epoch):
        cfg = self.config
        if not hasattr(cfg, "lr_decay"):
            return super().lr_factor(epoch)  # Model's (constant) schedule
        return cfg.lr_decay ** (epoch / cfg.lr_decay_epochs)


class EpochPrunedGraph:
    """Mixin for models that train on a user-item graph pruned afresh each epoch (FREEDOM, LayerGCN,
    MMGCF): their ``on_epoch_start`` calls :meth:`prune_epoch`; ``self.full_adj`` scores."""

    masked_adj = None

    def prune_epoch(self, keep_ratio: float, prune=None) -> None:
        """This epoch's training graph: ``self.train_matrix`` pruned by ``prune`` (default
        degree-sensitive) to ``keep_ratio`` of its edges, drawn from torch's global RNG
        (:func:`~prismrec.graphs.prune_from_torch_rng`); the full graph when nothing is dropped."""
        self.masked_adj = (self.full_adj if keep_ratio >= 1.0
                           else prune_from_torch_rng(self.train_matrix, keep_ratio, prune).to(self.device))

    def adjacency(self):
        """The graph of the current mode: the epoch's pruned one in training (drawn now when no
        epoch has started, e.g. a loss called outside the trainer), the full one otherwise."""
        if self.training and self.masked_adj is None:
            self.on_epoch_start(0)
        return self.masked_adj if self.training else self.full_adj


# the attributes every nn.Module has (parameters, buffers, submodules, hooks): nn.Module.to handles them
_MODULE_INTERNALS = frozenset(vars(nn.Module()))


def map_state(model: nn.Module, fn) -> None:
    """Replace every tensor a module tree holds outside its parameters and buffers by ``fn(tensor)``.

    Walks each submodule's plain attributes, into lists, tuples and dicts, and into objects of
    prismrec's own classes (``SparseMatrix``, ``UserItemEdges``, ``Workspace``, ...); a tensor reached
    twice (``SparseMatrix.at is .a`` for a symmetric graph) is mapped once and stays shared.
    """
    memo: dict[int, torch.Tensor] = {}
    seen: set[int] = set()

    def walk(value):
        if isinstance(value, torch.Tensor):
            if id(value) not in memo:
                memo[id(value)] = fn(value)
            return memo[id(value)]
        if isinstance(value, nn.Module):
            return value  # a submodule: model.modules() visits it
        if isinstance(value, (list, tuple)):
            items = [walk(v) for v in value]
            if all(a is b for a, b in zip(items, value)):
                return value
            return type(value)(*items) if hasattr(value, "_fields") else type(value)(items)
        if isinstance(value, dict):
            for k, v in list(value.items()):
                new = walk(v)
                if new is not v:
                    value[k] = new
            return value
        if type(value).__module__.startswith("prismrec.") and hasattr(value, "__dict__") \
                and not dataclasses.is_dataclass(value) and id(value) not in seen:
            seen.add(id(value))
            for k, v in list(vars(value).items()):
                new = walk(v)
                if new is not v:
                    setattr(value, k, new)
        return value

    for module in model.modules():
        for name, value in list(vars(module).items()):
            if name in _MODULE_INTERNALS:
                continue
            new = walk(value)
            if new is not value:
                object.__setattr__(module, name, new)


def adam(params, learning_rate: float, weight_decay: float = 0.0) -> torch.optim.Adam:
    """Adam with the fused kernel: one pass per tensor instead of ~10 element-wise ops (about 9x
    faster on CPU for embedding tables); same update rule as MMRec's ``torch.optim.Adam``."""
    return torch.optim.Adam(params, lr=learning_rate, weight_decay=weight_decay, fused=True)


def register(name_or_cls):
    """Class decorator: make a model available by name.

    ``@register("vbpr")`` names the class (as ``@register_plugin("befa")`` names a plug-in);
    bare ``@register`` uses the class's own ``name`` attribute.
    """
    def add(cls: type[Model], name: str) -> type[Model]:
        if not name or name != name.lower():
            raise ValueError(f"model name must be lower-case and non-empty, got {name!r}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls
    if isinstance(name_or_cls, str):
        return lambda cls: add(cls, name_or_cls)
    return add(name_or_cls, name_or_cls.name)


def get_model_class(name: str) -> type[Model]:
    """The registered model class called ``name``; an unknown name lists the known ones."""
    from prismrec import models  # noqa: F401  (registers the built-in models)
    key = name.lower()
    if key not in _REGISTRY:
        raise UnknownNameError(f"unknown model '{name}'; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[key]


def registered_models() -> dict[str, type[Model]]:
    from prismrec import models  # noqa: F401
    return dict(sorted(_REGISTRY.items()))


def build_model(name: str, dataset: Dataset, config: ModelConfig | None = None) -> Model:
    """Instantiate the model ``name`` on ``dataset``."""
    return get_model_class(name)(dataset, config)
