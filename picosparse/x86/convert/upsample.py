"""Fusion pass: a nearest, integer-factor Interpolate -> picosparse Upsample (NCHW).

OpenVINO runs Interpolate in NHWC: next to the NCHW picosparse ops it costs a reorder on each
side and drags the following concat into NHWC too (~5% of PicoDet-m)."""

from dataclasses import dataclass

from picosparse.x86.convert.graph import UPSAMPLE_OP, swap_in
from picosparse.x86.convert.layers import Layer


@dataclass
class UpsampleLayer(Layer):
    kind: str
    name: str
    factors: list
    op: str


@dataclass
class Upsample:
    """A matched Interpolate and its integer factors (height, width)."""

    node: object
    factors: tuple

    def build(self, ctx):
        new = ctx.factory.create(UPSAMPLE_OP, [self.node.input_value(0)],
                                 {"factor_h": self.factors[0], "factor_w": self.factors[1]})
        swap_in(self.node, new)
        return UpsampleLayer("upsample", self.node.get_friendly_name(), list(self.factors),
                             new.get_friendly_name())


def match(node, ctx):
    """Upsample if `node` is an Interpolate the op reproduces exactly (nearest, asymmetric
    coordinates: out[y] = in[floor(y / f)], integer factors, f32), else None."""
    if not ctx.nchw_ops or node.get_type_name() != "Interpolate":
        return None
    a = node.get_attributes()
    if (a.get("mode") != "nearest" or a.get("antialias")
            or a.get("coordinate_transformation_mode") != "asymmetric"
            or a.get("nearest_mode") not in ("simple", "floor")
            or any(a.get("pads_begin", [0])) or any(a.get("pads_end", [0]))):
        return None
    xs, ys = node.get_input_partial_shape(0), node.get_output_partial_shape(0)
    if not (xs.is_static and ys.is_static) or len(xs) != 4:
        return None
    (n, c, h, w), (n2, c2, h2, w2) = xs.to_shape(), ys.to_shape()
    if ((n, c) != (n2, c2) or h2 % h or w2 % w
            or node.get_input_element_type(0).get_type_name() != "f32"):
        return None
    return Upsample(node, (h2 // h, w2 // w))
