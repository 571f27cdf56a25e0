#!/usr/bin/env python3
"""MMRec's MGCN and LightGCN training pipelines, transcribed into one standalone script (no prismrec code).

    python benchmarks/mmrec_mgcn.py --data /tmp/baby-like --seeds 999,1,2,3,4 --epochs 5 \\
        --threads 2 --out benchmarks/results/baby-like/mmrec-mgcn-5ep-seeds.json
    python benchmarks/mmrec_mgcn.py --data /tmp/baby-like --model lightgcn --epochs 1 --seeds 999

``--model`` picks MMRec's model (default ``mgcn``); everything around the model (split, loaders,
trainer, evaluator) is the same MMRec code for both.

Why it exists
-------------
MMRec (github.com/enoche/MMRec) measured MGCN on baby-like at test Recall@20 0.0722 / NDCG@20
0.0397 after 5 epochs with its default seed 999 (``shared/peers.md``). prismrec's MGCN gets
0.0685 +- 0.0016 over 5 seeds (``results/baby-like/mgcn-5ep-seeds.json``). At epoch 4 MGCN is in its
take-off, so the 5-epoch numbers move with the seed. This script runs *MMRec's own* pipeline
(data split, loaders, negative sampling, model, trainer, evaluator and metrics) with several seeds
on the same data, to see how much MMRec's 5-epoch numbers vary and whether 0.0722 is a favourable
seed.

LightGCN (``--model lightgcn``) is here for timing in the same conditions: peers.md gives MMRec's
LightGCN 3.0 s per training epoch and 2.1 s per evaluation of all valid users, measured on another
day; ``paired_mmrec.py --model lightgcn`` runs this pipeline and prismrec's ``run.py`` in alternating
rounds so that the VM's speed drift cancels in the ratio. Every run records, per epoch, the training
seconds and the seconds of each of the trainer's two evaluations (``_valid_epoch(valid_data)`` and
``_valid_epoch(test_data)``: one full ranking of all valid, resp. test, users).

What is transcribed (MMRec files, read from the repository; commit in brackets)
--------------------------------------------------------------------------------
- ``src/utils/dataset.py`` RecDataset: load/split by ``x_label``, drop cold-start valid/test users,
  ``shuffle`` = ``df.sample(frac=1)`` on the global numpy RNG                          [20b23da]
- ``src/utils/dataloader.py`` TrainDataLoader (``pretrain_setup``, ``_shuffle``,
  ``_get_neg_sample``, ``_sample_neg_ids``/``_random`` = ``random.sample(all_items, 1)``, only items
  seen in training are negatives, a user's training items are rejected) and EvalDataLoader (eval
  users in order of first appearance, training items masked; valid items stay unmasked at test)                            [a75d89a]
- ``src/common/abstract_recommender.py`` GeneralRecommender (feature loading)            [a75d89a]
- ``src/models/mgcn.py`` MGCN (model, BPR + emb-reg / batch_size, InfoNCE at 0.2)        [a5b713d]
- ``src/models/lightgcn.py`` LightGCN (``nn.ParameterDict`` of xavier-uniform user/item tables,
  symmetric-normalised bipartite graph with +1e-7 on the degrees, mean of the layer outputs,
  ``BPRLoss`` on the propagated embeddings + ``reg_weight * EmbLoss`` on the ego embeddings)
                                                  [250d305; 18d8b57 has the same code, other comments]
- ``src/common/loss.py`` BPRLoss (``-log(1e-10 + sigmoid(pos - neg)).mean()``) and EmbLoss (sum of
  the tables' Frobenius norms, not squared, / rows of the last one)                      [a75d89a]
- ``src/common/init.py`` xavier_uniform_initialization: imported by lightgcn.py, whose
  ``self.apply(...)`` call is commented out there, so unused here as in MMRec            [a75d89a]
- ``src/common/trainer.py`` Trainer (Adam, weight_decay 0, LambdaLR 0.96 ** (epoch / 50) stepped
  after each epoch, ``_train_epoch``, ``fit`` with valid then test after every epoch, early
  stopping on valid Recall@20, ``evaluate`` masks training items with -1e10 and takes top-50)
                                                                                         [14d38fd]
- ``src/utils/topk_evaluator.py`` and ``src/utils/metrics.py`` (recall_, ndcg_, precision_, map_;
  values rounded to 4 decimals as MMRec does; best valid = strictly greater rounded value)
                                                                                 [a75d89a, 20b23da]
- ``src/utils/utils.py`` init_seed, early_stopping, build_sim, build_knn_normalized_graph,
  get_sparse_laplacian                                                                    [a5b713d]
- ``src/utils/quick_start.py`` the order of events per seed: loaders built once, then per seed
  ``init_seed(seed)`` -> ``train_data.pretrain_setup()`` -> model -> Trainer -> ``fit``  [14d38fd]
- ``src/configs/overall.yaml`` [20b23da; 8aa1cf2 differs only in ``data_path``] +
  ``configs/dataset/baby.yaml`` [a75d89a] + ``configs/model/MGCN.yaml`` [69f4ca9] or
  ``configs/model/LightGCN.yaml``, merged as ``Config._load_dataset_model_config`` does
  (``src/utils/configurator.py`` [20b23da]): see ``CONFIGS`` below. ``LightGCN.yaml`` of
  enoche/MMRec is not in the code index these files were read from; its content is taken from the
  copies in MMRec forks (1101909/MMREC@167dc04: ``embedding_size: 64``, ``is_multimodal_model:
  False``, ``n_layers: [1, 2, 3, 4]``, ``reg_weight: [1e-02, 1e-03, 1e-04, 1e-05, 1e-06]``,
  ``hyper_parameters: ["n_layers", "reg_weight"]``), which is word for word upstream's
  ``LightGCNTorch.yaml`` [f29d2de]; the other forks that keep the file change only the grids and
  all keep ``is_multimodal_model: False``. So MMRec's GeneralRecommender loads no modality features
  for LightGCN (its ``if not end2end and is_multimodal_model`` branch), and neither does this
  script; and the learning-rate schedule is overall.yaml's ``[1.0, 50]`` (constant), since
  LightGCN.yaml does not override it.

Because model init (torch CPU RNG), negative sampling (Python ``random``) and shuffling (numpy)
all draw from the seeded CPU generators exactly as in MMRec, the random streams are MMRec's; only
the floating-point arithmetic differs between devices/thread counts.

Deviations from MMRec (every one of them)
-----------------------------------------
1. ``get_sparse_laplacian``: ``torch_scatter.scatter_add(edge_weight, row, dim_size=n)`` is replaced
   by ``torch.zeros(n).index_add_(0, row, edge_weight)`` (same sums; torch_scatter not installed).
2. The kNN item graphs (``image_adj_10_True.pt`` / ``text_adj_10_True.pt``) are never written to
   or read from the data folder; they are computed in memory from the raw features once per
   process and reused for every seed (MMRec reuses its cache file the same way after the first
   run; the graph does not depend on the seed).
3. ``.cuda()`` on the item graphs becomes ``.to(device)``; the device is ``--device`` (default
   cpu) instead of "cuda if available".
4. ``torch.sparse.FloatTensor(i, v, shape)`` (deprecated) becomes ``torch.sparse_coo_tensor(i, v,
   shape)``: same tensor.
5. MMRec's yaml ``Config`` is replaced by the merged dicts ``CONFIGS`` (overall.yaml, baby.yaml,
   MGCN.yaml or LightGCN.yaml; only the keys MMRec's code reads on these paths). ``cl_loss`` is
   fixed at 0.01 instead of MGCN.yaml's grid [0.001, 0.01, 0.1] (MMRec would run the three values
   one after another; each run re-seeds and resets the loaders, so the 0.01 run is the same alone).
   Likewise LightGCN's ``n_layers`` is fixed at 2 (grid [1, 2, 3, 4]) and ``reg_weight`` at 1e-4
   (grid [1e-2 .. 1e-6]), peers.md's setting. ``epochs`` and the list of seeds come from the
   command line.
6. Branches that this configuration never takes are left out: neighbourhood loss
   (``use_neighborhood_loss`` unset), full-user sampling (``use_full_sampling: False``), the
   ``mg`` training trick (off), gradient clipping (``clip_grad_norm`` unset), writing the
   recommended top-k CSV (``evaluate`` is called with ``is_test=False`` in ``fit``), plotting,
   logging to files (``print`` instead), ``AbstractDataLoader.sparsity`` (unused).
7. Two list-to-tensor conversions go through numpy first (``EvalDataLoader._get_pos_items_per_u``
   result, same values). The evaluator's hit test is MMRec's own ``i in m`` over numpy arrays
   (~1.8 s of a baby-like evaluation), so the evaluation seconds recorded here are MMRec's.
8. The interaction file is ``<folder name>.inter`` (or the only ``*.inter`` in ``--data``), as
   MMRec's ``inter_file_name`` would be set in a dataset yaml.
9. ``torch.set_num_threads(--threads)`` is set; MMRec leaves torch's default.
10. Output: one line per epoch and a JSON summary instead of MMRec's logger. ``Trainer.fit`` also
    times ``_valid_epoch(valid_data)`` and ``_valid_epoch(test_data)`` separately (two
    ``time.perf_counter()`` pairs around MMRec's calls; nothing else changes) and hands the two
    numbers to the per-epoch callback.
11. LightGCN ``get_norm_adj_mat``: ``A._update(data_dict)`` (a private ``dok_matrix`` method that
    today's scipy no longer has) becomes ``A._dict.update(data_dict)`` where ``_update`` is
    missing: the same entries stored the same way (a plain dict update, no per-entry checks).
    ``torch.sparse.FloatTensor(i, data, shape)`` becomes ``torch.sparse_coo_tensor(i, data, shape)``
    as in deviation 4.
12. ``--prismrec`` (the equivalence check below, not MMRec code) exists for MGCN only.
"""
from __future__ import annotations

