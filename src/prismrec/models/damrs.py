"""DA-MRS (Xv et al., KDD 2024) over a LightGCN backbone, as in the authors' code / MMRec."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from prismrec.config import NonNegFloat, NonNegInt, PosFloat, PosInt, tunable
from prismrec.graphs import SparseMatrix, agreed_knn_graphs, bipartite_adjacency, item_behaviour_graph, propagate
from prismrec.models.base import JointTable, Model, ModelConfig, register
from prismrec.models.layers import dot, graded_neighbour_contrast, resolve_precision


@dataclass(frozen=True)
class DAMRSConfig(ModelConfig):
    # defaults: the authors' LightGCN.yaml / MMRec's DAMRS.yaml (first grid values) and their README
    embedding_dim: PosInt = 64
    num_ui_layers: NonNegInt = tunable(2, 1, 3)        # backbone LightGCN layers (n_ui_layers)
    num_mm_layers: PosInt = tunable(1, 1, 2)           # item-item propagation steps (n_mm_layers)
    knn_k: PosInt = tunable(10, 3, 20)                 # neighbours per item in each denoised modality graph
    behaviour_knn_k: PosInt = 2       # item-item behaviour graph: items kept per item (build_iib_graph --topk=2)
    behaviour_min_count: PosInt = 2   # ... sharing at least this many training users (the script's >= 2)
    kl_weight: NonNegFloat = tunable(1.0, choices=(0.01, 0.1, 1.0, 10.0))           # alignment by users (AU)
    neighbor_weight: NonNegFloat = tunable(1e-3, choices=(1e-4, 1e-3, 1e-2, 0.1, 1.0))  # by item relations (AI)
    num_positives: PosInt = 10        # strong and weak pseudo-positives per item (10 in the code)
    temperature: PosFloat = 0.2       # of the graded-neighbour contrast (0.2 in the code)
    # the contrast's similarity and gradient products: fp32 (the code's arithmetic) or bf16 inputs with
    # fp32 accumulation ("auto": bf16 where the CPU multiplies it natively, see MGCN's cl_precision)
    contrast_precision: Literal["auto", "float32", "bfloat16"] = "float32"


@register
class DAMRS(JointTable, Model):
    """Denoising and aligning multi-modal content and user feedback, around LightGCN.

    `Improving Multi-modal Recommender Systems by Denoising and Aligning Multi-modal Content and
    User Feedback <https://arxiv.org/abs/2406.12501>`_

    Item views ``v``: one per modality over a denoised kNN graph ``S_m`` (:func:`agreed_knn_graphs`:
    neighbours only among pairs every modality finds similar) and one over the item-item
    behaviour graph ``S_b`` (:func:`item_behaviour_graph`), all propagating the item ID table:

    .. math::
        h_v = S_v^{L_m} E_I, \\quad \\bar h = \\tfrac1V \\sum_v h_v, \\quad
        [e_U; e_I] = \\mathrm{mean}_{l \\le L} \\hat A^l [E_U; E_I], \\quad
        s_{ui} = e_u \\cdot (e_i + \\bar h_i)

        \\mathcal L = \\mathcal L_{DBPR} + \\lambda_{AU} \\mathcal L_{AU} + \\lambda_{AI} \\mathcal L_{AI}

    Denoised BPR: with ``p_v = σ(e_u · ĥ_{v,i⁺})`` per view (``ĥ`` unit rows), ``p̄, σ²`` their
    mean and (unbiased) variance and ``n̄`` the mean of ``σ(e_u · ĥ_{v,i⁻})`` over the batch and
    the views, ``w⁺ = clip(p̄ e^{-2σ²})`` and ``w⁻ = clip(max_v p_v - n̄)`` where ``p̄ < n̄``
    (else 0), both without gradient: ``L_DBPR = -mean(w⁺ log σ(x) + w⁻ log σ(-x))``,
    ``x = s_{ui⁺} - s_{ui⁻}``: an observed pair the content disagrees with is pushed down.

    Alignment by user preference, over the batch's distinct users ``u`` and items ``i``:
    ``L_AU = mean_{u,i} KL(p‖q) + KL(q‖p)`` of the Bernoulli ``p = σ(e_u · ê_i)``,
    ``q = σ(e_u · \\hat{\\bar h}_i)``; the symmetric sum is ``(p - q)(logit p - logit q)``.

    Alignment by graded item relations: for each view, :func:`graded_neighbours` picks an
    item's strong positives (close in all views) and weak ones (close in this view only) and
    :func:`graded_neighbour_contrast` contrasts ``ĥ_{v,i}`` with them against all items; ``L_AI`` averages
    the views.

    Choices where paper and code differ, or the code is silent: the code (followed here)
    propagates the ID table, not the features, over the item graphs (its feature projections
    are never used); its behaviour graph file is ``build_iib_graph.py --topk=2`` (pairs sharing
    at least 2 users, top 2 per item), the defaults here. Any number of modalities: a pair is a
    candidate when every modality's similarity reaches its mean, and the strong positives of
    view ``v`` rank ``P_v + Σ_w P_w`` (the code's ``P_1 + P_2 + 2P_3`` for three views).
    (peers.md's MMRec run used a top-200 co-occurrence file: ``behaviour_knn_k=200,
    behaviour_min_count=1``.) Features enter only the graphs, built once from the raw features
    in ``setup``, so ``--plugin befa`` / ``erl`` (which act on features during training) refuse it.
    No cold start: items are ID embeddings.

    Shapes:
        E_U [N, d], E_I [I, d]; Â [(N + I)², 2·nnz]; S_v [I, I]; scores [B, I].
    """

    name = "damrs"
    description = "DA-MRS: denoised modality/behaviour item graphs, denoised BPR and alignment over LightGCN"
    Config = DAMRSConfig
    runs_on_cuda = True  # trained on a GPU: benchmarks/results/gpu-smoke.json
    uses_features = True
    features_in_training = False  # the features build the item graphs in setup, nothing more
    min_modalities = 1

    def setup(self, dataset):
        cfg = self.config
        self.init_joint_table(cfg.embedding_dim)
        self.adj = SparseMatrix(bipartite_adjacency(dataset.train), symmetric=True)
        raw = [self.features(m).detach().numpy() for m in self.modalities]
        graphs = agreed_knn_graphs(raw, cfg.knn_k)
        graphs.append(item_behaviour_graph(dataset.train, cfg.behaviour_knn_k, cfg.behaviour_min_count))
        self.item_graphs = [SparseMatrix(g, symmetric=False) for g in graphs]   # modalities, then behaviour

    def views(self) -> list[torch.Tensor]:
        """``h_v = S_v^{L_m} E_I`` for every view ``[I, d]`` (the modalities', then behaviour's)."""
        return [propagate(g, self.item_emb, self.config.num_mm_layers, mean=False) for g in self.item_graphs]

    def embeddings(self):
        e = propagate(self.adj, self.embedding, self.config.num_ui_layers)
        return e[: self.n_users], e[self.n_users:] + torch.stack(self.views()).mean(0)

    def loss(self, batch):
        cfg, b = self.config, len(batch.users)
        users, u_at = torch.unique(batch.users, return_inverse=True)
        items, i_at = torch.unique(torch.cat([batch.pos_items, batch.neg_items]), return_inverse=True)
        rows = propagate(self.adj, self.embedding, cfg.num_ui_layers, rows=torch.cat([users, self.n_users + items]))
        e_u, e_i = rows[: len(users)], rows[len(users):]
        views = self.views()
        keys = [F.normalize(h, dim=1) for h in views]                 # ĥ_v [I, d]
        q = [k[items] for k in keys]                                  # the batch's items [B_i, d]
        # alignment guided by graded item relations
        ai = graded_neighbour_contrast(q, keys, cfg.num_positives, cfg.temperature,
                                       precision=resolve_precision(cfg.contrast_precision))
        # alignment guided by user preference
        content = torch.stack([h[items] for h in views]).mean(0)     # h̄ of the batch's items
        logit_p = e_u @ F.normalize(e_i, dim=1).T
        logit_q = e_u @ F.normalize(content, dim=1).T
        au = ((torch.sigmoid(logit_p) - torch.sigmoid(logit_q)) * (logit_p - logit_q)).mean()
        # denoised BPR
        u, pos, neg = e_u[u_at], i_at[:b], i_at[b:]
        final = e_i + content
        x = dot(u, final[pos]) - dot(u, final[neg])
        w_pos, w_neg = self.pair_weights(u.detach(), [a.detach() for a in q], pos, neg)
        bpr = -(w_pos * F.logsigmoid(x) + w_neg * F.logsigmoid(-x)).mean()
        return bpr + cfg.kl_weight * au + cfg.neighbor_weight * ai

    @staticmethod
    def pair_weights(u: torch.Tensor, q: list[torch.Tensor], pos: torch.Tensor, neg: torch.Tensor):
        """``(w⁺ [B], w⁻ [B])`` of the denoised BPR from the views' unit item rows ``q``."""
        p = torch.sigmoid(torch.stack([dot(u, a[pos]) for a in q]))   # [V, B]
        n_bar = torch.sigmoid(torch.stack([dot(u, a[neg]) for a in q])).mean()
        mean = p.mean(0)
        w_pos = (mean * torch.exp(-2.0 * p.var(0))).clamp(0.0, 1.0)
        w_neg = torch.where(mean < n_bar, p.amax(0) - n_bar, torch.zeros_like(mean)).clamp(0.0, 1.0)
        return w_pos, w_neg
