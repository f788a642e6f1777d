"""x86 sparse inference: picosparse's own sparse 1x1 convolution for x86 CPUs, hosted as
OpenVINO custom ops. One folder or file per job:

  kernels/     the C++ kernels: the sparse 1x1 (microkernel + input readers + output writers),
               dense NCHW KxK convs, upsampling, concat + shuffle; per-ISA instantiation in
               one place (per_isa.inc), one activation table (activation.h)
  openvino/    thin OpenVINO node classes over the kernels (extension.cpp), a C API (capi.cpp)
  build.py     compiles kernels/ + openvino/ into one cached library
  kernel.py    the weight format and direct ctypes calls (tests, per-kernel timing)
  convert/     exported Paddle model -> x86-sparse OpenVINO IR, one fusion pass per module
  runtime.py   the one loader of an x86-sparse folder
  perlayer.py  per-layer time of each replaced pattern vs OpenVINO's dense nodes

The conversion as a step (checked options, CLI, pipeline kind): picosparse/steps/x86_sparse.py.
"""