import argparse
import glob
import itertools
import json
import math
import os
import random
import statistics
import subprocess
import sys
import time
import warnings

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim


class Config(dict):
    """MMRec's Config.__getitem__ returns None for a missing key; so does this dict."""

    def __missing__(self, key):
        return None


# MMRec's configuration files, each as the keys MMRec's code reads on these paths.
# src/configs/overall.yaml
_OVERALL_YAML = {
    "seed": 999,
    "inter_splitting_label": "x_label",
    "filter_out_cod_start_users": True,
    "is_multimodal_model": True,
    "end2end": False,
    "embedding_size": 64,
    "weight_decay": 0.0,
    "req_training": True,
    "epochs": 1000,
    "stopping_step": 20,
    "train_batch_size": 2048,
    "learner": "adam",
    "learning_rate": 0.001,
    "learning_rate_scheduler": [1.0, 50],
    "eval_step": 1,
    "training_neg_sample_num": 1,
    "use_neg_sampling": True,
    "use_full_sampling": False,
    "metrics": ["Recall", "NDCG", "Precision", "MAP"],
    "topk": [5, 10, 20, 50],
    "valid_metric": "Recall@20",
    "valid_metric_bigger": True,  # set by Config._set_default_parameters
    "eval_batch_size": 4096,
}
# configs/dataset/baby.yaml
_BABY_YAML = {
    "USER_ID_FIELD": "userID",
    "ITEM_ID_FIELD": "itemID",
    "field_separator": "\t",
    "vision_feature_file": "image_feat.npy",
    "text_feature_file": "text_feat.npy",
}
# configs/model/MGCN.yaml
_MGCN_YAML = {
    "embedding_size": 64,
    "n_ui_layers": 2,
    "n_layers": 1,
    "learning_rate_scheduler": [0.96, 50],
    "lambda_coeff": 0.9,  # unused by MGCN
    "reg_weight": 1e-04,
    "knn_k": 10,
    "learning_rate": 0.001,
    "cl_loss": 0.01,  # MGCN.yaml: grid [0.001, 0.01, 0.1]; fixed here (deviation 5)
    "model": "MGCN",  # Config.__init__: config_dict['model'] = model
}
# configs/model/LightGCN.yaml (not in the index for enoche/MMRec; content from the forks' copies,
# identical to upstream's LightGCNTorch.yaml -- see the module docstring)
_LIGHTGCN_YAML = {
    "embedding_size": 64,
    "is_multimodal_model": False,  # GeneralRecommender loads no features for LightGCN
    "n_layers": 2,  # LightGCN.yaml: grid [1, 2, 3, 4]; fixed here (deviation 5, peers.md)
    "reg_weight": 1e-04,  # LightGCN.yaml: grid [1e-02 .. 1e-06]; fixed here (deviation 5, peers.md)
    "model": "LightGCN",
}


def _merge(*files):
    """Config._load_dataset_model_config: overall, then dataset, then model (later files win)."""
    config = Config()
    for f in files:
        config.update(f)
    return config


CONFIGS = {
    "mgcn": _merge(_OVERALL_YAML, _BABY_YAML, _MGCN_YAML),
    "lightgcn": _merge(_OVERALL_YAML, _BABY_YAML, _LIGHTGCN_YAML),
}
CONFIG = CONFIGS["mgcn"]


# ---------------------------------------------------------------- src/utils/utils.py
def init_seed(seed):
    random.seed(seed)
    np.random.seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed(seed)
        torch.cuda.manual_seed_all(seed)
    torch.manual_seed(seed)


def early_stopping(value, best, cur_step, max_step, bigger=True):
    stop_flag = False
    update_flag = False
    if bigger:
        if value > best:
            cur_step = 0
            best = value
            update_flag = True
        else:
            cur_step += 1
            if cur_step > max_step:
                stop_flag = True
    else:
        if value < best:
            cur_step = 0
            best = value
            update_flag = True
        else:
            cur_step += 1
            if cur_step > max_step:
                stop_flag = True
    return best, cur_step, stop_flag, update_flag


def build_sim(context):
    context_norm = context.div(torch.norm(context, p=2, dim=-1, keepdim=True))
    sim = torch.mm(context_norm, context_norm.transpose(1, 0))
    return sim


def get_sparse_laplacian(edge_index, edge_weight, num_nodes, normalization='none'):
    # MMRec: `from torch_scatter import scatter_add; deg = scatter_add(edge_weight, row, dim=0,
    # dim_size=num_nodes)`. Deviation 1: index_add_ computes the same per-row sums.
    row, col = edge_index[0], edge_index[1]
    deg = torch.zeros(num_nodes, dtype=edge_weight.dtype, device=edge_weight.device).index_add_(
        0, row, edge_weight)

    if normalization == 'sym':
        deg_inv_sqrt = deg.pow_(-0.5)
        deg_inv_sqrt.masked_fill_(deg_inv_sqrt == float('inf'), 0)
        edge_weight = deg_inv_sqrt[row] * edge_weight * deg_inv_sqrt[col]
    elif normalization == 'rw':
        deg_inv = 1.0 / deg
        deg_inv.masked_fill_(deg_inv == float('inf'), 0)
        edge_weight = deg_inv[row] * edge_weight
    return edge_index, edge_weight


def get_dense_laplacian(adj, normalization='none'):
    if normalization == 'sym':
        rowsum = torch.sum(adj, -1)
        d_inv_sqrt = torch.pow(rowsum, -0.5)
        d_inv_sqrt[torch.isinf(d_inv_sqrt)] = 0.
        d_mat_inv_sqrt = torch.diagflat(d_inv_sqrt)
        L_norm = torch.mm(torch.mm(d_mat_inv_sqrt, adj), d_mat_inv_sqrt)
    elif normalization == 'rw':
        rowsum = torch.sum(adj, -1)
        d_inv = torch.pow(rowsum, -1)
        d_inv[torch.isinf(d_inv)] = 0.
        d_mat_inv = torch.diagflat(d_inv)
        L_norm = torch.mm(d_mat_inv, adj)
    elif normalization == 'none':
        L_norm = adj
    return L_norm


def build_knn_normalized_graph(adj, topk, is_sparse, norm_type):
    device = adj.device
    knn_val, knn_ind = torch.topk(adj, topk, dim=-1)
    if is_sparse:
        tuple_list = [[row, int(col)] for row in range(len(knn_ind)) for col in knn_ind[row]]
        row = [i[0] for i in tuple_list]
        col = [i[1] for i in tuple_list]
        i = torch.LongTensor([row, col]).to(device)
        v = knn_val.flatten()
        edge_index, edge_weight = get_sparse_laplacian(i, v, normalization=norm_type, num_nodes=adj.shape[0])
        return torch.sparse_coo_tensor(edge_index, edge_weight, adj.shape)
    else:
        weighted_adjacency_matrix = (torch.zeros_like(adj)).scatter_(-1, knn_ind, knn_val)
        return get_dense_laplacian(weighted_adjacency_matrix, normalization=norm_type)


def dict2str(result_dict):
    result_str = ''
    for metric, value in result_dict.items():
        result_str += str(metric) + ': ' + '%.04f' % value + '    '
    return result_str


