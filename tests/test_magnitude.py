"""The one magnitude-pruning rule (sparsity/magnitude.py), and the random sparse models the x86
op is tested and benchmarked on pruned by it."""

import numpy as np
import pytest

from picosparse.sparsity import magnitude


@pytest.mark.parametrize("ratio,n,want", [(0.75, 196, 147), (0.75, 4, 3), (0.85, 9216, 7834),
                                          (0.8, 15, 12), (0.8, 7, 6), (0.0, 5, 0), (1.0, 5, 5)])
def test_exact_ceil_count(ratio, n, want):
    assert magnitude.zero_count(ratio, n) == want
    w = np.random.default_rng(n).standard_normal(n).astype(np.float32) + 0.01
    assert np.count_nonzero(magnitude.prune_local(w, ratio) == 0) == want


def test_smallest_first_ties_by_position_and_dtype_kept():
    w = np.array([[0.5, -0.1, 0.1], [0.1, 2.0, -0.3]], np.float32)
    got = magnitude.prune_local(w, 0.5)  # 3 of 6: -0.1, then the first two 0.1s
    assert got.dtype == np.float32 and got.shape == w.shape
    assert got.tolist() == [[0.5, 0.0, 0.0], [0.0, 2.0, pytest.approx(-0.3)]]


def test_global_ranks_all_arrays_together():
    a = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
    b = np.array([0.5, 5.0], np.float32)
    ga, gb = magnitude.prune([a, b], 0.5)  # 3 of 6 overall: 0.5, 1, 2
    assert ga.tolist() == [0, 0, 3, 4] and gb.tolist() == [0, 5]


def test_previously_pruned_rank_first():
    w = np.array([3.0, 0.1, 2.0, 0.2], np.float32)
    old = np.array([0.0, 1.0, 1.0, 1.0], np.float32)  # w[0] was pruned before, grew back
    (mask,) = magnitude.keep_masks([w], 0.5, [old])
    assert mask.tolist() == [0, 0, 1, 1]  # stays pruned; then the smallest live one


def test_random_model_prunes_what_the_trainer_prunes():
    """Every 1x1 conv weight (the trainer's policy), exactly ceil(ratio * n) zeros; not the
    3x3 conv, the BN or the biases."""
    from picosparse.paddle_env import stack
    from picosparse.sparsity.random_model import prune_1x1_
    paddle = stack().paddle
    paddle.seed(0)
    nn = paddle.nn
    model = nn.Sequential(nn.Conv2D(6, 10, 1), nn.BatchNorm2D(10), nn.Conv2D(10, 8, 3),
                          nn.Conv2D(8, 7, 1))
    assert prune_1x1_(model, 0.85) == 2
    for name, p in model.named_parameters():
        zeros = int((p.numpy() == 0).sum())
        if len(p.shape) == 4 and p.shape[2:] == [1, 1]:
            assert zeros == magnitude.zero_count(0.85, p.size), name
        else:
            assert zeros == 0 or "bias" in name or "_mean" in name, name


# ---------------------------------------------------------------- sparse_block

def _pairs_whole(w, n=2):
    """Whether every (row, inputs n*k..n*k+n-1) block of w [cout, cin, ...] is all zero or
    has no zero (random weights have no exact zeros of their own)."""
    cin = w.shape[1]
    for k in range(0, cin, n):
        z = w[:, k:k + n] == 0
        if not (z.all(axis=1) | (~z).all(axis=1)).all():
            return False
    return True


