"""PaddleSlim's GMP pruner, wrapped so that it resumes, respects our policy and saves clean.

What the stock PaddleDetection path gets wrong (STACK.md) and how this fixes it:
- skip list ignored: we always pass a skip_params_func built from the YAML policy;
- resume restarts the ramp: we pass resume_iteration and restore the saved masks;
- EMA averaging mask buffers: the trainer creates its EMA *before* this pruner, and
  `masked()` applies our masks to any state (EMA included) before eval/save;
- masks bloating checkpoints: `masked()` and weights.save drop `*_mask` buffers.
"""

import contextlib
import io

from picosparse import paddle_env
from picosparse.weights import strip_masks
from picosparse.config import DEFAULT_RECIPE
from picosparse.errors import ConfigError
from picosparse.sparsity import magnitude, policy
from picosparse.sparsity.schedule import GMPSchedule


def check_schedule(spec, iters_per_epoch, where="UnstructuredPruner"):
    """PaddleSlim asserts pruning_iterations / pruning_steps > 10; say what to change instead.

    The built-in recipe (`--sparsity` alone) has no steps a user chose: it takes as many as
    fit, and says so.
    """
    pruning_iters = spec.pruning_epochs * iters_per_epoch
    fit = max(1, (pruning_iters - 1) // 10)
    if spec.recipe == DEFAULT_RECIPE and spec.pruning_steps > fit and pruning_iters > 10:
        from picosparse import progress
        progress.say(f"pruning_steps {spec.pruning_steps} -> {fit}: {pruning_iters} pruning "
                     "iterations allow at most that many (PaddleSlim needs > 10 per step)")
        spec.pruning_steps = fit
    if pruning_iters / spec.pruning_steps <= 10:
        need = spec.pruning_steps * 10 // iters_per_epoch + 1
        raise ConfigError(
            f"{where}: pruning_epochs ({spec.pruning_epochs}) x {iters_per_epoch} iterations/epoch"
            f" = {pruning_iters} iterations for {spec.pruning_steps} pruning_steps; PaddleSlim "
            f"needs more than 10 iterations per step: "
            + (f"lower pruning_steps to {fit} or " if pruning_iters > 10 else "")
            + f"raise pruning_epochs to {need}")


def _exact_gmp_class(base):
    """PaddleSlim's GMP pruner with exact and monotone masks.

    Exact: PaddleSlim keeps |w| >= the k-th smallest |w|, so each layer ends one weight short
    of the target (74.5% for a 196-weight layer at 75%). We zero exactly ceil(ratio * n) per
    layer (per pruned set without local sparsity).
    Monotone: masks are recomputed from |w| after optimizer steps, and momentum moves pruned
    weights too (they are only re-zeroed before the next forward), so a pruned weight could
    outrank a live one and grow back. GMP's contract is that pruned weights stay pruned:
    previously pruned weights are ranked first, the rest by |w|.
    Blocks (sparse_block): whole blocks, ranked by mean |w| (magnitude.py), wholly pruned
    blocks first; exactly ceil(ratio * blocks) per layer.
    """
    class ExactGMP(base):
        def update_threshold(self):
            pass  # masks come from ranks below, not from a threshold

        def _pruned_params(self):
            for _, layer in self.model.named_sublayers():
                if not self._should_prune_layer(layer):
                    continue
                for p in layer.parameters(include_sublayers=False):
                    if p.name not in self.skip_params:
                        yield p

        def _update_masks(self):
            paddle = paddle_env.stack().paddle
            params = list(self._pruned_params())
            groups = [[p] for p in params] if self.local_sparsity else [params]
            for group in groups:
                # whole sparse_block blocks (magnitude.block_of: [1, 1] below two dims)
                keep = magnitude.keep_masks([p.numpy() for p in group], self.ratio,
                                            [self.masks[p.name].numpy() for p in group],
                                            block=self.sparse_block)
                for p, k in zip(group, keep):
                    paddle.assign(k, output=self.masks[p.name])
    return ExactGMP


class GMP:
    """GMP pruning of `model` per PruneSpec `spec`; `iteration` = global iterations done."""

    def __init__(self, model, spec, iters_per_epoch, iteration=0):
        check_schedule(spec, iters_per_epoch)
        s = paddle_env.stack()
        self.model = model
        self.spec = spec
        self.schedule = GMPSchedule.from_spec(spec, iters_per_epoch)
        self.decisions = policy.decide(model, spec)
        self.pruned = [d for d in self.decisions if d.pruned]
        configs = {
            "pruning_strategy": "gmp",
            "stable_iterations": self.schedule.stable_iters,
            "pruning_iterations": self.schedule.pruning_iters,
            "tunning_iterations": self.schedule.tuning_iters,
            "resume_iteration": iteration,
            "pruning_steps": spec.pruning_steps,
            "initial_ratio": spec.initial_ratio,
        }
        with contextlib.redirect_stdout(io.StringIO()):  # it prints once per mask buffer
            self._slim = _exact_gmp_class(s.GMPUnstructuredPruner)(
                model, ratio=spec.ratio, skip_params_func=policy.skip_func(self.decisions, model),
                local_sparsity=spec.local_sparsity, sparse_block=list(spec.sparse_block),
                configs=configs)
        if iteration > 0:
            # PaddleSlim's fast-forward stops at the last ramp ratio when the schedule has no
            # tuning stages left (tunning_epochs: 0): the uninterrupted run is at the target
            self._slim.ratio = self.schedule.ratio(iteration - 1)

    @property
    def ratio(self):
        """The target ratio PaddleSlim is applying now."""
        return float(self._slim.ratio)

    def step(self):
        self._slim.step()

    def apply(self):
        """Zero the pruned weights of the live model (PaddleSlim's update_params)."""
        self._slim.update_params()

    def masks(self):
        """{structured name: numpy mask} of pruned parameters."""
        return {d.name: self._slim.masks[d.pname].numpy() for d in self.pruned}

    def restore(self, masks):
        """Put saved masks back and skip PaddleSlim's recompute-on-resume, which would
        re-threshold already-zeroed weights at a ratio whose threshold is 0 (all kept)."""
        paddle = paddle_env.stack().paddle
        for d in self.pruned:
            paddle.assign(paddle.to_tensor(masks[d.name], dtype="float32"),
                          output=self._slim.masks[d.pname])
        self._slim._need_prune_once = False

    def masked(self, state):
        """A copy of `state` (e.g. EMA weights) with our masks applied and no mask buffers."""
        out = strip_masks(state)
        for d in self.pruned:
            if d.name in out:
                out[d.name] = out[d.name] * self._slim.masks[d.pname].astype(out[d.name].dtype)
        return out