# ---------------------------------------------------------------- src/utils/dataset.py
class RecDataset(object):
    def __init__(self, config, df=None):
        self.config = config
        self.dataset_path = config['data_path']
        self.dataset_name = config['dataset']

        self.uid_field = self.config['USER_ID_FIELD']
        self.iid_field = self.config['ITEM_ID_FIELD']
        self.splitting_label = self.config['inter_splitting_label']

        if df is not None:
            self.df = df
            return
        file_path = os.path.join(self.dataset_path, self.config['inter_file_name'])
        if not os.path.isfile(file_path):
            raise ValueError('File {} not exist'.format(file_path))

        self.load_inter_graph(config['inter_file_name'])
        self.item_num = int(max(self.df[self.iid_field].values)) + 1
        self.user_num = int(max(self.df[self.uid_field].values)) + 1

    def load_inter_graph(self, file_name):
        inter_file = os.path.join(self.dataset_path, file_name)
        cols = [self.uid_field, self.iid_field, self.splitting_label]
        self.df = pd.read_csv(inter_file, usecols=cols, sep=self.config['field_separator'])
        if not self.df.columns.isin(cols).all():
            raise ValueError('File {} lost some required columns.'.format(inter_file))

    def split(self):
        dfs = []
        # splitting into training/validation/test
        for i in range(3):
            temp_df = self.df[self.df[self.splitting_label] == i].copy()
            temp_df.drop(self.splitting_label, inplace=True, axis=1)        # no use again
            dfs.append(temp_df)
        if self.config['filter_out_cod_start_users']:
            # filtering out new users in val/test sets
            train_u = set(dfs[0][self.uid_field].values)
            for i in [1, 2]:
                dropped_inter = pd.Series(True, index=dfs[i].index)
                dropped_inter ^= dfs[i][self.uid_field].isin(train_u)
                dfs[i].drop(dfs[i].index[dropped_inter], inplace=True)

        full_ds = [self.copy(_) for _ in dfs]
        return full_ds

    def copy(self, new_df):
        nxt = RecDataset(self.config, new_df)
        nxt.item_num = self.item_num
        nxt.user_num = self.user_num
        return nxt

    def get_user_num(self):
        return self.user_num

    def get_item_num(self):
        return self.item_num

    def shuffle(self):
        """Shuffle the interaction records inplace (global numpy RNG, as pandas' default)."""
        self.df = self.df.sample(frac=1, replace=False).reset_index(drop=True)

    def __len__(self):
        return len(self.df)

    def __getitem__(self, idx):
        return self.df.iloc[idx]

    def __str__(self):
        n_inter = len(self.df)
        n_u = len(pd.unique(self.df[self.uid_field]))
        n_i = len(pd.unique(self.df[self.iid_field]))
        return '{} users, {} items, {} interactions'.format(n_u, n_i, n_inter)


# ---------------------------------------------------------------- src/utils/dataloader.py
class AbstractDataLoader(object):
    def __init__(self, config, dataset, additional_dataset=None,
                 batch_size=1, neg_sampling=False, shuffle=False):
        self.config = config
        self.dataset = dataset
        self.dataset_bk = self.dataset.copy(self.dataset.df)
        self.additional_dataset = additional_dataset
        self.batch_size = batch_size
        self.step = batch_size
        self.shuffle = shuffle
        self.neg_sampling = neg_sampling
        self.device = config['device']
        # (MMRec also computes self.sparsity here; unused -- deviation 6)
        self.pr = 0
        self.inter_pr = 0

    def pretrain_setup(self):
        pass

    def __len__(self):
        return math.ceil(self.pr_end / self.step)

    def __iter__(self):
        if self.shuffle:
            self._shuffle()
        return self

    def __next__(self):
        if self.pr >= self.pr_end:
            self.pr = 0
            self.inter_pr = 0
            raise StopIteration()
        return self._next_batch_data()

    @property
    def pr_end(self):
        raise NotImplementedError

    def _shuffle(self):
        raise NotImplementedError

    def _next_batch_data(self):
        raise NotImplementedError


class TrainDataLoader(AbstractDataLoader):
    """General dataloader with negative sampling (use_neg_sampling, not use_full_sampling)."""

    def __init__(self, config, dataset, batch_size=1, shuffle=False):
        super().__init__(config, dataset, additional_dataset=None,
                         batch_size=batch_size, neg_sampling=True, shuffle=shuffle)

        self.history_items_per_u = dict()
        # full items in training.
        self.all_items = self.dataset.df[self.dataset.iid_field].unique().tolist()
        self.all_uids = self.dataset.df[self.dataset.uid_field].unique()
        self.all_items_set = set(self.all_items)
        self.all_users_set = set(self.all_uids)
        self.all_item_len = len(self.all_items)
        self.use_full_sampling = config['use_full_sampling']
        if not (config['use_neg_sampling'] and not self.use_full_sampling):
            raise NotImplementedError('only the negative-sampling loader is transcribed')
        self.sample_func = self._get_neg_sample
        self._get_history_items_u()
        # use_neighborhood_loss is unset in MMRec's configs -> False (deviation 6)

    def pretrain_setup(self):
        """Reset dataloader. Outputing the same positive & negative samples with each training."""
        if self.shuffle:
            self.dataset = self.dataset_bk.copy(self.dataset_bk.df)
        self.all_items.sort()
        if self.use_full_sampling:
            self.all_uids.sort()
        random.shuffle(self.all_items)

    def inter_matrix(self, form='coo', value_field=None):
        return self._create_sparse_matrix(self.dataset.df, self.dataset.uid_field,
                                          self.dataset.iid_field, form, value_field)

    def _create_sparse_matrix(self, df_feat, source_field, target_field, form='coo', value_field=None):
        src = df_feat[source_field].values
        tgt = df_feat[target_field].values
        if value_field is None:
            data = np.ones(len(df_feat))
        else:
            data = df_feat[value_field].values
        mat = sp.coo_matrix((data, (src, tgt)), shape=(self.dataset.user_num, self.dataset.item_num))
        if form == 'coo':
            return mat
        elif form == 'csr':
            return mat.tocsr()
        raise NotImplementedError('sparse matrix format [{}] has not been implemented.'.format(form))

    @property
    def pr_end(self):
        if self.use_full_sampling:
            return len(self.all_uids)
        return len(self.dataset)

    def _shuffle(self):
        self.dataset.shuffle()
        if self.use_full_sampling:
            np.random.shuffle(self.all_uids)

    def _next_batch_data(self):
        return self.sample_func()

    def _get_neg_sample(self):
        cur_data = self.dataset[self.pr: self.pr + self.step]
        self.pr += self.step
        # to tensor
        user_tensor = torch.tensor(cur_data[self.config['USER_ID_FIELD']].values).type(torch.LongTensor).to(self.device)
        item_tensor = torch.tensor(cur_data[self.config['ITEM_ID_FIELD']].values).type(torch.LongTensor).to(self.device)
        batch_tensor = torch.cat((torch.unsqueeze(user_tensor, 0),
                                  torch.unsqueeze(item_tensor, 0)))
        u_ids = cur_data[self.config['USER_ID_FIELD']]
        # sampling negative items only in the dataset (train)
        neg_ids = self._sample_neg_ids(u_ids).to(self.device)
        batch_tensor = torch.cat((batch_tensor, neg_ids.unsqueeze(0)))
        return batch_tensor

    def _sample_neg_ids(self, u_ids):
        neg_ids = []
        for u in u_ids:
            # random 1 item
            iid = self._random()
            while iid in self.history_items_per_u[u]:
                iid = self._random()
            neg_ids.append(iid)
        return torch.tensor(neg_ids).type(torch.LongTensor)

    def _random(self):
        rd_id = random.sample(self.all_items, 1)[0]
        return rd_id

    def _get_history_items_u(self):
        uid_field = self.dataset.uid_field
        iid_field = self.dataset.iid_field
        uid_freq = self.dataset.df.groupby(uid_field)[iid_field]
        for u, u_ls in uid_freq:
            self.history_items_per_u[u] = set(u_ls.values)
        return self.history_items_per_u


class EvalDataLoader(AbstractDataLoader):
    """additional_dataset: training dataset in evaluation (its items are masked)."""

    def __init__(self, config, dataset, additional_dataset=None, batch_size=1, shuffle=False):
        super().__init__(config, dataset, additional_dataset=additional_dataset,
                         batch_size=batch_size, neg_sampling=False, shuffle=shuffle)
        if additional_dataset is None:
            raise ValueError('Training datasets is nan')
        self.eval_items_per_u = []
        self.eval_len_list = []
        self.train_pos_len_list = []

        self.eval_u = self.dataset.df[self.dataset.uid_field].unique()
        self.pos_items_per_u = self._get_pos_items_per_u(self.eval_u).to(self.device)
        self._get_eval_items_per_u(self.eval_u)
        self.eval_u = torch.tensor(self.eval_u).type(torch.LongTensor).to(self.device)

    @property
    def pr_end(self):
        return self.eval_u.shape[0]

    def _shuffle(self):
        self.dataset.shuffle()

    def _next_batch_data(self):
        inter_cnt = sum(self.train_pos_len_list[self.pr: self.pr + self.step])
        batch_users = self.eval_u[self.pr: self.pr + self.step]
        batch_mask_matrix = self.pos_items_per_u[:, self.inter_pr: self.inter_pr + inter_cnt].clone()
        # user_ids to index
        batch_mask_matrix[0] -= self.pr
        self.inter_pr += inter_cnt
        self.pr += self.step
        return [batch_users, batch_mask_matrix]

    def _get_pos_items_per_u(self, eval_users):
        """History items in the training dataset (masked out in evaluation), as a 2 x n matrix of
        (row of the user among eval users, item id)."""
        uid_field = self.additional_dataset.uid_field
        iid_field = self.additional_dataset.iid_field
        uid_freq = self.additional_dataset.df.groupby(uid_field)[iid_field]
        u_ids = []
        i_ids = []
        for i, u in enumerate(eval_users):
            u_ls = uid_freq.get_group(u).values
            i_len = len(u_ls)
            self.train_pos_len_list.append(i_len)
            u_ids.extend([i] * i_len)
            i_ids.extend(u_ls)
        # MMRec: torch.tensor([u_ids, i_ids]); via numpy here (same values, deviation 7)
        return torch.tensor(np.array([u_ids, i_ids], dtype=np.int64)).type(torch.LongTensor)

    def _get_eval_items_per_u(self, eval_users):
        uid_field = self.dataset.uid_field
        iid_field = self.dataset.iid_field
        uid_freq = self.dataset.df.groupby(uid_field)[iid_field]
        for u in eval_users:
            u_ls = uid_freq.get_group(u).values
            self.eval_len_list.append(len(u_ls))
            self.eval_items_per_u.append(u_ls)
        self.eval_len_list = np.asarray(self.eval_len_list)

    def get_eval_items(self):
        return self.eval_items_per_u

    def get_eval_len_list(self):
        return self.eval_len_list

    def get_eval_users(self):
        return self.eval_u.cpu()


