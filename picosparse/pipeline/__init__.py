"""YAML pipelines: `picosparse run` (schema in schema.py, loading in plan.py, hashes and the
manifest in cache.py, the loop in runner.py, the calls into the step functions in adapters.py)."""

from picosparse.pipeline.plan import load_pipeline
from picosparse.pipeline.runner import RunResult, StepFailed, plan_pipeline, run_pipeline

__all__ = ["load_pipeline", "plan_pipeline", "run_pipeline", "RunResult", "StepFailed"]
