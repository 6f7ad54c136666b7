"""Variable-block sparse attention kernel vs the float32 masked-SDPA oracle (TRITON_INTERPRET=1 on CPU)."""
import math

import pytest
import torch

from svg2.kernels.varblock import VARBLOCK_CONFIGS, VarblockConfig, config_name, make_plan, parse_config, \
    run_lengths, tile_work, varblock_attention
from svg2.permute import permutation_from_labels, permute
from svg2.reference import block_masked_attention

CFG = VARBLOCK_CONFIGS["test"]
DEV = "cuda" if torch.cuda.is_available() else "cpu"  # the interpreter on CPU, the compiled kernel on a GPU
TOL = {torch.float32: 1e-4, torch.float16: 2e-3}  # max abs error vs the fp32 oracle (|v| ~ 1)


def _case(n, s, d, qc, kc, density, dtype, seed, q_labels=None, k_labels=None):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(n, s, d, generator=g).to(dtype) for _ in range(3))
    ql = torch.randint(0, qc, (n, s), generator=g) if q_labels is None else q_labels
    kl = torch.randint(0, kc, (n, s), generator=g) if k_labels is None else k_labels
    keep = torch.rand(n, qc, kc, generator=g) < density
    return tuple(t.to(DEV) for t in (q, k, v, ql, kl, keep))


def _run_both(q, k, v, ql, kl, keep, qc, kc, config=CFG):
    """Kernel output in the original order through the fused orders, and through permuted copies."""
    qp, kp = permutation_from_labels(ql, qc), permutation_from_labels(kl, kc)
    poison = torch.full_like(q, float("nan"))
    fused = varblock_attention(q, k, v, keep, qp.sizes, kp.sizes, q_order=qp.order, k_order=kp.order,
                               config=config, out=poison.clone())
    permuted = varblock_attention(permute(q, qp), permute(k, kp), permute(v, kp), keep, qp.sizes, kp.sizes,
                                  config=config, out=poison.clone())
    return fused, permuted.gather(1, qp.inverse[..., None].expand_as(q))


def _oracle(q, k, v, ql, kl, keep):
    return block_masked_attention(q[None], k[None], v[None], keep[None], ql[None], kl[None])[0]


# 4, 1 and 16 key rows per chunk-list entry; every tiling; boxes by pointer loads; half tiles; the warp-specialised
# path's descriptors (q and the output too; the interpreter runs it unspecialised)
CONFIGS = ["test", "test_chunk1", "test_chunk16", "test_gather", "test_box", "test_pointer_boxes", "test_split",
           "test_ws"]


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("n,s,d,qc,kc,density", [
    (2, 77, 32, 5, 9, 0.4),     # S not a multiple of the 16-row tile
    (1, 50, 64, 3, 20, 0.5),    # D 64, many small key clusters per key tile
    (1, 33, 16, 33, 33, 0.3),   # one token per cluster
])
def test_matches_oracle(n, s, d, qc, kc, density, dtype, config):
    q, k, v, ql, kl, keep = _case(n, s, d, qc, kc, density, dtype, seed=s + d)
    ref = _oracle(q, k, v, ql, kl, keep)
    for out in _run_both(q, k, v, ql, kl, keep, qc, kc, VARBLOCK_CONFIGS[config]):
        assert not out.isnan().any(), "some output element was never written"
        assert (out.float() - ref).abs().max() < TOL[dtype]
    if dtype != torch.float32:
        return
    qp, kp = permutation_from_labels(ql, qc), permutation_from_labels(kl, kc)
    q_read_through_order = varblock_attention(q, permute(k, kp), permute(v, kp), keep, qp.sizes, kp.sizes,
                                              q_order=qp.order, config=VARBLOCK_CONFIGS[config],
                                              out=torch.full_like(q, float("nan")))  # what the method stack runs
    assert (q_read_through_order.float() - ref).abs().max() < TOL[dtype]