# ---------------------------------------------------------------- src/utils/metrics.py
def recall_(pos_index, pos_len):
    rec_ret = np.cumsum(pos_index, axis=1) / pos_len.reshape(-1, 1)
    return rec_ret.mean(axis=0)


def ndcg_(pos_index, pos_len):
    len_rank = np.full_like(pos_len, pos_index.shape[1])
    idcg_len = np.where(pos_len > len_rank, len_rank, pos_len)

    iranks = np.zeros_like(pos_index, dtype=np.float64)
    iranks[:, :] = np.arange(1, pos_index.shape[1] + 1)
    idcg = np.cumsum(1.0 / np.log2(iranks + 1), axis=1)
    for row, idx in enumerate(idcg_len):
        idcg[row, idx:] = idcg[row, idx - 1]

    ranks = np.zeros_like(pos_index, dtype=np.float64)
    ranks[:, :] = np.arange(1, pos_index.shape[1] + 1)
    dcg = 1.0 / np.log2(ranks + 1)
    dcg = np.cumsum(np.where(pos_index, dcg, 0), axis=1)

    result = dcg / idcg
    return result.mean(axis=0)


def map_(pos_index, pos_len):
    pre = pos_index.cumsum(axis=1) / np.arange(1, pos_index.shape[1] + 1)
    sum_pre = np.cumsum(pre * pos_index.astype(np.float64), axis=1)
    len_rank = np.full_like(pos_len, pos_index.shape[1])
    actual_len = np.where(pos_len > len_rank, len_rank, pos_len)
    result = np.zeros_like(pos_index, dtype=np.float64)
    for row, lens in enumerate(actual_len):
        ranges = np.arange(1, pos_index.shape[1] + 1)
        ranges[lens:] = ranges[lens - 1]
        result[row] = sum_pre[row] / ranges
    return result.mean(axis=0)


def precision_(pos_index, pos_len):
    rec_ret = pos_index.cumsum(axis=1) / np.arange(1, pos_index.shape[1] + 1)
    return rec_ret.mean(axis=0)


metrics_dict = {
    'ndcg': ndcg_,
    'recall': recall_,
    'precision': precision_,
    'map': map_,
}


# ---------------------------------------------------------------- src/utils/topk_evaluator.py
class TopKEvaluator(object):
    def __init__(self, config):
        self.config = config
        self.metrics = [m.lower() for m in config['metrics']]
        self.topk = config['topk']

    def evaluate(self, batch_matrix_list, eval_data, is_test=False, idx=0):
        pos_items = eval_data.get_eval_items()
        pos_len_list = eval_data.get_eval_len_list()
        topk_index = torch.cat(batch_matrix_list, dim=0).cpu().numpy()
        # (save_recommended_topk only acts when is_test; fit never passes is_test -- deviation 6)
        assert len(pos_len_list) == len(topk_index)
        # if recom right?  (MMRec's own hit test, kept as is: its cost is part of MMRec's evaluation)
        bool_rec_matrix = []
        for m, n in zip(pos_items, topk_index):
            bool_rec_matrix.append([True if i in m else False for i in n])
        bool_rec_matrix = np.asarray(bool_rec_matrix)

        metric_dict = {}
        result_list = self._calculate_metrics(pos_len_list, bool_rec_matrix)
        for metric, value in zip(self.metrics, result_list):
            for k in self.topk:
                key = '{}@{}'.format(metric, k)
                metric_dict[key] = round(value[k - 1], 4)
        return metric_dict

    def _calculate_metrics(self, pos_len_list, topk_index):
        result_list = []
        for metric in self.metrics:
            metric_fuc = metrics_dict[metric.lower()]
            result = metric_fuc(topk_index, pos_len_list)
            result_list.append(result)
        return np.stack(result_list, axis=0)


# ---------------------------------------------------------------- abstract_recommender.py + mgcn.py
class GeneralRecommender(nn.Module):
    def __init__(self, config, dataloader):
        super(GeneralRecommender, self).__init__()
        self.USER_ID = config['USER_ID_FIELD']
        self.ITEM_ID = config['ITEM_ID_FIELD']
        self.n_users = dataloader.dataset.get_user_num()
        self.n_items = dataloader.dataset.get_item_num()

        self.batch_size = config['train_batch_size']
        self.device = config['device']

        # load encoded features here (re-read for every model: nn.Embedding.from_pretrained shares
        # the tensor's storage and MGCN trains it, so features must not be reused across seeds)
        self.v_feat, self.t_feat = None, None
        if not config['end2end'] and config['is_multimodal_model']:
            dataset_path = config['data_path']
            v_feat_file_path = os.path.join(dataset_path, config['vision_feature_file'])
            t_feat_file_path = os.path.join(dataset_path, config['text_feature_file'])
            if os.path.isfile(v_feat_file_path):
                self.v_feat = torch.from_numpy(np.load(v_feat_file_path, allow_pickle=True)).type(torch.FloatTensor).to(
                    self.device)
            if os.path.isfile(t_feat_file_path):
                self.t_feat = torch.from_numpy(np.load(t_feat_file_path, allow_pickle=True)).type(torch.FloatTensor).to(
                    self.device)
            assert self.v_feat is not None or self.t_feat is not None, 'Features all NONE'

    def pre_epoch_processing(self):
        pass

    def post_epoch_processing(self):
        pass


# In-memory stand-in for MMRec's image_adj_{k}_{sparse}.pt / text_adj_... cache files (deviation 2).
_ADJ_CACHE = {}


