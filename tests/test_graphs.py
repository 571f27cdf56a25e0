"""Shared graph module: kNN graph vs a dense brute-force reference, normalisation, spmm autograd, cache."""
import numpy as np
import pytest
import scipy.sparse as sp
import torch

from prismrec import graphs


def _dense_knn(x, k, weighted):
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    sim = xn @ xn.T
    out = np.zeros_like(sim)
    for i in range(len(sim)):
        top = np.argsort(-sim[i], kind="stable")[:k]
        out[i, top] = sim[i, top] if weighted else 1.0
    return out


@pytest.mark.parametrize("weighted", [True, False])
@pytest.mark.parametrize("block", [7, 1000])
def test_knn_graph_matches_dense_reference(weighted, block):
    x = np.random.default_rng(0).standard_normal((53, 9)).astype(np.float32)
    fast = graphs.knn_graph(x, 5, weighted=weighted, block_size=block).toarray()
    np.testing.assert_allclose(fast, _dense_knn(x, 5, weighted), atol=1e-5)
    assert ((fast != 0).sum(axis=1) == 5).all()


def test_sym_normalize():
    m = sp.csr_matrix(np.array([[0, 2, 0], [2, 0, 1], [0, 1, 0]], np.float32))
    d = np.array([2.0, 3.0, 1.0])
    np.testing.assert_allclose(graphs.sym_normalize(m).toarray(), m.toarray() / np.sqrt(np.outer(d, d)), rtol=1e-5)


def test_bipartite_adjacency_shape_and_symmetry(tiny):
    a = graphs.bipartite_adjacency(tiny.train)
    n = tiny.n_users + tiny.n_items
    assert a.shape == (n, n) and abs(a - a.T).max() < 1e-6
    assert a.nnz == 2 * tiny.train.nnz



def test_binary_csr_counts_a_repeated_pair_once():
    # an uncanonical CSR: user 0 holds item 1 twice, with weights; user 1 an explicit zero
    m = sp.csr_matrix((np.array([3.0, 2.0, 5.0, 0.0]), np.array([1, 1, 2, 0]), np.array([0, 3, 4])), shape=(2, 3))
    assert not m.has_canonical_format
    b = graphs.binary_csr(m)
    np.testing.assert_array_equal(b.toarray(), [[0, 1, 1], [1, 0, 0]])
    assert b.dtype == np.float32 and m.data.tolist() == [3.0, 2.0, 5.0, 0.0]   # the input is left alone
    # the user-user co-occurrence counts read the binary matrix: the repeated pair does not count twice
    r = sp.csr_matrix((np.ones(4), np.array([1, 1, 2, 1]), np.array([0, 3, 4])), shape=(2, 3))
    c = graphs.cooccurrence_topk(r, 1, cache=False)
    assert c[0, 1] == 1.0 and c[1, 0] == 1.0

@pytest.mark.parametrize("symmetric", [True, False])
def test_sparse_matmul_autograd_matches_dense(symmetric):
    rng = np.random.default_rng(1)
    m = sp.random(30, 30 if symmetric else 20, density=0.2, random_state=2, dtype=np.float32)
    if symmetric:
        m = m + m.T
    a = graphs.SparseMatrix(m)
    x = torch.randn(m.shape[1], 4, requires_grad=True)
    w = torch.from_numpy(rng.standard_normal((m.shape[0], 4)).astype(np.float32))
    ((a @ x) * w).sum().backward()
    dense = torch.from_numpy(m.toarray())
    x2 = x.detach().clone().requires_grad_(True)
    ((dense @ x2) * w).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, atol=1e-5, rtol=1e-5)


def test_propagate_is_layer_mean():
    m = graphs.sym_normalize(sp.random(10, 10, density=0.3, random_state=0, dtype=np.float32) + sp.eye(10))
    a = graphs.SparseMatrix(m + m.T)
    x = torch.randn(10, 3)
    d = torch.from_numpy((m + m.T).toarray())
    torch.testing.assert_close(graphs.propagate(a, x, 2), (x + d @ x + d @ d @ x) / 3, atol=1e-5, rtol=1e-5)


