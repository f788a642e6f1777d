"""The GMP ratio schedule as one pure function, equal to PaddleSlim's GMPUnstructuredPruner.

PaddleSlim builds a stack of ratios: `stable` zeros, then for i in 0..steps-1
`initial + (target - initial) * ((i / steps - 1)^3 + 1)`, then `tuning` copies of target, and
pops a new one every `period = int(pruning_iters / steps)` iterations (then stays at target).
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class GMPSchedule:
    stable_iters: int
    pruning_iters: int
    tuning_iters: int
    steps: int
    initial: float
    target: float

    @classmethod
    def from_spec(cls, spec, iters_per_epoch):
        return cls(spec.stable_epochs * iters_per_epoch, spec.pruning_epochs * iters_per_epoch,
                   spec.tunning_epochs * iters_per_epoch, spec.pruning_steps,
                   float(spec.initial_ratio), float(spec.ratio))

    @property
    def period(self):
        return int(self.pruning_iters / self.steps)

    def stages(self):
        """The ratios in the order PaddleSlim uses them, one per `period` iterations."""
        ramp = [self.initial + (self.target - self.initial) * ((i / self.steps - 1.0) ** 3 + 1)
                for i in range(self.steps)]
        stable = [0.0] * int(self.stable_iters / self.pruning_iters * self.steps)
        tuning = [self.target] * int(self.tuning_iters / self.pruning_iters * self.steps)
        return stable + ramp + tuning

    def ratio(self, iteration):
        """Target ratio in force after the pruner's step at global `iteration` (0-based)."""
        k = iteration // self.period
        stages = self.stages()
        return stages[k] if k < len(stages) else self.target


def gmp_ratio(iteration, stable_iters, pruning_iters, tuning_iters, steps, initial, target):
    """Functional form of GMPSchedule.ratio."""
    return GMPSchedule(stable_iters, pruning_iters, tuning_iters, steps, initial,
                       target).ratio(iteration)
