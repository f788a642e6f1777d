"""Read an exported inference model (model.pdmodel + model.pdiparams) without running it.

The program is a protobuf ProgramDesc (paddle's own framework_pb2 parses it). The params file
is what `save_combine` writes: every persistable LoD tensor of block 0, sorted by name, each as
  uint32 version | uint64 lod_level | lod_level x (uint64 nbytes, data) |
  uint32 version | int32 desc_size | TensorDesc protobuf | raw data (C order).
Reading it ourselves keeps paddle in dygraph mode (load_inference_model needs static mode).
"""

import struct
from pathlib import Path

from picosparse import paddle_env
from picosparse.errors import DataError

MODEL_FILE = "model.pdmodel"
PARAMS_FILE = "model.pdiparams"
CONV_OPS = ("conv2d", "depthwise_conv2d")


def model_files(model_dir, flag="--model-dir"):
    """(model.pdmodel, model.pdiparams) of an exported folder, or a one-line DataError."""
    d = Path(model_dir)
    if not d.is_dir():
        raise DataError(f"{flag} {d}: folder does not exist")
    model, params = d / MODEL_FILE, d / PARAMS_FILE
    for f in (model, params):
        if not f.is_file():
            raise DataError(f"{flag} {d}: no {f.name} (not an exported inference model; "
                            "make one with `picosparse export`)")
    return model, params


def _pb():
    return paddle_env.framework_pb2()  # import order trap: paddle only through paddle_env


def read_program(model_file):
    pb = _pb()
    prog = pb.ProgramDesc()
    try:
        prog.ParseFromString(Path(model_file).read_bytes())
    except Exception as e:  # protobuf DecodeError and friends
        raise DataError(f"{model_file}: not a Paddle program ({type(e).__name__})") from None
    if not prog.blocks:
        raise DataError(f"{model_file}: empty Paddle program")
    return prog


def _attr(op, name):
    for a in op.attrs:
        if a.name == name:
            return a
    return None


def _inputs(op):
    return {i.parameter: list(i.arguments) for i in op.inputs}


def convs(prog):
    """Every conv op of block 0: {"type", "filter", "shape", "groups", "strides", "paddings"}.

    In an INT8 model (`picosparse quant`) a conv reads its weight through a dequantize op:
    "filter" is then the stored (int8) weight that op reads."""
    block = prog.blocks[0]
    shapes = {v.name: list(v.type.lod_tensor.tensor.dims) for v in block.vars}
    stored = {v.name for v in block.vars if v.persistable}
    dequantized, out = {}, []
    for op in block.ops:
        if op.type == "dequantize_linear":
            x = _inputs(op)["X"][0]
            if x in stored:
                dequantized.update({y: x for o in op.outputs if o.parameter == "Y"
                                    for y in o.arguments})
            continue
        if op.type not in CONV_OPS:
            continue
        filt = _inputs(op)["Filter"][0]
        filt = dequantized.get(filt, filt)
        groups, strides, pads = _attr(op, "groups"), _attr(op, "strides"), _attr(op, "paddings")
        out.append({"type": op.type, "filter": filt, "shape": shapes.get(filt, []),
                    "groups": groups.i if groups else 1,
                    "strides": list(strides.ints) if strides else [1, 1],
                    "paddings": list(pads.ints) if pads else [0, 0]})
    return out


def is_conv1x1(c):
    return len(c["shape"]) == 4 and c["shape"][2:] == [1, 1]


def sparse_eligible(c):
    """What Paddle-Lite's sparse_conv_detect_pass converts: 1x1, groups 1, stride 1, pad 0."""
    return (c["type"] == "conv2d" and is_conv1x1(c) and c["groups"] == 1
            and set(c["strides"]) == {1} and set(c["paddings"]) == {0})


def input_names(prog):
    """Feed targets in feed-column order."""
    feeds = []
    for op in prog.blocks[0].ops:
        if op.type == "feed":
            col = _attr(op, "col")
            feeds.append((col.i if col else len(feeds), [o for i in op.outputs for o in i.arguments][0]))
    return [n for _, n in sorted(feeds)]


def read_params(model_file, params_file):
    """{name: numpy array} of every persistable tensor in the params file."""
    np = paddle_env.stack().np
    pb = _pb()
    prog = read_program(model_file)
    lod = pb.VarType.LOD_TENSOR
    names = sorted(v.name for v in prog.blocks[0].vars
                   if v.persistable and v.type.type == lod and v.name not in ("feed", "fetch"))
    dtypes = {pb.VarType.FP32: "float32", pb.VarType.FP64: "float64",
              pb.VarType.FP16: "float16", pb.VarType.INT64: "int64",
              pb.VarType.INT32: "int32", pb.VarType.INT8: "int8",
              pb.VarType.UINT8: "uint8", pb.VarType.BOOL: "bool"}
    buf = Path(params_file).read_bytes()
    off, out = 0, {}
    try:
        for name in names:
            off += 4  # tensor version
            (levels,) = struct.unpack_from("<Q", buf, off)
            off += 8
            for _ in range(levels):
                (n,) = struct.unpack_from("<Q", buf, off)
                off += 8 + n
            off += 4  # tensor version again
            (dsize,) = struct.unpack_from("<i", buf, off)
            off += 4
            desc = pb.VarType.TensorDesc()
            desc.ParseFromString(buf[off:off + dsize])
            off += dsize
            dt = np.dtype(dtypes[desc.data_type])
            count = int(np.prod(desc.dims)) if len(desc.dims) else 1
            if off + count * dt.itemsize > len(buf):
                raise ValueError("truncated")
            out[name] = np.frombuffer(buf, dt, count, off).reshape(list(desc.dims))
            off += count * dt.itemsize
    except (struct.error, ValueError, KeyError) as e:
        raise DataError(f"{params_file}: does not match {Path(model_file).name} "
                        f"(at tensor {len(out)} of {len(names)}: {e})") from None
    if off != len(buf):
        raise DataError(f"{params_file}: {len(buf) - off} bytes left over after "
                        f"{len(names)} tensors; does not match {Path(model_file).name}")
    return out


def conv1x1_sparsity(model_dir):
    """Zero fractions of the exported 1x1 conv weights (what the sparse pass looks at).

    Returns {"conv1x1": int, "eligible": int, "layers": {filter: zero_fraction},
             "eligible_layers": {filter: zero_fraction}, "overall": float|None}
    (eligible: the 1x1 convs the Lite pass can convert; overall: zeros over all 1x1 weights)
    """
    model, params = model_files(model_dir)
    prog = read_program(model)
    weights = read_params(model, params)
    ones = [c for c in convs(prog) if is_conv1x1(c)]
    layers, zeros, total = {}, 0, 0
    for c in ones:
        w = weights[c["filter"]]
        z = int((w == 0).sum())
        layers[c["filter"]] = z / w.size
        zeros += z
        total += w.size
    return {"conv1x1": len(ones), "eligible": sum(sparse_eligible(c) for c in ones),
            "layers": layers, "overall": zeros / total if total else None,
            "eligible_layers": {c["filter"]: layers[c["filter"]] for c in ones
                                if sparse_eligible(c)}}
