"""Layer records: what the rewrite put where, one per replaced pattern, in graph order.

They become x86_sparse.json's `layers` (per-layer timing, x86/perlayer.py, matches them to
OpenVINO's profile by the `name` of the pattern's first node and the `op` that replaced it).
Each pass module defines its record as a dataclass subclass; `fused_into` and `layout`, set
by later passes, are written only when set.
"""

from dataclasses import asdict, dataclass

OPTIONAL = ("fused_into", "layout", "below_threshold")


@dataclass
class Layer:
    def to_json(self):
        return {k: v for k, v in asdict(self).items() if not (k in OPTIONAL and v is None)}