class MGCN(GeneralRecommender):
    def __init__(self, config, dataset):
        super(MGCN, self).__init__(config, dataset)
        self.sparse = True
        self.cl_loss = config['cl_loss']
        self.n_ui_layers = config['n_ui_layers']
        self.embedding_dim = config['embedding_size']
        self.knn_k = config['knn_k']
        self.n_layers = config['n_layers']
        self.reg_weight = config['reg_weight']

        # load dataset info
        self.interaction_matrix = dataset.inter_matrix(form='coo').astype(np.float32)

        self.user_embedding = nn.Embedding(self.n_users, self.embedding_dim)
        self.item_id_embedding = nn.Embedding(self.n_items, self.embedding_dim)
        nn.init.xavier_uniform_(self.user_embedding.weight)
        nn.init.xavier_uniform_(self.item_id_embedding.weight)

        image_adj_file = ('image', config['data_path'], self.knn_k, self.sparse)
        text_adj_file = ('text', config['data_path'], self.knn_k, self.sparse)

        self.norm_adj = self.get_adj_mat()
        self.R = self.sparse_mx_to_torch_sparse_tensor(self.R).float().to(self.device)
        self.norm_adj = self.sparse_mx_to_torch_sparse_tensor(self.norm_adj).float().to(self.device)

        if self.v_feat is not None:
            self.image_embedding = nn.Embedding.from_pretrained(self.v_feat, freeze=False)
            if image_adj_file in _ADJ_CACHE:
                image_adj = _ADJ_CACHE[image_adj_file]
            else:
                image_adj = build_sim(self.image_embedding.weight.detach())
                image_adj = build_knn_normalized_graph(image_adj, topk=self.knn_k, is_sparse=self.sparse,
                                                       norm_type='sym')
                _ADJ_CACHE[image_adj_file] = image_adj
            self.image_original_adj = image_adj.to(self.device)  # MMRec: .cuda() (deviation 3)

        if self.t_feat is not None:
            self.text_embedding = nn.Embedding.from_pretrained(self.t_feat, freeze=False)
            if text_adj_file in _ADJ_CACHE:
                text_adj = _ADJ_CACHE[text_adj_file]
            else:
                text_adj = build_sim(self.text_embedding.weight.detach())
                text_adj = build_knn_normalized_graph(text_adj, topk=self.knn_k, is_sparse=self.sparse, norm_type='sym')
                _ADJ_CACHE[text_adj_file] = text_adj
            self.text_original_adj = text_adj.to(self.device)  # MMRec: .cuda() (deviation 3)

        if self.v_feat is not None:
            self.image_trs = nn.Linear(self.v_feat.shape[1], self.embedding_dim)
        if self.t_feat is not None:
            self.text_trs = nn.Linear(self.t_feat.shape[1], self.embedding_dim)

        self.softmax = nn.Softmax(dim=-1)

        self.query_common = nn.Sequential(
            nn.Linear(self.embedding_dim, self.embedding_dim),
            nn.Tanh(),
            nn.Linear(self.embedding_dim, 1, bias=False)
        )

        self.gate_v = nn.Sequential(
            nn.Linear(self.embedding_dim, self.embedding_dim),
            nn.Sigmoid()
        )

        self.gate_t = nn.Sequential(
            nn.Linear(self.embedding_dim, self.embedding_dim),
            nn.Sigmoid()
        )

        self.gate_image_prefer = nn.Sequential(
            nn.Linear(self.embedding_dim, self.embedding_dim),
            nn.Sigmoid()
        )

        self.gate_text_prefer = nn.Sequential(
            nn.Linear(self.embedding_dim, self.embedding_dim),
            nn.Sigmoid()
        )

        self.tau = 0.5

    def pre_epoch_processing(self):
        pass

    def get_adj_mat(self):
        adj_mat = sp.dok_matrix((self.n_users + self.n_items, self.n_users + self.n_items), dtype=np.float32)
        adj_mat = adj_mat.tolil()
        R = self.interaction_matrix.tolil()

        adj_mat[:self.n_users, self.n_users:] = R
        adj_mat[self.n_users:, :self.n_users] = R.T
        adj_mat = adj_mat.todok()

        def normalized_adj_single(adj):
            rowsum = np.array(adj.sum(1))

            d_inv = np.power(rowsum, -0.5).flatten()
            d_inv[np.isinf(d_inv)] = 0.
            d_mat_inv = sp.diags(d_inv)

            norm_adj = d_mat_inv.dot(adj_mat)
            norm_adj = norm_adj.dot(d_mat_inv)
            return norm_adj.tocoo()

        norm_adj_mat = normalized_adj_single(adj_mat)
        norm_adj_mat = norm_adj_mat.tolil()
        self.R = norm_adj_mat[:self.n_users, self.n_users:]
        return norm_adj_mat.tocsr()

    def sparse_mx_to_torch_sparse_tensor(self, sparse_mx):
        """Convert a scipy sparse matrix to a torch sparse tensor."""
        sparse_mx = sparse_mx.tocoo().astype(np.float32)
        indices = torch.from_numpy(np.vstack((sparse_mx.row, sparse_mx.col)).astype(np.int64))
        values = torch.from_numpy(sparse_mx.data)
        shape = torch.Size(sparse_mx.shape)
        # MMRec: torch.sparse.FloatTensor(indices, values, shape) (deprecated; deviation 4)
        return torch.sparse_coo_tensor(indices, values, shape)

    def forward(self, adj, train=False):
        if self.v_feat is not None:
            image_feats = self.image_trs(self.image_embedding.weight)
        if self.t_feat is not None:
            text_feats = self.text_trs(self.text_embedding.weight)

        # Behavior-Guided Purifier
        image_item_embeds = torch.multiply(self.item_id_embedding.weight, self.gate_v(image_feats))
        text_item_embeds = torch.multiply(self.item_id_embedding.weight, self.gate_t(text_feats))

        # User-Item View
        item_embeds = self.item_id_embedding.weight
        user_embeds = self.user_embedding.weight
        ego_embeddings = torch.cat([user_embeds, item_embeds], dim=0)
        all_embeddings = [ego_embeddings]
        for i in range(self.n_ui_layers):
            side_embeddings = torch.sparse.mm(adj, ego_embeddings)
            ego_embeddings = side_embeddings
            all_embeddings += [ego_embeddings]
        all_embeddings = torch.stack(all_embeddings, dim=1)
        all_embeddings = all_embeddings.mean(dim=1, keepdim=False)
        content_embeds = all_embeddings

        # Item-Item View
        if self.sparse:
            for i in range(self.n_layers):
                image_item_embeds = torch.sparse.mm(self.image_original_adj, image_item_embeds)
        else:
            for i in range(self.n_layers):
                image_item_embeds = torch.mm(self.image_original_adj, image_item_embeds)
        image_user_embeds = torch.sparse.mm(self.R, image_item_embeds)
        image_embeds = torch.cat([image_user_embeds, image_item_embeds], dim=0)
        if self.sparse:
            for i in range(self.n_layers):
                text_item_embeds = torch.sparse.mm(self.text_original_adj, text_item_embeds)
        else:
            for i in range(self.n_layers):
                text_item_embeds = torch.mm(self.text_original_adj, text_item_embeds)
        text_user_embeds = torch.sparse.mm(self.R, text_item_embeds)
        text_embeds = torch.cat([text_user_embeds, text_item_embeds], dim=0)

        # Behavior-Aware Fuser
        att_common = torch.cat([self.query_common(image_embeds), self.query_common(text_embeds)], dim=-1)
        weight_common = self.softmax(att_common)
        common_embeds = weight_common[:, 0].unsqueeze(dim=1) * image_embeds + weight_common[:, 1].unsqueeze(
            dim=1) * text_embeds
        sep_image_embeds = image_embeds - common_embeds
        sep_text_embeds = text_embeds - common_embeds

        image_prefer = self.gate_image_prefer(content_embeds)
        text_prefer = self.gate_text_prefer(content_embeds)
        sep_image_embeds = torch.multiply(image_prefer, sep_image_embeds)
        sep_text_embeds = torch.multiply(text_prefer, sep_text_embeds)
        side_embeds = (sep_image_embeds + sep_text_embeds + common_embeds) / 3

        all_embeds = content_embeds + side_embeds

        all_embeddings_users, all_embeddings_items = torch.split(all_embeds, [self.n_users, self.n_items], dim=0)

        if train:
            return all_embeddings_users, all_embeddings_items, side_embeds, content_embeds

        return all_embeddings_users, all_embeddings_items

    def bpr_loss(self, users, pos_items, neg_items):
        pos_scores = torch.sum(torch.mul(users, pos_items), dim=1)
        neg_scores = torch.sum(torch.mul(users, neg_items), dim=1)

        regularizer = 1. / 2 * (users ** 2).sum() + 1. / 2 * (pos_items ** 2).sum() + 1. / 2 * (neg_items ** 2).sum()
        regularizer = regularizer / self.batch_size

        maxi = F.logsigmoid(pos_scores - neg_scores)
        mf_loss = -torch.mean(maxi)

        emb_loss = self.reg_weight * regularizer
        reg_loss = 0.0
        return mf_loss, emb_loss, reg_loss

    def InfoNCE(self, view1, view2, temperature):
        view1, view2 = F.normalize(view1, dim=1), F.normalize(view2, dim=1)
        pos_score = (view1 * view2).sum(dim=-1)
        pos_score = torch.exp(pos_score / temperature)
        ttl_score = torch.matmul(view1, view2.transpose(0, 1))
        ttl_score = torch.exp(ttl_score / temperature).sum(dim=1)
        cl_loss = -torch.log(pos_score / ttl_score)
        return torch.mean(cl_loss)

    def calculate_loss(self, interaction):
        users = interaction[0]
        pos_items = interaction[1]
        neg_items = interaction[2]

        ua_embeddings, ia_embeddings, side_embeds, content_embeds = self.forward(
            self.norm_adj, train=True)

        u_g_embeddings = ua_embeddings[users]
        pos_i_g_embeddings = ia_embeddings[pos_items]
        neg_i_g_embeddings = ia_embeddings[neg_items]

        batch_mf_loss, batch_emb_loss, batch_reg_loss = self.bpr_loss(u_g_embeddings, pos_i_g_embeddings,
                                                                      neg_i_g_embeddings)

        side_embeds_users, side_embeds_items = torch.split(side_embeds, [self.n_users, self.n_items], dim=0)
        content_embeds_user, content_embeds_items = torch.split(content_embeds, [self.n_users, self.n_items], dim=0)
        cl_loss = self.InfoNCE(side_embeds_items[pos_items], content_embeds_items[pos_items], 0.2) + self.InfoNCE(
            side_embeds_users[users], content_embeds_user[users], 0.2)

        return batch_mf_loss + batch_emb_loss + batch_reg_loss + self.cl_loss * cl_loss

    def full_sort_predict(self, interaction):
        user = interaction[0]

        restore_user_e, restore_item_e = self.forward(self.norm_adj)
        u_embeddings = restore_user_e[user]

        # dot with all item embedding to accelerate
        scores = torch.matmul(u_embeddings, restore_item_e.transpose(0, 1))
        return scores


