"""picosparse: GMP unstructured sparsity for PP-PicoDet, from training to a sparse Paddle-Lite model."""

__version__ = "0.1.0"