@pytest.mark.parametrize("cin", [16, 7])  # 7: the last block holds one input channel
def test_block_1x2_zeroes_whole_pairs_exactly(cin):
    rng = np.random.default_rng(cin)
    w = rng.standard_normal((10, cin, 1, 1)).astype(np.float32) + 0.001
    got = magnitude.prune_local(w, 0.75, [1, 2])
    assert got.dtype == np.float32 and got.shape == w.shape
    assert _pairs_whole(got)
    nblocks = 10 * ((cin + 1) // 2)
    zero_blocks = sum(int((got[:, k:k + 2] == 0).all(axis=1).sum()) for k in range(0, cin, 2))
    assert zero_blocks == magnitude.zero_count(0.75, nblocks)
    # kept entries are untouched
    kept = got != 0
    assert np.array_equal(got[kept], w[kept])


def test_block_scores_mean_abs_and_edge_block():
    # rows of cin=3: blocks (0,1) and (2,); mean |w| decides, |mean w| would not
    w = np.array([[5.0, -5.0, 0.1],      # pair mean |w| 5 (|mean w| 0): kept
                  [0.2, 0.2, 9.0],       # pair 0.2: pruned first
                  [1.0, 1.0, 0.3]],      # edge 0.3: pruned second
                 np.float32)
    got = magnitude.prune_local(w, 0.5, [1, 2])  # ceil(0.5 * 6) = 3 of 6 blocks
    assert (got == 0).tolist() == [[False, False, True],
                                   [True, True, False],
                                   [False, False, True]]


def test_block_2x2_and_conv_taps():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((4, 4, 3, 3)).astype(np.float32) + 0.001
    got = magnitude.prune_local(w, 0.5, [2, 2])
    zero = got == 0
    # each 2x2 block of (out, in) channels at one kernel tap is zeroed or kept whole
    blocks = zero.reshape(2, 2, 2, 2, 3, 3)
    assert (blocks.all(axis=(1, 3)) | (~blocks).all(axis=(1, 3))).all()
    assert int(blocks.all(axis=(1, 3)).sum()) == magnitude.zero_count(0.5, 2 * 2 * 9)


def test_block_falls_back_below_two_dims_and_global():
    bias = np.array([0.3, 0.1, 0.2, 0.4], np.float32)
    w = np.arange(1, 9, dtype=np.float32).reshape(2, 4) / 10
    mb, mw = magnitude.keep_masks([bias, w], 0.5, block=[1, 2])
    # 4 single-entry blocks + 4 pairs = 8 blocks, 4 zeroed: 0.1, 0.15 (pair .1,.2), 0.2, 0.3
    assert mb.tolist() == [0, 0, 0, 1]
    assert mw.tolist() == [[0, 0, 1, 1], [1, 1, 1, 1]]


def test_block_1x1_is_unstructured():
    rng = np.random.default_rng(5)
    w = rng.standard_normal((6, 8, 1, 1)).astype(np.float32)
    old = (rng.uniform(size=w.shape) > 0.3).astype(np.float32)
    assert np.array_equal(magnitude.keep_masks([w], 0.6, [old])[0],
                          magnitude.keep_masks([w], 0.6, [old], block=[1, 1])[0])


def test_block_previously_pruned_blocks_rank_first():
    w = np.array([[9.0, 9.0, 0.1, 0.1, 1.0, 1.0]], np.float32)
    old = np.array([[0, 0, 1, 1, 0, 1]], np.float32)  # block 0 wholly pruned, block 2 partly
    (mask,) = magnitude.keep_masks([w], 0.34, [old], block=[1, 2])  # 2 of 3 blocks
    assert mask.tolist() == [[0, 0, 0, 0, 1, 1]]  # block 0 stays pruned, then the smallest


def test_random_model_prunes_in_blocks():
    from picosparse.paddle_env import stack
    from picosparse.sparsity.random_model import prune_1x1_
    paddle = stack().paddle
    paddle.seed(0)
    nn = paddle.nn
    model = nn.Sequential(nn.Conv2D(6, 10, 1), nn.Conv2D(10, 8, 3), nn.Conv2D(8, 7, 1))
    assert prune_1x1_(model, 0.75, [1, 2]) == 2
    for name, p in model.named_parameters():
        w = p.numpy()
        if len(p.shape) == 4 and p.shape[2:] == [1, 1]:
            assert _pairs_whole(w), name
            assert int((w == 0).sum()) == 2 * magnitude.zero_count(0.75, w.size // 2), name
