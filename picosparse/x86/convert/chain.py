"""What a conv's picosparse op absorbs after it: per-channel affine ops (BatchNorm, Add,
Subtract, Multiply by constants), folded into its weights and bias, and one activation.

    conv -> [BatchNormInference | Add(const) | Subtract(const) | Multiply(const)]*
         -> [Relu | HSwish | HardSigmoid | PRelu(scalar slope)]?

Each step is taken only if it is the sole consumer of the previous output. Folding scales each
weight row, so zeros stay exactly zero.
"""

from dataclasses import dataclass, field

import numpy as np

from picosparse.x86.convert.graph import channel_vector, const, same, sole_consumer


@dataclass(frozen=True)
class Activation:
    """An activation the ops fuse; names are the ops' `activation` attribute values (the
    table: kernels/activation.h)."""

    name: str = "none"
    alpha: float = 0.0
    beta: float = 0.0

    def attrs(self, prefix=""):
        return {f"{prefix}activation": self.name, f"{prefix}alpha": float(self.alpha),
                f"{prefix}beta": float(self.beta)}


@dataclass
class Chain:
    """The fused chain after a conv: its last node, the folded per-channel scale and shift,
    which op types were folded, and the activation."""

    last: object
    scale: np.ndarray
    shift: np.ndarray
    folded: list = field(default_factory=list)
    act: Activation = Activation()


def fold_chain(conv, cout):
    """The longest chain of sole consumers after `conv` that folds into it (see above)."""
    scale, shift = np.ones(cout), np.zeros(cout)
    last, folded = conv, []
    while True:
        nxt = sole_consumer(last)
        if nxt is None:
            break
        got = _absorb_affine(nxt, last, scale, shift, cout)
        if got is None:
            break
        scale, shift = got
        folded.append(nxt.get_type_name())
        last = nxt
    act = Activation()
    nxt = sole_consumer(last)
    if nxt is not None and activation(nxt) is not None:
        act = activation(nxt)
        last = nxt
    return Chain(last, scale, shift, folded, act)


def _absorb_affine(node, prev, scale, shift, cout):
    """(scale, shift) after `node` if it is a per-channel affine of prev's output, else None."""
    t = node.get_type_name()
    ins = [node.input_value(i) for i in range(node.get_input_size())]
    if t == "BatchNormInference":
        # opset5: (data, gamma, beta, mean, var); opset1: (gamma, beta, data, mean, var)
        order = (0, 1, 2, 3, 4) if same(ins[0].get_node(), prev) else (2, 0, 1, 3, 4)
        if not same(ins[order[0]].get_node(), prev):
            return None
        vals = [const(ins[i]) for i in order[1:]]
        if any(v is None for v in vals):
            return None
        gamma, beta, mean, var = (channel_vector(v, cout) for v in vals)
        if any(v is None for v in (gamma, beta, mean, var)):
            return None
        s = gamma / np.sqrt(var + float(node.get_attributes()["epsilon"]))
        return scale * s, (shift - mean) * s + beta
    if t in ("Add", "Multiply", "Subtract"):
        if len(ins) != 2:
            return None
        if same(ins[0].get_node(), prev):
            other = ins[1]
        elif same(ins[1].get_node(), prev) and t != "Subtract":
            other = ins[0]
        else:
            return None
        c = const(other)
        if c is None or c.ndim > 4:
            return None
        c = channel_vector(c, cout)
        if c is None:
            return None
        if t == "Add":
            return scale, shift + c
        if t == "Subtract":
            return scale, shift - c
        return scale * c, shift * c
    return None


def activation(node):
    """The Activation `node` computes if the ops can fuse it, else None."""
    t = node.get_type_name()
    if t == "Relu":
        return Activation("relu")
    if t == "HSwish":
        return Activation("hswish")
    if t == "HardSigmoid":
        a, b = const(node.input_value(1)), const(node.input_value(2))
        if a is None or b is None or a.size != 1 or b.size != 1:
            return None
        return Activation("hsigmoid", float(a.reshape(())), float(b.reshape(())))
    if t == "PRelu":
        s = const(node.input_value(1))
        if s is None or s.size != 1:
            return None
        return Activation("leaky", float(s.reshape(())))
    return None