def test_empty_clusters_and_one_huge_cluster():
    n, s, d, qc, kc = 1, 70, 32, 6, 8
    ql = torch.zeros(n, s, dtype=torch.long)
    ql[:, :3] = 4                     # clusters 1-3 and 5 empty, cluster 0 holds 67 tokens
    kl = torch.randint(0, 3, (n, s))  # key clusters 3..7 empty
    q, k, v, ql, kl, keep = _case(n, s, d, qc, kc, 0.5, torch.float32, seed=1, q_labels=ql, k_labels=kl)
    keep[..., 0] = True               # cluster 0 kept for every row: no row is empty
    keep[..., 5] = True               # an empty key cluster kept: contributes nothing
    ref = _oracle(q, k, v, ql, kl, keep)
    for config in CONFIGS:
        for out in _run_both(q, k, v, ql, kl, keep, qc, kc, VARBLOCK_CONFIGS[config]):
            assert (out - ref).abs().max() < TOL[torch.float32]


def test_density_one_is_dense_attention():
    n, s, d, qc, kc = 2, 45, 32, 4, 7
    q, k, v, ql, kl, keep = _case(n, s, d, qc, kc, 1.1, torch.float32, seed=3)
    dense = torch.softmax(q.double() @ k.double().transpose(1, 2) / math.sqrt(d), -1) @ v.double()
    for out in _run_both(q, k, v, ql, kl, keep, qc, kc):
        assert (out - dense.float()).abs().max() < TOL[torch.float32]


def test_near_zero_density_rows_without_keys_are_zero():
    n, s, d, qc, kc = 1, 40, 16, 4, 5
    q, k, v, ql, kl, keep = _case(n, s, d, qc, kc, 0.0, torch.float32, seed=4)
    keep[0, 1, 2] = True  # one block kept in the whole map
    ref = _oracle(q, k, v, ql, kl, keep)
    for out in _run_both(q, k, v, ql, kl, keep, qc, kc):
        assert (out - ref).abs().max() < TOL[torch.float32]
        assert (out[0][ql[0] != 1] == 0).all()


