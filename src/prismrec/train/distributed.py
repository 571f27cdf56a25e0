"""Data-parallel training with ``torch.distributed``, launched by ``torchrun``.

Every rank holds a full replica of the model (same seed, so the same initial weights), samples
batches from its own shard of the training interactions, and averages gradients with the other
ranks after each backward pass, so the replicas stay identical. Evaluation is sharded over users
and the per-user hits are gathered, so every rank gets the metrics a single process would compute,
bit for bit, and early stopping decides the same on every rank. Only rank 0 writes checkpoints,
logs and bundles (the trainer and :class:`~prismrec.api.Recommender` check ``dist.rank``).

``batch_size`` stays the *global* batch: each rank draws ``ceil(batch_size / world_size)`` rows
per step, so a run on N ranks makes the same number of optimiser steps of the same effective batch
as a single process, and needs no learning-rate rescaling. (Raise ``batch_size`` to trade this
equivalence for fewer, larger steps.)

Launch::

    torchrun --nproc_per_node 2 -m prismrec train --data /tmp/baby-like --model lightgcn --distributed

Backend: gloo: data-parallel ranks train on the CPU (``TrainConfig.device="cuda"`` is refused under
torchrun, see ``trainer.training_device``), so ranks never claim a GPU and any number of them share a
machine. One GPU without torchrun is ``--device cuda``.
"""
from __future__ import annotations

import datetime
import logging
import os

import numpy as np
import scipy.sparse as sp
import torch
import torch.distributed as tdist

from prismrec.errors import PrismrecError
from prismrec.evaluation.metrics import METRICS, metrics_from_hits
from prismrec.evaluation.ranking import evaluation_groups, ranked_hits

log = logging.getLogger("prismrec")

SHARD_SEED = 0x5EED  # the shard assignment must be the same on every rank, whatever the run's seed
_TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