# ---------------------------------------------------------------- src/common/loss.py
class BPRLoss(nn.Module):

    """ BPRLoss, based on Bayesian Personalized Ranking

    Args:
        - gamma(float): Small value to avoid division by zero

    Shape:
        - Pos_score: (N)
        - Neg_score: (N), same shape as the Pos_score
        - Output: scalar.
    """
    def __init__(self, gamma=1e-10):
        super(BPRLoss, self).__init__()
        self.gamma = gamma

    def forward(self, pos_score, neg_score):
        loss = - torch.log(self.gamma + torch.sigmoid(pos_score - neg_score)).mean()
        return loss


class EmbLoss(nn.Module):
    """ EmbLoss, regularization on embeddings

    """
    def __init__(self, norm=2):
        super(EmbLoss, self).__init__()
        self.norm = norm

    def forward(self, *embeddings):
        emb_loss = torch.zeros(1).to(embeddings[-1].device)
        for embedding in embeddings:
            emb_loss += torch.norm(embedding, p=self.norm)
        emb_loss /= embeddings[-1].shape[0]
        return emb_loss


# ---------------------------------------------------------------- src/common/init.py
def xavier_uniform_initialization(module):
    r""" using `xavier_uniform_` in PyTorch to initialize the parameters in
    nn.Embedding and nn.Linear layers. For bias in nn.Linear layers,
    using constant 0 to initialize.

    (Imported by MMRec's lightgcn.py, where ``self.apply(xavier_uniform_initialization)`` is
    commented out: unused, kept for completeness.)
    """
    if isinstance(module, nn.Embedding) or isinstance(module, nn.Parameter):
        nn.init.xavier_uniform_(module.weight.data)
    elif isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight.data)
        if module.bias is not None:
            nn.init.constant_(module.bias.data, 0)


# ---------------------------------------------------------------- src/models/lightgcn.py
class LightGCN(GeneralRecommender):
    r"""LightGCN is a GCN-based recommender model.

    LightGCN includes only the most essential component in GCN -- neighborhood aggregation -- for
    collaborative filtering. Specifically, LightGCN learns user and item embeddings by linearly
    propagating them on the user-item interaction graph, and uses the weighted sum of the embeddings
    learned at all layers as the final embedding.

    We implement the model following the original author with a pairwise training mode.
    """
    def __init__(self, config, dataset):
        super(LightGCN, self).__init__(config, dataset)

        # load dataset info
        self.interaction_matrix = dataset.inter_matrix(
            form='coo').astype(np.float32)

        # load parameters info
        self.latent_dim = config['embedding_size']  # int type:the embedding size of lightGCN
        self.n_layers = config['n_layers']  # int type:the layer num of lightGCN
        self.reg_weight = config['reg_weight']  # float32 type: the weight decay for l2 normalizaton

        self.mf_loss = BPRLoss()
        self.reg_loss = EmbLoss()

        self.embedding_dict = self._init_model()

        # generate intermediate data
        self.norm_adj_matrix = self.get_norm_adj_mat().to(self.device)

        # parameters initialization
        #self.apply(xavier_uniform_initialization)

    def _init_model(self):
        initializer = nn.init.xavier_uniform_
        embedding_dict = nn.ParameterDict({
            'user_emb': nn.Parameter(initializer(torch.empty(self.n_users, self.latent_dim))),
            'item_emb': nn.Parameter(initializer(torch.empty(self.n_items, self.latent_dim)))
        })

        return embedding_dict

    def get_norm_adj_mat(self):
        r"""Get the normalized interaction matrix of users and items.

        Construct the square matrix from the training data and normalize it
        using the laplace matrix.

        .. math::
            A_{hat} = D^{-0.5} \times A \times D^{-0.5}

        Returns:
            Sparse tensor of the normalized interaction matrix.
        """
        # build adj matrix
        A = sp.dok_matrix((self.n_users + self.n_items,
                           self.n_users + self.n_items), dtype=np.float32)
        inter_M = self.interaction_matrix
        inter_M_t = self.interaction_matrix.transpose()
        data_dict = dict(zip(zip(inter_M.row, inter_M.col+self.n_users),
                             [1]*inter_M.nnz))
        data_dict.update(dict(zip(zip(inter_M_t.row+self.n_users, inter_M_t.col),
                                  [1]*inter_M_t.nnz)))
        if hasattr(A, '_update'):
            A._update(data_dict)
        else:
            A._dict.update(data_dict)  # today's scipy has no dok_matrix._update (deviation 11)
        # norm adj matrix
        sumArr = (A > 0).sum(axis=1)
        # add epsilon to avoid Devide by zero Warning
        diag = np.array(sumArr.flatten())[0] + 1e-7
        diag = np.power(diag, -0.5)
        D = sp.diags(diag)
        L = D * A * D
        # covert norm_adj matrix to tensor
        L = sp.coo_matrix(L)
        row = L.row
        col = L.col
        i = torch.LongTensor([row, col])
        data = torch.FloatTensor(L.data)
        # MMRec: torch.sparse.FloatTensor(i, data, torch.Size(L.shape)) (deprecated; deviation 11)
        SparseL = torch.sparse_coo_tensor(i, data, torch.Size(L.shape))  # indice, values, shape
        return SparseL

    def get_ego_embeddings(self):
        r"""Get the embedding of users and items and combine to an embedding matrix.

        Returns:
            Tensor of the embedding matrix. Shape of [n_items+n_users, embedding_dim]
        """
        # user_embeddings = self.user_embedding.weight
        # item_embeddings = self.item_embedding.weight
        # ego_embeddings = torch.cat([user_embeddings, item_embeddings], dim=0)
        ego_embeddings = torch.cat([self.embedding_dict['user_emb'], self.embedding_dict['item_emb']], 0)
        return ego_embeddings

    def forward(self):
        all_embeddings = self.get_ego_embeddings()
        embeddings_list = [all_embeddings]

        for layer_idx in range(self.n_layers):
            all_embeddings = torch.sparse.mm(self.norm_adj_matrix, all_embeddings)
            embeddings_list.append(all_embeddings)
        lightgcn_all_embeddings = torch.stack(embeddings_list, dim=1)
        lightgcn_all_embeddings = torch.mean(lightgcn_all_embeddings, dim=1)

        user_all_embeddings = lightgcn_all_embeddings[:self.n_users, :]
        item_all_embeddings = lightgcn_all_embeddings[self.n_users:, :]

        return user_all_embeddings, item_all_embeddings

    def calculate_loss(self, interaction):
        user = interaction[0]
        pos_item = interaction[1]
        neg_item = interaction[2]

        user_all_embeddings, item_all_embeddings = self.forward()

        u_embeddings = user_all_embeddings[user, :]
        posi_embeddings = item_all_embeddings[pos_item, :]
        negi_embeddings = item_all_embeddings[neg_item, :]

        # calculate BPR Loss
        pos_scores = torch.mul(u_embeddings, posi_embeddings).sum(dim=1)
        neg_scores = torch.mul(u_embeddings, negi_embeddings).sum(dim=1)
        mf_loss = self.mf_loss(pos_scores, neg_scores)

        # calculate BPR Loss
        u_ego_embeddings = self.embedding_dict['user_emb'][user, :]
        posi_ego_embeddings = self.embedding_dict['item_emb'][pos_item, :]
        negi_ego_embeddings = self.embedding_dict['item_emb'][neg_item, :]

        reg_loss = self.reg_loss(u_ego_embeddings, posi_ego_embeddings, negi_ego_embeddings)
        loss = mf_loss + self.reg_weight * reg_loss

        return loss

    def full_sort_predict(self, interaction):
        user = interaction[0]
        restore_user_e, restore_item_e = self.forward()
        u_embeddings = restore_user_e[user, :]

        # dot with all item embedding to accelerate
        scores = torch.matmul(u_embeddings, restore_item_e.transpose(0, 1))

        return scores


MODELS = {'mgcn': MGCN, 'lightgcn': LightGCN}


