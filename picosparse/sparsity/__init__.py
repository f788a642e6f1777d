"""Sparsity: which weights are pruned (policy), when (schedule), how (magnitude, pruner)."""

# The zero fraction from which a 1x1 conv is run sparse (Paddle-Lite's --sparse_threshold
# default, and picosparse's x86-sparse conversion): below it a sparse kernel does not pay.
SPARSE_THRESHOLD = 0.6
