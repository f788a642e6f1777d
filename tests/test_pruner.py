"""GMP masks are exact and monotone: a pruned weight stays pruned at every later ratio step."""

import pytest

from picosparse.config import PruneSpec


def _run_gmp(local, iters=64, block=(1, 1)):
    """A short GMP run with Momentum on two 1x1 convs; the masks after every pruner step."""
    from picosparse import paddle_env
    from picosparse.sparsity.pruner import GMP
    s = paddle_env.stack()
    paddle, np = s.paddle, s.np
    paddle.seed(3)
    rng = np.random.RandomState(3)
    with paddle.utils.unique_name.guard():
        model = paddle.nn.Sequential(paddle.nn.Conv2D(16, 24, 1), paddle.nn.ReLU(),
                                     paddle.nn.Conv2D(24, 8, 1))
    for p in model.parameters():  # small weights: one momentum step rivals the live ones
        p.set_value((rng.uniform(-1, 1, p.shape) * 0.01).astype("float32"))
    spec = PruneSpec(ratio=0.85, pruning_epochs=4, pruning_steps=4, initial_ratio=0.3,
                     local_sparsity=local, sparse_block=list(block))
    gmp = GMP(model, spec, iters_per_epoch=12)
    opt = paddle.optimizer.Momentum(learning_rate=2.0, momentum=0.9,
                                    parameters=model.parameters())
    x = paddle.to_tensor(rng.normal(size=(8, 16, 4, 4)).astype("float32"))
    y = paddle.to_tensor(rng.normal(size=(8, 8, 4, 4)).astype("float32"))
    history = []
    for _ in range(iters):
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        opt.step()
        gmp.step()
        gmp.apply()
        opt.clear_grad()
        history.append((gmp.ratio, gmp.masks()))
    assert all(np.isfinite(p.numpy()).all() for p in model.parameters())
    return history


@pytest.mark.parametrize("local", [True, False], ids=["local", "global"])
def test_masks_are_monotone_and_exact_with_momentum(local):
    history = _run_gmp(local)
    ratios = [r for r, _ in history]
    assert len(set(ratios)) == 5 and ratios[-1] == pytest.approx(0.85)  # 4 ramp steps + target
    regrown = 0
    for (_, before), (_, after) in zip(history, history[1:]):
        for name in before:
            regrown += int(((before[name] == 0) & (after[name] != 0)).sum())
    assert regrown == 0
    import math
    ratio, masks = history[-1]
    if local:
        for m in masks.values():
            assert int((m == 0).sum()) == math.ceil(ratio * m.size - 1e-9)
    else:
        n = sum(m.size for m in masks.values())
        assert sum(int((m == 0).sum()) for m in masks.values()) == math.ceil(ratio * n - 1e-9)


def test_masks_are_block_structured_with_sparse_block():
    """sparse_block [1, 2]: every (output, input pair) block of every mask is zero or kept whole
    at every step, pruned blocks stay pruned, and the final count is exact in blocks."""
    import math
    history = _run_gmp(True, block=(1, 2))
    for _, masks in history:
        for name, m in masks.items():
            pairs = m.reshape(m.shape[0], m.shape[1] // 2, 2)
            assert ((pairs == 0).all(axis=2) | (pairs != 0).all(axis=2)).all(), name
    for (_, before), (_, after) in zip(history, history[1:]):
        for name in before:
            assert not ((before[name] == 0) & (after[name] != 0)).any(), name
    ratio, masks = history[-1]
    assert ratio == pytest.approx(0.85)
    for m in masks.values():
        blocks = m.size // 2
        assert int((m == 0).sum()) == 2 * math.ceil(ratio * blocks - 1e-9)
