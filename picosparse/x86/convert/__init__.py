"""Conversion of an exported Paddle model to an x86-sparse OpenVINO model: export.py (files),
rewrite.py (the graph: the passes in order), one module per fusion pass, graph.py (helpers)."""
