"""Pass: bypass x * 1 and x + 0 by constants (Paddle's save_infer_model scale on every
output): next to a picosparse op the CPU plugin runs each as a copy of the tensor."""

import numpy as np

from picosparse.x86.convert.graph import const


def drop_identity_scales(model):
    for node in model.get_ordered_ops():
        t = node.get_type_name()
        if t not in ("Multiply", "Add"):
            continue
        for data, c in ((node.input_value(0), node.input_value(1)),
                        (node.input_value(1), node.input_value(0))):
            v = const(c)
            if (v is None or not np.all(v == (1.0 if t == "Multiply" else 0.0))
                    or data.get_partial_shape() != node.get_output_partial_shape(0)
                    or data.get_element_type() != node.get_output_element_type(0)):
                continue
            names = set(node.output(0).get_names()) | set(data.get_names())
            node.output(0).replace(data)
            data.get_tensor().set_names(names)
            break