# ---------------------------------------------------------------- src/common/trainer.py
class Trainer(object):
    def __init__(self, config, model, on_epoch=None):
        self.config = config
        self.model = model
        self.learner = config['learner']
        self.learning_rate = config['learning_rate']
        self.epochs = config['epochs']
        self.eval_step = min(config['eval_step'], self.epochs)
        self.stopping_step = config['stopping_step']
        self.clip_grad_norm = config['clip_grad_norm']  # unset in MMRec's configs -> None
        self.valid_metric = config['valid_metric'].lower()
        self.valid_metric_bigger = config['valid_metric_bigger']
        self.test_batch_size = config['eval_batch_size']
        self.device = config['device']
        self.weight_decay = 0.0
        if config['weight_decay'] is not None:
            wd = config['weight_decay']
            self.weight_decay = eval(wd) if isinstance(wd, str) else wd

        self.req_training = config['req_training']

        self.start_epoch = 0
        self.cur_step = 0

        tmp_dd = {}
        for j, k in list(itertools.product(config['metrics'], config['topk'])):
            tmp_dd[f'{j.lower()}@{k}'] = 0.0
        self.best_valid_score = -1
        self.best_valid_result = tmp_dd
        self.best_test_upon_valid = tmp_dd
        self.best_epoch = None  # (not in MMRec: its log line "best eval result in epoch %d")
        self.train_loss_dict = dict()
        self.optimizer = self._build_optimizer()

        lr_scheduler = config['learning_rate_scheduler']
        fac = lambda epoch: lr_scheduler[0] ** (epoch / lr_scheduler[1])
        scheduler = optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda=fac)
        self.lr_scheduler = scheduler

        self.evaluator = TopKEvaluator(config)
        self.on_epoch = on_epoch

    def _build_optimizer(self):
        if self.learner.lower() == 'adam':
            optimizer = optim.Adam(self.model.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay)
        elif self.learner.lower() == 'sgd':
            optimizer = optim.SGD(self.model.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay)
        elif self.learner.lower() == 'adagrad':
            optimizer = optim.Adagrad(self.model.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay)
        elif self.learner.lower() == 'rmsprop':
            optimizer = optim.RMSprop(self.model.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay)
        else:
            optimizer = optim.Adam(self.model.parameters(), lr=self.learning_rate)
        return optimizer

    def _train_epoch(self, train_data, epoch_idx, loss_func=None):
        if not self.req_training:
            return 0.0, []
        self.model.train()
        loss_func = loss_func or self.model.calculate_loss
        total_loss = None
        loss_batches = []
        for batch_idx, interaction in enumerate(train_data):
            self.optimizer.zero_grad()
            losses = loss_func(interaction)

            if isinstance(losses, tuple):
                loss = sum(losses)
                loss_tuple = tuple(per_loss.item() for per_loss in losses)
                total_loss = loss_tuple if total_loss is None else tuple(map(sum, zip(total_loss, loss_tuple)))
            else:
                loss = losses
                total_loss = losses.item() if total_loss is None else total_loss + losses.item()
            if self._check_nan(loss):
                print('Loss is nan at epoch: {}, batch index: {}. Exiting.'.format(epoch_idx, batch_idx))
                return loss, torch.tensor(0.0)
            # (mg branch omitted: mg=False; deviation 6)
            loss.backward()
            if self.clip_grad_norm:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), **self.clip_grad_norm)
            self.optimizer.step()
            loss_batches.append(loss.detach())
        return total_loss, loss_batches

    def _valid_epoch(self, valid_data):
        valid_result = self.evaluate(valid_data)
        valid_score = valid_result[self.valid_metric] if self.valid_metric else valid_result['NDCG@20']
        return valid_score, valid_result

    def _check_nan(self, loss):
        if torch.isnan(loss):
            return True

    def fit(self, train_data, valid_data=None, test_data=None, saved=False, verbose=True):
        for epoch_idx in range(self.start_epoch, self.epochs):
            # train
            training_start_time = time.time()
            self.model.pre_epoch_processing()
            train_loss, _ = self._train_epoch(train_data, epoch_idx)
            if torch.is_tensor(train_loss):
                # get nan loss
                break
            self.lr_scheduler.step()

            self.train_loss_dict[epoch_idx] = sum(train_loss) if isinstance(train_loss, tuple) else train_loss
            training_end_time = time.time()
            self.model.post_epoch_processing()

            # eval: To ensure the test result is the best model under validation data, set self.eval_step == 1
            if (epoch_idx + 1) % self.eval_step == 0:
                valid_start_time = time.time()
                t_valid = time.perf_counter()  # (not MMRec: seconds of each evaluation, deviation 10)
                valid_score, valid_result = self._valid_epoch(valid_data)
                valid_eval_seconds = time.perf_counter() - t_valid
                self.best_valid_score, self.cur_step, stop_flag, update_flag = early_stopping(
                    valid_score, self.best_valid_score, self.cur_step,
                    max_step=self.stopping_step, bigger=self.valid_metric_bigger)
                # test
                t_test = time.perf_counter()  # (not MMRec, deviation 10)
                _, test_result = self._valid_epoch(test_data)
                test_eval_seconds = time.perf_counter() - t_test
                if update_flag:
                    self.best_valid_result = valid_result
                    self.best_test_upon_valid = test_result
                    self.best_epoch = epoch_idx
                if verbose and self.on_epoch is not None:
                    self.on_epoch(epoch_idx, self.train_loss_dict[epoch_idx], valid_result, test_result,
                                  training_end_time - training_start_time, time.time() - valid_start_time,
                                  update_flag, valid_eval_seconds, test_eval_seconds)
                if stop_flag:
                    break
        return self.best_valid_score, self.best_valid_result, self.best_test_upon_valid

    @torch.no_grad()
    def evaluate(self, eval_data, is_test=False, idx=0):
        self.model.eval()

        # batch full users
        batch_matrix_list = []
        for batch_idx, batched_data in enumerate(eval_data):
            # predict: interaction without item ids
            scores = self.model.full_sort_predict(batched_data)
            masked_items = batched_data[1]
            # mask out pos items
            scores[masked_items[0], masked_items[1]] = -1e10
            # rank and get top-k
            _, topk_index = torch.topk(scores, max(self.config['topk']), dim=-1)  # nusers x topk
            batch_matrix_list.append(topk_index)
        return self.evaluator.evaluate(batch_matrix_list, eval_data, is_test=is_test, idx=idx)


# ---------------------------------------------------------------- driver (src/utils/quick_start.py)
def find_inter_file(folder):
    name = os.path.basename(os.path.normpath(folder))
    preferred = os.path.join(folder, name + '.inter')
    if os.path.isfile(preferred):
        return os.path.basename(preferred)
    found = sorted(glob.glob(os.path.join(folder, '*.inter')))
    if len(found) != 1:
        raise SystemExit(f'{folder}: expected {name}.inter or exactly one *.inter file, found {found}')
    return os.path.basename(found[0])


def summary(values):
    return {
        'mean': round(statistics.mean(values), 5),
        'stdev': round(statistics.stdev(values), 5) if len(values) > 1 else 0.0,
        'min': min(values),
        'max': max(values),
    }


# ---------------------------------------------------------------- equivalence check (not MMRec)
_PARAM_MAP = (("proj.image", "image_trs"), ("proj.text", "text_trs"), ("purifier.image.0", "gate_v.0"),
              ("purifier.text.0", "gate_t.0"), ("prefer.image.0", "gate_image_prefer.0"),
              ("prefer.text.0", "gate_text_prefer.0"), ("query.0", "query_common.0"),
              ("query.2", "query_common.2"))