def test_fixed_blocks_positional_layout():
    # Positional blocks: contiguous blocks of 12 tokens, no permutation, so the kernel reads q, k, v as is.
    n, s, d, block = 1, 50, 32, 12
    nb = math.ceil(s / block)
    labels = (torch.arange(s) // block).expand(n, s)
    q, k, v, ql, kl, keep = _case(n, s, d, nb, nb, 0.4, torch.float32, seed=5, q_labels=labels, k_labels=labels)
    sizes = torch.bincount(labels[0], minlength=nb).expand(n, nb).to(DEV)
    out = varblock_attention(q, k, v, keep, sizes, sizes, config=CFG)
    assert (out - _oracle(q, k, v, ql, kl, keep)).abs().max() < TOL[torch.float32]


def test_chunk_list_covers_every_kept_key_once():
    # Each row's entries list its kept key clusters' tokens in runs of at most `chunk`, zero-padded to the
    # end of the key tile after its last entry.
    cfg = VARBLOCK_CONFIGS["test"]  # chunk 4, 4 entries per key tile
    col_sizes = torch.tensor([[5, 0, 1, 9, 4]])
    s = int(col_sizes.sum())
    keep = torch.tensor([[[True, True, False, True, True], [False, False, True, False, False]]])
    plan = make_plan(keep, torch.tensor([[s - 2, 2]]), col_sizes, s, cfg)
    starts = [0, 5, 5, 6, 15]
    for row in range(2):
        e = plan.entries[0, row]
        count = int(plan.cum[0, row, -1])
        runs = [(int(x) >> 6, int(x) & 63) for x in e[:count]]
        assert all(1 <= n <= 4 for _, n in runs)
        cols = [c for start, n in runs for c in range(start, start + n)]
        want = [c for j in range(5) if keep[0, row, j] for c in range(starts[j], starts[j] + int(col_sizes[0, j]))]
        assert cols == want
        assert (e[count:(math.ceil(count / 4) + 1) * 4] == 0).all()


def test_adjacent_kept_clusters_share_chunks():
    # Kept clusters next to each other in the layout are one run of rows: 4 clusters of 3 rows take
    # ceil(12 / 4) = 3 entries, not 4, and the work count (tile_work) follows the same runs.
    cfg = VARBLOCK_CONFIGS["test"]  # chunk 4, BLOCK_N 16
    col_sizes = torch.tensor([[3, 3, 3, 3, 2, 3]])
    keep = torch.tensor([[[True, True, True, True, False, True], [True, False, True, False, True, False]]])
    assert run_lengths(keep, col_sizes).tolist() == [[[12, 0, 0, 0, 0, 3], [3, 0, 3, 0, 2, 0]]]
    s = int(col_sizes.sum())
    plan = make_plan(keep, torch.tensor([[s - 5, 5]]), col_sizes, s, cfg)
    assert plan.cum[0, :, -1].tolist() == [3 + 1, 1 + 1 + 1]
    first = [(int(x) >> 6, int(x) & 63) for x in plan.entries[0, 0, :4]]
    assert first == [(0, 4), (4, 4), (8, 4), (14, 3)]
    # 12 + 5 query rows in 16-row tiles; 4 and 3 entries of 4 rows, rounded up to one 16-row key tile each.
    assert tile_work(keep, torch.tensor([[s - 5, 5]]), col_sizes, cfg).tolist() == [16 * 16 + 16 * 16]


def test_tile_count_is_a_shape_bound():
    # A cluster of r rows takes ceil(r / BLOCK_M) tiles; the schedule covers every row exactly once.
    sizes = torch.tensor([[0, 1, 16, 17, 33, 5]])
    s = int(sizes.sum())
    plan = make_plan(torch.ones(1, 6, 2, dtype=torch.bool), sizes, torch.tensor([[s - 3, 3]]), s, CFG)
    assert plan.tiles.cluster.shape[1] == math.ceil(s / 16) + 6
    valid = plan.tiles.cluster[0] >= 0
    assert valid.sum() == 0 + 1 + 1 + 2 + 3 + 1
    covered = torch.zeros(s, dtype=torch.long)
    for row, end in zip(plan.tiles.row[0][valid].tolist(), plan.tiles.end[0][valid].tolist()):
        covered[row:min(row + 16, end)] += 1
    assert (covered == 1).all()
    # The compact launch order runs every real tile, each sequence's in order, before any surplus one.
    order = plan.tiles.order.long()
    assert sorted(order.tolist()) == list(range(order.numel()))
    assert order[:int(valid.sum())].tolist() == valid.nonzero().squeeze(1).tolist()


def test_split_query_tiles_cover_every_row_once():
    # split_m: whole 32-row tiles, a last tile of more than 16 rows as a 32-row tile, one of 1..16 rows as a
    # 16-row tile of the second launch.
    cfg = VarblockConfig(32, 16, 4, 1, 4, split_m=True)
    sizes = torch.tensor([[0, 1, 16, 17, 32, 33, 50, 64]])
    s = int(sizes.sum())
    plan = make_plan(torch.ones(1, 8, 2, dtype=torch.bool), sizes, torch.tensor([[s - 3, 3]]), s, cfg)
    covered = torch.zeros(s, dtype=torch.long)
    for tiles in (plan.tiles, plan.half_tiles):
        valid = tiles.cluster[0] >= 0
        for row, end in zip(tiles.row[0][valid].tolist(), tiles.end[0][valid].tolist()):
            covered[row:min(row + tiles.block_m, end)] += 1
    assert (covered == 1).all()
    assert (plan.half_tiles.cluster[0] >= 0).sum() == 3  # clusters of 1, 16 and 33 rows leave 1, 16 and 1
    # work: 0, 16, 16, 32, 32, 32 + 16, 32 + 32, 64 query rows, each times the one run of all 213 key rows
    # (13 boxes of 16 rows, then 5 rows in two 4-row chunks: one 16-row gathered tile)
    assert tile_work(torch.ones(1, 8, 2, dtype=torch.bool), sizes, torch.tensor([[s - 3, 3]]), cfg).item() == \
        (0 + 16 + 16 + 32 + 32 + 48 + 64 + 64) * (13 * 16 + 16)


def test_rejects_bad_inputs():
    q = torch.randn(1, 8, 24)
    keep = torch.ones(1, 1, 1, dtype=torch.bool)
    sizes = torch.tensor([[8]])
    with pytest.raises(ValueError, match="D=24"):
        varblock_attention(q, q, q, keep, sizes, sizes)
    q = torch.randn(1, 8, 16)
    with pytest.raises(ValueError, match="expected \\(1, QC, KC\\)"):
        varblock_attention(q, q, q, keep, torch.tensor([[4, 4]]), sizes)
    with pytest.raises(ValueError, match="chunk=12"):
        VarblockConfig(16, 16, 4, 1, 12)
    with pytest.raises(ValueError, match="chunk=32.*block_n=16"):
        VarblockConfig(16, 16, 4, 1, 32)
    with pytest.raises(ValueError, match="plan was made for"):
        plan = make_plan(keep, sizes, sizes, 8, CFG)
        varblock_attention(q, q, q, keep, sizes, sizes, plan=plan, config=VarblockConfig(32, 16, 4, 1))


def test_steps_down_num_stages_when_shared_memory_runs_out(monkeypatch):
    # On a GPU with less shared memory the tuned config fails to launch; the launcher retries with fewer
    # K/V buffers (and remembers what fit) instead of failing the call; if one buffer does not fit, it raises.
    import svg2.kernels.varblock as vb
    from triton.runtime.errors import OutOfResources

    real = vb._varblock_fwd_kernel
    launches, fits = [], {"max_stages": 1}

    class SmallSharedMemory:
        def __getitem__(self, grid):
            def launch(*args, num_stages, **kw):
                launches.append(num_stages)
                if num_stages > fits["max_stages"]:
                    raise OutOfResources(150_000, 101_376, "shared memory")
                return real[grid](*args, num_stages=num_stages, **kw)
            return launch

    monkeypatch.setattr(vb, "_varblock_fwd_kernel", SmallSharedMemory())
    monkeypatch.setattr(vb, "_STAGES_THAT_FIT", {})
    cfg = VarblockConfig(16, 16, 4, 3, 4, tma=False)  # one kernel variant for both calls (with and without orders)
    q, k, v, ql, kl, keep = _case(1, 40, 16, 3, 4, 0.6, torch.float32, seed=9)
    fused, permuted = _run_both(q, k, v, ql, kl, keep, 3, 4, cfg)
    assert launches == [3, 2, 1, 1]  # the second call starts from what fit
    ref = _oracle(q, k, v, ql, kl, keep)
    assert (fused - ref).abs().max() < TOL[torch.float32] and (permuted - ref).abs().max() < TOL[torch.float32]
    fits["max_stages"] = 0
    monkeypatch.setattr(vb, "_STAGES_THAT_FIT", {})
    with pytest.raises(OutOfResources):
        _run_both(q, k, v, ql, kl, keep, 3, 4, cfg)


def test_parse_config_reads_sweep_specs_and_names_bad_tokens():
    assert parse_config("M128 N64 w8 s2 c8") == VarblockConfig(128, 64, 8, 2, 8)
    assert parse_config("c32") == VarblockConfig(chunk=32)
    assert parse_config("M128 s2 kb ws1 t1 ol h1") == VarblockConfig(block_m=128, num_stages=2, tiling="box",
                                                                      warp_specialize=True, order="longest",
                                                                      split_m=True)
    for spec in ("M64 N128 w4 s2 c8 kg t0 ws0 on h0", "M128 N64 w8 s3 c16 km t1 ws0 oc h1"):
        assert config_name(parse_config(spec)) == spec
    with pytest.raises(ValueError, match="unknown token 'table'"):
        parse_config("M64 table")
    for spec in ("M64 s2 kb ws1", "M128 s3 kb ws1", "M128 s2 km ws1"):  # what Triton 3.6 gets wrong or rejects
        with pytest.raises(ValueError, match="needs tiling='box', block_m=128 and num_stages <= 2"):
            parse_config(spec)
    with pytest.raises(ValueError, match="tiling='rows'"):
        VarblockConfig(tiling="rows")


def test_tile_work_counts_the_padded_tiles():
    cfg = VarblockConfig(block_m=4, block_n=8, num_warps=4, num_stages=1, chunk=2)
    keep = torch.tensor([[True, True, False], [False, True, True]])
    rows, cols = torch.tensor([5, 8]), torch.tensor([3, 4, 9])
    # cluster 0: 2 query tiles (8 rows); keys 3 + 4 -> 2 + 2 entries of 2 -> 8 rows, one key tile: 8 * 8
    # cluster 1: 2 query tiles (8 rows); keys 4 + 9 -> 2 + 5 entries -> 14 rows -> two key tiles (16): 8 * 16
    assert tile_work(keep, rows, cols, cfg).item() == 8 * 8 + 8 * 16
    # sizes on tile and chunk boundaries: no padding, the exact kept pairs
    full = VarblockConfig(block_m=4, block_n=8, num_warps=4, num_stages=1, chunk=4)
    keep = torch.rand(2, 6, 5, generator=torch.Generator().manual_seed(0)) < 0.5
    keep[..., 0] = True
    r = torch.randint(1, 4, (2, 6)) * 4
    c = torch.full((2, 5), 8)
    exact = torch.einsum("nq,nqk,nk->n", r.double(), keep.double(), c.double())
    assert torch.equal(tile_work(keep, r, c, full), exact)


@pytest.mark.parametrize("tiling", ["mixed", "box", "gather"])
def test_box_and_chunk_lists_cover_every_kept_key_once(tiling):
    # Boxes (start * 256 + rows) and chunks (start * 64 + rows) of a query cluster together list exactly its
    # kept key columns, in layout order within each list; the mixed tiling boxes only whole 16-row stretches.
    cfg = VarblockConfig(16, 16, 4, 1, 4, tiling=tiling)
    col_sizes = torch.tensor([[5, 0, 1, 40, 4, 20, 3]])
    s = int(col_sizes.sum())
    keep = torch.tensor([[[True, True, False, True, True, False, True], [False, False, True, True, False, True,
                                                                          True]]])
    plan = make_plan(keep, torch.tensor([[s - 2, 2]]), col_sizes, s, cfg)
    starts = torch.cumsum(col_sizes[0], 0) - col_sizes[0]
    for row in range(2):
        nbox, nchunk = int(plan.box_count[0, row]), int(plan.cum[0, row, -1])
        boxes = [(int(b) >> 8, int(b) & 255) for b in plan.boxes[0, row, :nbox]]
        chunks = [(int(e) >> 6, int(e) & 63) for e in plan.entries[0, row, :nchunk]]
        assert all(1 <= n <= 16 for _, n in boxes) and all(1 <= n <= 4 for _, n in chunks)
        if tiling == "mixed":
            assert all(n == 16 for _, n in boxes)
        if tiling == "gather":
            assert not boxes
        if tiling == "box":
            assert not chunks
        cols = sorted(c for start, n in boxes + chunks for c in range(start, start + n))
        want = [c for j in range(7) if keep[0, row, j] for c in range(int(starts[j]), int(starts[j] + col_sizes[0, j]))]
        assert cols == want
        assert plan.boxes[0, row, nbox] == 0  # the slot the kernel reads one box ahead
    assert int(plan.box_count.sum()) > 0 or tiling == "gather"


def test_tile_work_counts_boxes_and_chunks():
    # One query cluster of 16 rows keeps a run of 40 rows and one of 3: mixed = two 16-row boxes + chunks of
    # 8 + 3 rows (one 16-row gathered tile); box = three boxes + one; gather = 40 + 3 rows in 4-row chunks
    # (10 + 1 entries: three 16-row tiles).
    keep = torch.tensor([[[True, True, False, True]]])
    rows, cols = torch.tensor([[16]]), torch.tensor([[30, 10, 5, 3]])
    for tiling, keys in (("mixed", 32 + 16), ("box", 16 * 4), ("gather", 48)):
        cfg = VarblockConfig(16, 16, 4, 1, 4, tiling=tiling)
        assert tile_work(keep, rows, cols, cfg).item() == 16 * keys
