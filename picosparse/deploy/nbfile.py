"""What is inside a Paddle-Lite .nb: op types, kernel targets and precisions.

A .nb written by opt 2.10+ starts with a uint16 meta version (2), a 16-byte opt version string
and then flatbuffers. Every op of the optimized graph stores its chosen kernel in the attribute
`__@kernel_type_attr@__` as `op_type/alias/target/precision/layout` (a flatbuffer string: uint32
length, bytes, NUL). Counting those strings gives one entry per op; on the demo model this
matched Paddle-Lite's own reader (Opt().visualize_optimized_nb_model) op for op
(tests/test_lite.py keeps checking that).
"""

import collections
import re
import struct
from pathlib import Path

from picosparse.errors import DataError

# paddle_place.h enums (TargetType, PrecisionType)
TARGETS = {0: "unk", 1: "host", 2: "x86", 3: "cuda", 4: "arm", 5: "opencl", 6: "any",
           7: "fpga", 8: "npu", 9: "xpu", 10: "bm", 11: "mlu", 12: "rknpu", 13: "apu",
           14: "huawei_ascend_npu", 15: "imagination_nna", 16: "intel_fpga", 17: "metal",
           18: "nnadapter"}
PRECISIONS = {0: "unk", 1: "fp32", 2: "int8", 3: "int32", 4: "any", 5: "fp16", 6: "bool",
              7: "int64", 8: "int16", 9: "uint8", 10: "fp64"}
# compute targets: host/any kernels (feed, reshape...) run anywhere
COMPUTE = {"x86", "arm", "opencl", "cuda", "metal", "xpu", "npu", "nnadapter"}

_KERNEL = re.compile(rb"([a-z][a-z0-9_]*)/([A-Za-z0-9_]+)/(\d{1,2})/(\d{1,2})/(\d{1,2})\x00")


def inspect(path):
    """{"meta_version": int, "lite_version": str, "ops": Counter(op_type),
        "targets": Counter(target), "precisions": Counter(precision),
        "op_precisions": {op_type: Counter(precision)}, "size_bytes": int}.

    A kernel's precision is the one its key records: an INT8 sparse conv is
    `sparse_conv2d/int8_fp32_out/4/2/1` (arm, int8), an FP32 one `sparse_conv2d/def/4/1/1`."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    if len(data) < 18:
        raise DataError(f"{path}: not a Paddle-Lite .nb file (too short)")
    (meta,) = struct.unpack_from("<H", data, 0)
    version = data[2:18].split(b"\x00")[0].decode("ascii", "replace")
    ops, targets, precisions = collections.Counter(), collections.Counter(), collections.Counter()
    op_precisions = collections.defaultdict(collections.Counter)
    for m in _KERNEL.finditer(data):
        start = m.start()
        # a real flatbuffer string: its uint32 length prefix equals the key's length
        if start < 4 or struct.unpack_from("<I", data, start - 4)[0] != m.end() - 1 - start:
            continue
        op = m.group(1).decode()
        prec = PRECISIONS.get(int(m.group(4)), m.group(4).decode())
        ops[op] += 1
        targets[TARGETS.get(int(m.group(3)), m.group(3).decode())] += 1
        precisions[prec] += 1
        op_precisions[op][prec] += 1
    if meta != 2 or not version.startswith("v") or not ops:
        raise DataError(f"{path}: not a Paddle-Lite .nb this version can read "
                        f"(meta version {meta}, opt version {version!r}); "
                        "make it with paddlelite 2.13 (`picosparse opt`)")
    return {"meta_version": meta, "lite_version": version, "ops": ops, "targets": targets,
            "precisions": precisions, "op_precisions": dict(op_precisions),
            "size_bytes": len(data)}


def compute_targets(info):
    """The non-host targets the .nb's kernels run on, e.g. {"arm"}."""
    return {t for t in info["targets"] if t in COMPUTE}


CONV_KERNELS = ("conv2d", "depthwise_conv2d", "sparse_conv2d")


def conv_precisions(info):
    """{op_type: {precision: count}} of the .nb's conv kernels (plain dicts, for JSON)."""
    return {op: dict(c) for op, c in sorted(info["op_precisions"].items())
            if op in CONV_KERNELS}


def int8_problems(info, expect_sparse, min_sparse=0):
    """Why a .nb asked to be INT8 is not (empty when it is): INT8 conv kernels at all, every
    sparse_conv2d INT8 (Paddle-Lite falls back to FP32 kernels silently), and with
    `expect_sparse` at least `min_sparse` sparse_conv2d kernels (the rest would run dense)."""
    convs = conv_precisions(info)
    sparse = convs.get("sparse_conv2d", {})
    n_sparse = sum(sparse.values())
    int8 = sum(c.get("int8", 0) for c in convs.values())
    out = []
    if not int8:
        total = collections.Counter()
        for c in convs.values():
            total.update(c)
        got = ", ".join(f"{n} {p.upper()}" for p, n in sorted(total.items())) or "none"
        out.append(f"no INT8 conv kernels (conv kernels: {got})")
    fp = n_sparse - sparse.get("int8", 0)
    if fp:
        other = "/".join(sorted(p.upper() for p in sparse if p != "int8"))
        out.append(f"{fp} of {n_sparse} sparse_conv2d kernels are {other}, not INT8")
    if expect_sparse and n_sparse < min_sparse:
        out.append(f"{min_sparse - n_sparse} of {min_sparse} sparse-eligible 1x1 convs stayed "
                   f"dense conv2d kernels ({n_sparse} sparse_conv2d)")
    return out
