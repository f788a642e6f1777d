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