class DistContext:
    """This process's place in a data-parallel job, and the collectives the trainer needs.

    Args:
        rank: index of this process, ``0 .. world_size - 1``.
        world_size: number of processes.
        owns_group: whether :meth:`close` should destroy the default process group.

    A context with ``world_size == 1`` works without a process group (collectives are no-ops),
    which makes the single-process path testable with the same code.
    """

    def __init__(self, rank: int = 0, world_size: int = 1, *, owns_group: bool = False):
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank must be in 0..world_size-1, got rank {rank}, world_size {world_size}")
        self.rank, self.world_size = rank, world_size
        self.owns_group = owns_group

    # -- set-up ---------------------------------------------------------------------------------
    @classmethod
    def from_env(cls, backend: str | None = None, timeout_s: float = 1800.0) -> "DistContext":
        """Join the job described by torchrun's environment (``RANK``, ``WORLD_SIZE``, ...).

        Args:
            backend: process-group backend; ``None`` is gloo.
            timeout_s: how long a collective may wait for the slowest rank.
        """
        if not tdist.is_available():
            raise PrismrecError("this torch build has no torch.distributed support")
        missing = [k for k in _TORCHRUN_ENV if k not in os.environ]
        if missing and not tdist.is_initialized():
            raise PrismrecError(f"--distributed needs the environment torchrun sets ({', '.join(missing)} "
                                "missing); launch with: torchrun --nproc_per_node N -m prismrec train ... "
                                "--distributed")
        owns = False
        if not tdist.is_initialized():
            # gloo even where CUDA is present: the tensors are on the CPU, and a CUDA backend would
            # bind each rank to a GPU (two ranks on a one-GPU host would fail)
            tdist.init_process_group(backend or "gloo", timeout=datetime.timedelta(seconds=timeout_s))
            owns = True
        ctx = cls(tdist.get_rank(), tdist.get_world_size(), owns_group=owns)
        log.info("data-parallel rank %d of %d (%s)", ctx.rank, ctx.world_size, tdist.get_backend())
        return ctx

    def close(self) -> None:
        """Leave the job (destroys the process group this context created)."""
        if self.owns_group and tdist.is_initialized():
            tdist.destroy_process_group()
            self.owns_group = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def _active(self) -> bool:
        return self.world_size > 1

    # -- sampling -------------------------------------------------------------------------------
    def shard_rows(self, train_csr: sp.csr_matrix, sampler_kind: str) -> np.ndarray:
        """Indices of this rank's share of the training data, sorted.

        For ``"pairwise"`` samplers they index the interactions in ``train_csr.tocoo()`` order;
        for ``"users"`` samplers they are user indices (users with a training interaction).
        Rows are assigned by a fixed random permutation (balanced whatever the data's order), and
        the few left over are repeated so that every rank has exactly ``ceil(n / world_size)`` rows:
        equal shards give equal batch counts, so no rank waits in an all-reduce the others skip.

        Shapes:
            returns int64 ``[ceil(n / world_size)]``.
        """
        if sampler_kind == "pairwise":
            universe = np.arange(train_csr.nnz, dtype=np.int64)
        elif sampler_kind == "users":
            universe = np.flatnonzero(np.diff(train_csr.indptr) > 0).astype(np.int64)
        else:
            raise ValueError(f"unknown sampler kind '{sampler_kind}'; expected 'pairwise' or 'users'")
        if self.world_size == 1:
            return universe
        n = len(universe)
        if n < self.world_size:
            raise PrismrecError(f"{n} training rows cannot be shared by {self.world_size} ranks")
        perm = np.random.default_rng(SHARD_SEED).permutation(n)
        per_rank = -(-n // self.world_size)
        perm = np.concatenate([perm, perm[:per_rank * self.world_size - n]])
        return np.sort(universe[perm[self.rank::self.world_size]])

    def local_batch_size(self, batch_size: int) -> int:
        """Rows per step on this rank so that all ranks together make one ``batch_size`` batch."""
        return max(1, -(-batch_size // self.world_size))

    def sampler_rng(self, seed: int, rng: np.random.Generator) -> np.random.Generator:
        """The sampling generator of this rank: ``rng`` itself on rank 0 (so rank 0 samples as a
        single process would), ``default_rng(seed + rank)`` elsewhere (ranks must not draw the
        same negatives)."""
        return rng if self.rank == 0 else np.random.default_rng(seed + self.rank)

    # -- collectives ----------------------------------------------------------------------------
    def all_reduce_grads(self, model: torch.nn.Module) -> None:
        """Average the gradients of ``model``'s parameters over all ranks, in place.

        Parameters whose gradient is ``None`` on every rank stay ``None`` (the optimiser skips
        them, as it would in one process); when only some ranks touched a parameter (an embedding
        table the batch did not reach), the others contribute zeros. Sparse gradients
        (``nn.Embedding(sparse=True)``) are densified for the reduction.
        """
        if not self._active:
            return
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            return
        flags = torch.tensor([p.grad is not None for p in params], dtype=torch.int32)
        tdist.all_reduce(flags)  # how many ranks have a gradient for each parameter
        work = []
        for p, f in zip(params, flags.tolist()):
            if f == 0:
                continue
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            elif p.grad.is_sparse:
                p.grad = p.grad.to_dense()
            work.append((p.grad, tdist.all_reduce(p.grad, async_op=True)))
        for g, w in work:
            w.wait()
            g.div_(self.world_size)

    def all_gather_rows(self, a: np.ndarray) -> np.ndarray:
        """Concatenate every rank's ``a`` (same trailing shape and dtype, any length) in rank order."""
        if not self._active:
            return a
        t = torch.from_numpy(np.ascontiguousarray(a))
        n = torch.tensor([t.shape[0]], dtype=torch.int64)
        sizes = [torch.zeros_like(n) for _ in range(self.world_size)]
        tdist.all_gather(sizes, n)
        sizes = [int(s) for s in sizes]
        pad = torch.zeros((max(sizes), *t.shape[1:]), dtype=t.dtype)
        pad[: t.shape[0]] = t
        out = [torch.empty_like(pad) for _ in range(self.world_size)]
        tdist.all_gather(out, pad)
        return torch.cat([o[:s] for o, s in zip(out, sizes)]).numpy()

    def all_gather_object(self, obj):
        """``[obj of rank 0, obj of rank 1, ...]`` on every rank (small JSON-like objects only)."""
        if not self._active:
            return [obj]
        out = [None] * self.world_size
        tdist.all_gather_object(out, obj)
        return out

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on at least one."""
        if not self._active:
            return bool(flag)
        t = torch.tensor([int(bool(flag))])
        tdist.all_reduce(t)
        return bool(t.item())

    def barrier(self) -> None:
        if self._active:
            tdist.barrier()

    # -- evaluation -----------------------------------------------------------------------------
    def evaluate(self, model, dataset, splits: dict[str, sp.csr_matrix], cfg,
                 extra_masks: dict[str, sp.csr_matrix] | None = None) -> dict[str, dict[str, float]]:
        """Full-ranking metrics of ``splits``, with the users shared out over the ranks.

        Same protocol as :func:`prismrec.evaluation.evaluate_splits` (which it equals exactly):
        splits without an extra mask share one ranking pass; each rank ranks a contiguous block of
        the sorted evaluation users, the per-user hit rows are gathered in user order, and every
        rank computes the same means. Call inside ``model.scoring()``.

        Args:
            model: the model (``score`` is used).
            dataset: gives the training matrix to mask.
            splits: split name -> ground-truth CSR.
            cfg: the :class:`~prismrec.config.TrainConfig` (``eval_ks``, ``eval_batch_size``).
            extra_masks: split -> more items to mask for that split (e.g. valid when ranking test).
        """
        ks, train = tuple(cfg.eval_ks), dataset.train
        results = {}
        for group, extra, users, all_users in evaluation_groups(train, splits, extra_masks):
            mine = np.array_split(all_users, self.world_size)[self.rank]
            hits = ranked_hits(model.score, mine, group, max(ks), train, cfg.eval_batch_size, extra)
            for s, u in users.items():
                u_mine = u[(u >= mine[0]) & (u <= mine[-1])] if len(mine) else u[:0]
                hit = hits[s][np.searchsorted(mine, u_mine)]
                hit = self.all_gather_rows(hit.astype(np.uint8)).astype(bool)
                n_pos = self.all_gather_rows(np.diff(group[s].indptr)[u_mine].astype(np.int64))
                results[s] = metrics_from_hits(hit, n_pos, ks, METRICS)
        return {s: results[s] for s in splits}
