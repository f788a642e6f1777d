"""The GMP ratio schedule equals hand-computed values and PaddleSlim's own pruner."""

import pytest

from picosparse.sparsity.schedule import GMPSchedule, gmp_ratio


def test_hand_computed_values():
    # 0 stable, 100 pruning iters in 4 steps (period 25), 50 tuning; 0.15 -> 0.75
    s = GMPSchedule(0, 100, 50, 4, 0.15, 0.75)
    assert s.period == 25
    assert s.ratio(0) == pytest.approx(0.15)  # (0/4 - 1)^3 + 1 = 0
    assert s.ratio(24) == pytest.approx(0.15)
    assert s.ratio(25) == pytest.approx(0.15 + 0.6 * (1 - 0.75 ** 3))  # 0.496875
    assert s.ratio(50) == pytest.approx(0.15 + 0.6 * (1 - 0.5 ** 3))  # 0.675
    assert s.ratio(75) == pytest.approx(0.15 + 0.6 * (1 - 0.25 ** 3))  # 0.740625
    assert s.ratio(100) == pytest.approx(0.75)  # tuning
    assert s.ratio(10_000) == pytest.approx(0.75)


def test_stable_phase_is_zero():
    s = GMPSchedule(20, 40, 0, 4, 0.2, 0.8)  # stable_steps = int(20/40*4) = 2 periods of 10
    assert [round(s.ratio(i), 6) for i in (0, 19, 20)] == [0.0, 0.0, 0.2]
    assert gmp_ratio(25, 20, 40, 0, 4, 0.2, 0.8) == s.ratio(25)


def test_matches_paddleslim_step_by_step():
    from picosparse import paddle_env
    s = paddle_env.stack()
    model = s.paddle.nn.Sequential(s.paddle.nn.Conv2D(8, 8, 1), s.paddle.nn.Conv2D(8, 4, 1))
    cfg = {"stable_iterations": 15, "pruning_iterations": 60, "tunning_iterations": 30,
           "resume_iteration": 0, "pruning_steps": 5, "initial_ratio": 0.1}
    import contextlib, io
    with contextlib.redirect_stdout(io.StringIO()):
        slim = s.GMPUnstructuredPruner(model, ratio=0.9, configs=cfg)
    ours = GMPSchedule(15, 60, 30, 5, 0.1, 0.9)
    for it in range(130):
        slim.step()
        assert slim.ratio == pytest.approx(ours.ratio(it)), it