def prismrec_on_mmrec_stream(mm, train_data, config, precision, seed, on_epoch):
    """prismrec's MGCN, started from MMRec's initial weights ``mm`` and trained on the batches
    MMRec's loader draws for this seed (same shuffles, same negatives), evaluated by prismrec.

    With the random streams shared, what is left to differ is the implementation: the model,
    its loss, the optimiser, the schedule and the evaluator."""
    from prismrec import load_dataset
    from prismrec.data.sampler import Batch
    from prismrec.evaluation import evaluate_model
    from prismrec.models.base import build_model
    from prismrec.models.mgcn import MGCNConfig

    ds = load_dataset(config['data_path'])
    ours = build_model('mgcn', ds, MGCNConfig(feature_precision=precision, cl_precision=precision))
    n = ds.n_users
    with torch.no_grad():
        ours.embedding[:n].copy_(mm.user_embedding.weight)
        ours.embedding[n:].copy_(mm.item_id_embedding.weight)
        ours.feat_image.copy_(mm.image_embedding.weight)
        ours.feat_text.copy_(mm.text_embedding.weight)
        for src, dst in _PARAM_MAP:
            a, b = ours.get_submodule(src), mm.get_submodule(dst)
            a.weight.copy_(b.weight)
            if a.bias is not None:
                a.bias.copy_(b.bias)
    opt = ours.configure_optimizer(config['learning_rate'], config['weight_decay'])
    ours.step_in_backward(opt)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, ours.lr_factor)
    best, best_epoch, losses = None, -1, []
    for epoch in range(config['epochs']):
        t0 = time.time()
        ours.train()
        total = 0.0
        for bt in train_data:
            opt.zero_grad(set_to_none=True)
            loss = ours.loss(Batch(bt[0], bt[1], bt[2]))
            loss.backward()
            opt.step()
            total += loss.item()
        sched.step()
        train_s, t1 = time.time() - t0, time.time()
        res = evaluate_model(ours, ds, ks=(10, 20, 50))
        valid = {k: round(v, 4) for k, v in res['valid'].items()}
        test = {k: round(v, 4) for k, v in res['test'].items()}
        is_best = best is None or valid['recall@20'] > best[0]['recall@20']
        if is_best:
            best, best_epoch = (valid, test), epoch
        losses.append(round(total, 4))
        on_epoch(epoch, total, valid, test, train_s, time.time() - t1, is_best)
    valid, test = best
    return {'seed': seed, 'best_epoch': best_epoch, 'valid_recall@20': valid['recall@20'],
            'test_recall@20': test['recall@20'], 'test_ndcg@20': test['ndcg@20'],
            'test': {k: test[k] for k in ('recall@10', 'ndcg@10', 'recall@20', 'ndcg@20', 'recall@50', 'ndcg@50')},
            'train_loss': losses}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--data', default='/tmp/baby-like', help='MMRec-format dataset folder')
    ap.add_argument('--model', choices=tuple(MODELS), default='mgcn',
                    help="MMRec's model to train (settings: CONFIGS in this file)")
    ap.add_argument('--seeds', default='999', help='comma-separated seeds (MMRec default 999)')
    ap.add_argument('--epochs', type=int, default=5)
    ap.add_argument('--threads', type=int, default=2, help='torch.set_num_threads')
    ap.add_argument('--device', default='cpu', help="torch device (MMRec: 'cuda' when available)")
    ap.add_argument('--out', default=None, help='JSON summary path (written atomically)')
    ap.add_argument('--prismrec', choices=('float32', 'auto'), default=None,
                    help="instead of MMRec's model and trainer, train prismrec's MGCN (with this "
                         "precision) from MMRec's initial weights on MMRec's batch stream for the seed, "
                         "and evaluate it with prismrec's evaluator (an equivalence check)")
    args = ap.parse_args(argv)
    if args.prismrec and args.model != 'mgcn':
        ap.error(f'--prismrec is an MGCN equivalence check (prismrec\'s MGCN on MMRec\'s MGCN '
                 f'weights and batches); it cannot be combined with --model {args.model}')
    # MMRec's own code triggers these with current pandas/torch; they do not change results
    warnings.filterwarnings('ignore', message='The inplace keyword')
    warnings.filterwarnings('ignore', message='Sparse invariant checks')
    warnings.filterwarnings('ignore', message='Creating a tensor from a list of numpy.ndarrays')

    data = os.path.abspath(args.data)
    if not os.path.isdir(data) and os.path.normpath(data) == '/tmp/baby-like':
        maker = '/work/shared/data/make_baby_like.py'
        print(f'{data} missing: python {maker} --out {data}', flush=True)
        subprocess.run([sys.executable, maker, '--out', data], check=True)
    seeds = [int(s) for s in args.seeds.split(',') if s.strip()]
    torch.set_num_threads(args.threads)

    config = Config(CONFIGS[args.model])
    config.update({
        'data_path': data,
        'dataset': os.path.basename(os.path.normpath(data)),
        'inter_file_name': find_inter_file(data),
        'epochs': args.epochs,
        'device': torch.device(args.device),
    })

    t0 = time.time()
    dataset = RecDataset(config)
    print('data:', dataset, flush=True)
    train_dataset, valid_dataset, test_dataset = dataset.split()
    print(f'train: {train_dataset} | valid: {valid_dataset} | test: {test_dataset}', flush=True)
    train_data = TrainDataLoader(config, train_dataset, batch_size=config['train_batch_size'], shuffle=True)
    valid_data = EvalDataLoader(config, valid_dataset, additional_dataset=train_dataset,
                                batch_size=config['eval_batch_size'])
    test_data = EvalDataLoader(config, test_dataset, additional_dataset=train_dataset,
                               batch_size=config['eval_batch_size'])
    print(f'loaders built in {time.time() - t0:.1f}s', flush=True)

    epoch_seconds = []  # training seconds of each epoch of the current seed
    valid_eval_seconds = []  # seconds of _valid_epoch(valid_data) per epoch (MMRec runs only)
    test_eval_seconds = []  # seconds of _valid_epoch(test_data) per epoch (MMRec runs only)

    def on_epoch(epoch, loss, valid, test, train_s, eval_s, best, valid_eval_s=None, test_eval_s=None):
        epoch_seconds.append(round(train_s, 3))
        line = (f'epoch {epoch}  loss {loss:.4f}  valid R@20 {valid["recall@20"]:.4f}  '
                f'test R@20 {test["recall@20"]:.4f}  N@20 {test["ndcg@20"]:.4f}  '
                f'train {train_s:.1f}s  eval {eval_s:.1f}s{"  *" if best else ""}')
        if valid_eval_s is not None:
            valid_eval_seconds.append(round(valid_eval_s, 4))
            test_eval_seconds.append(round(test_eval_s, 4))
            line += f'  valid-eval {valid_eval_s:.2f}s  test-eval {test_eval_s:.2f}s'
        print(line, flush=True)

    runs = []
    for seed in seeds:
        config['seed'] = seed
        init_seed(config['seed'])
        print(f'=== seed {seed} ===', flush=True)
        t_seed = time.time()
        epoch_seconds.clear()
        valid_eval_seconds.clear()
        test_eval_seconds.clear()
        # set random state of dataloader
        train_data.pretrain_setup()
        # model loading and initialization
        model = MODELS[args.model](config, train_data).to(config['device'])
        if args.prismrec:
            runs.append(prismrec_on_mmrec_stream(model, train_data, config, args.prismrec, seed, on_epoch))
            runs[-1]['train_seconds'] = list(epoch_seconds)
            continue
        trainer = Trainer(config, model, on_epoch=on_epoch)
        _, best_valid_result, best_test_upon_valid = trainer.fit(
            train_data, valid_data=valid_data, test_data=test_data)
        print(f'seed {seed}: best epoch {trainer.best_epoch}  valid {dict2str(best_valid_result)}', flush=True)
        print(f'seed {seed}: test  {dict2str(best_test_upon_valid)}  ({time.time() - t_seed:.0f}s)', flush=True)
        runs.append({
            'seed': seed,
            'best_epoch': trainer.best_epoch,
            'valid_recall@20': best_valid_result['recall@20'],
            'test_recall@20': best_test_upon_valid['recall@20'],
            'test_ndcg@20': best_test_upon_valid['ndcg@20'],
            'test': {k: best_test_upon_valid[k] for k in
                     ('recall@10', 'ndcg@10', 'recall@20', 'ndcg@20', 'recall@50', 'ndcg@50')},
            'train_loss': [round(trainer.train_loss_dict[e], 4) for e in sorted(trainer.train_loss_dict)],
            'train_seconds': list(epoch_seconds),
            'valid_eval_seconds': list(valid_eval_seconds),
            'test_eval_seconds': list(test_eval_seconds),
        })

    settings = {
        'mgcn': ('train_batch_size', 'eval_batch_size', 'learning_rate', 'learning_rate_scheduler',
                 'embedding_size', 'n_ui_layers', 'n_layers', 'knn_k', 'reg_weight', 'cl_loss', 'weight_decay'),
        'lightgcn': ('train_batch_size', 'eval_batch_size', 'learning_rate', 'learning_rate_scheduler',
                     'embedding_size', 'n_layers', 'reg_weight', 'weight_decay', 'is_multimodal_model'),
    }[args.model]
    result = {
        'model': f'mmrec-{args.model}' if not args.prismrec else f'prismrec-mgcn-on-mmrec-stream ({args.prismrec})',
        'dataset': config['dataset'],
        'epochs': args.epochs,
        'note': (f"transcription of MMRec's {config['model']} training pipeline (github.com/enoche/MMRec: "
                 f"dataset, TrainDataLoader/EvalDataLoader, {config['model']}, Trainer, TopKEvaluator; "
                 "benchmarks/mmrec_mgcn.py lists the deviations) run with prismrec's benchmark data; seed 999 "
                 "is MMRec's default. Test metrics are taken at the epoch of best valid Recall@20 (0-based), "
                 "rounded to 4 decimals as MMRec does"),
        'timing_note': ("per run and epoch: train_seconds = MMRec's training time of the epoch (its "
                        "loader's sampling included, as MMRec's trainer times it); valid_eval_seconds / "
                        "test_eval_seconds = seconds of one _valid_epoch(valid_data) / _valid_epoch(test_data), "
                        "i.e. one full-ranking evaluation of all valid / all test users (model forward, "
                        "scores, masking, top-50, metrics, with MMRec's own hit test)" + (
                            "; not recorded in --prismrec mode (prismrec evaluates both splits in one pass)"
                            if args.prismrec else "")),
        'settings': {k: config[k] for k in settings},
        'device': str(config['device']),
        'threads': args.threads,
        'torch': torch.__version__,
        'runs': runs,
        'test_recall@20': summary([r['test_recall@20'] for r in runs]),
        'test_ndcg@20': summary([r['test_ndcg@20'] for r in runs]),
        'valid_recall@20': summary([r['valid_recall@20'] for r in runs]),
        'command': 'python ' + ' '.join([os.path.relpath(__file__)] + (sys.argv[1:] if argv is None else argv)),
    }
    print(json.dumps({k: result[k] for k in ('test_recall@20', 'test_ndcg@20', 'valid_recall@20')}), flush=True)
    if args.out:
        out_dir = os.path.dirname(os.path.abspath(args.out))
        os.makedirs(out_dir, exist_ok=True)
        tmp = args.out + '.tmp'
        with open(tmp, 'w') as f:
            json.dump(result, f, indent=2)
            f.write('\n')
        os.replace(tmp, args.out)
        print(f'wrote {args.out}', flush=True)


if __name__ == '__main__':
    main()