def test_degree_prune_keeps_fraction_and_is_seeded(tiny):
    a1 = graphs.degree_prune(tiny.train, 0.2, np.random.default_rng(0))
    a2 = graphs.degree_prune(tiny.train, 0.2, np.random.default_rng(0))
    assert a1.nnz == 2 * int(tiny.train.nnz * 0.2)
    assert (a1 != a2).nnz == 0


def test_cache_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv("PRISMREC_CACHE", str(tmp_path))
    x = np.random.default_rng(0).random((20, 4)).astype(np.float32)
    calls = []

    def build():
        calls.append(1)
        return graphs.sym_normalize(graphs.knn_graph(x, 3))
    a = graphs.cached_csr("knn", [x], build)
    b = graphs.cached_csr("knn", [x], build)
    assert len(calls) == 1 and (a != b).nnz == 0
    (next(tmp_path.glob("knn-*.safetensors"))).write_bytes(b"garbage")
    c = graphs.cached_csr("knn", [x], build)  # a corrupt cache file is rebuilt, not trusted
    assert len(calls) == 2 and (a != c).nnz == 0


@pytest.mark.parametrize("mean", [True, False])
@pytest.mark.parametrize("layers", [1, 2, 3])
def test_propagate_rows_values_and_gradients_match_dense(mean, layers):
    """The fused autograd node (batch rows only, Horner backward) against plain dense autograd."""
    m = graphs.sym_normalize(sp.random(12, 12, density=0.3, random_state=1, dtype=np.float32) + sp.eye(12))
    a = graphs.SparseMatrix(m + m.T)
    d = torch.from_numpy((m + m.T).toarray())
    rows = torch.tensor([3, 0, 7, 3, 11])  # unsorted, with a repeat
    x = torch.randn(12, 4, requires_grad=True)
    w, w_in = torch.randn(5, 4), torch.randn(5, 4)
    out, x_rows = graphs.propagate(a, x, layers, mean, rows=rows, with_input=True)
    ((out * w).sum() + (x_rows * w_in).sum()).backward()

    x2 = x.detach().clone().requires_grad_(True)
    hs = [x2]
    for _ in range(layers):
        hs.append(d @ hs[-1])
    ref = (sum(hs) / (layers + 1) if mean else hs[-1])[rows]
    ((ref * w).sum() + (x2[rows] * w_in).sum()).backward()
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(x_rows, x2[rows].detach())
    torch.testing.assert_close(x.grad, x2.grad, atol=1e-5, rtol=1e-5)


def test_edge_products_match_dense_products_and_gradcheck(tiny):
    edges = graphs.UserItemEdges(tiny.train)
    n, i = tiny.train.shape
    g = torch.Generator().manual_seed(0)
    v = torch.rand(edges.nnz, dtype=torch.float64, generator=g).requires_grad_()
    x_items = torch.randn(i, 3, dtype=torch.float64, generator=g).requires_grad_()
    x_users = torch.randn(n, 3, dtype=torch.float64, generator=g).requires_grad_()
    dense = torch.zeros(n, i, dtype=torch.float64)
    dense[edges.users, edges.items] = v.detach()
    assert edges.nnz == tiny.train.nnz and (torch.tensor(tiny.train.toarray())[edges.users, edges.items] > 0).all()
    torch.testing.assert_close(edges.to_users(v, x_items), dense @ x_items)
    torch.testing.assert_close(edges.to_items(v, x_users), dense.T @ x_users)
    torch.testing.assert_close(edges.dot(x_users, x_items), (x_users @ x_items.T)[edges.users, edges.items])
    assert torch.autograd.gradcheck(edges.to_users, (v, x_items), fast_mode=True)
    assert torch.autograd.gradcheck(edges.to_items, (v, x_users), fast_mode=True)
    assert torch.autograd.gradcheck(edges.dot, (x_users, x_items), fast_mode=True)
