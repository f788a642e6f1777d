"""Compile the sparse-op library once per (sources, flags, OpenVINO) and cache it.

Plain g++ against the headers and libopenvino/libtbb shipped inside the `openvino` wheel (no
cmake, no OpenVINO dev package). Cache: picosparse's cache folder ($PICOSPARSE_CACHE, see
picosparse/cachedir.py); the library lands in `ops-<key>/libpicosparse_ops.so`, where key hashes
the sources, the flags, the OpenVINO version and its lib directory. The compiler is looked for
(and run) only when that library is not there yet, so a machine without g++ uses a cached or
bundled one; the compiler that built it is recorded in `ops-<key>/build.json`. A build goes to
a temp file and is renamed, so concurrent first uses are safe.
"""

import hashlib
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from picosparse import cachedir, subproc
from picosparse.atomic import atomic_path, write_json
from picosparse.errors import StackError

SRC_DIR = Path(__file__).resolve().parent
SOURCE_DIRS = ("kernels", "openvino")  # the C++: kernels, and their OpenVINO ops + C API


def source_files():
    """(compiled .cpp files, every C++ file the build reads), relative to SRC_DIR, sorted."""
    files = sorted(str(f.relative_to(SRC_DIR)) for d in SOURCE_DIRS
                   for f in (SRC_DIR / d).iterdir() if f.suffix in (".cpp", ".h", ".inc"))
    return [f for f in files if f.endswith(".cpp")], files


LIB_NAME = "libpicosparse_ops.so"
# Baseline x86-64 on purpose: the AVX2/AVX-512 kernels carry their own target attributes and
# are picked at run time, so the cached library is valid on any x86-64 CPU.
CXXFLAGS = ("-std=c++17", "-O3", "-fPIC", "-shared", "-fvisibility=hidden",
            "-Wall", "-Wno-maybe-uninitialized", "-Wno-uninitialized")
VERSION_TIMEOUT = 60  # seconds for `g++ --version`
BUILD_TIMEOUT = 1800  # per compiler run; the whole build takes ~2 minutes on two cores


def cache_root():
    return cachedir.root()


def openvino_dirs():
    """(version, include dir, lib dir, libopenvino path, libtbb path) of the installed wheel."""
    try:
        import openvino
    except ImportError as e:
        raise StackError(f"openvino is not importable ({e}); run `make install`") from None
    root = Path(openvino.__file__).resolve().parent
    inc, libs = root / "include", root / "libs"
    ov_libs = sorted(libs.glob("libopenvino.so*"))
    tbb_libs = sorted(libs.glob("libtbb.so*"))
    if not (inc / "openvino" / "op" / "op.hpp").is_file() or not ov_libs or not tbb_libs:
        raise StackError(f"the openvino wheel at {root} has no C++ headers or libopenvino.so; "
                         "reinstall openvino from PyPI")
    return openvino.__version__, inc, libs, ov_libs[0], tbb_libs[0]


def _compiler():
    cxx = os.environ.get("CXX") or shutil.which("g++")
    if not cxx:
        raise StackError("no C++ compiler found (set CXX or install g++) to build the sparse op")
    try:
        r = subproc.run([cxx, "--version"], timeout=VERSION_TIMEOUT)
    except OSError as e:
        raise StackError(f"C++ compiler {cxx} does not run: {e.strerror}") from None
    except subprocess.TimeoutExpired:
        raise StackError(f"C++ compiler {cxx}: `--version` did not answer within "
                         f"{VERSION_TIMEOUT} s") from None
    if r.returncode != 0 or not r.stdout.strip():
        raise StackError(f"C++ compiler {cxx} does not run: `--version` exited with "
                         f"{r.returncode}")
    return cxx, r.stdout.splitlines()[0]


def build_key():
    """(key, context) identifying the library for these sources/flags/OpenVINO; no compiler
    is needed to compute it."""
    ov_version, inc, libs, libov, libtbb = openvino_dirs()
    h = hashlib.sha256()
    for name in source_files()[1]:
        h.update(name.encode() + b"\0" + (SRC_DIR / name).read_bytes() + b"\0")
    for part in (" ".join(CXXFLAGS), ov_version, str(libs)):
        h.update(part.encode() + b"\0")
    return h.hexdigest()[:16], dict(inc=inc, libs=libs, libov=libov, libtbb=libtbb,
                                    ov_version=ov_version)


def _compile(cxx, cmd):
    try:
        return subproc.run(cmd, timeout=BUILD_TIMEOUT)
    except OSError as e:
        raise StackError(f"C++ compiler {cxx} does not run: {e.strerror}") from None
    except subprocess.TimeoutExpired:
        raise StackError(f"building the sparse op with {cxx} did not finish within "
                         f"{BUILD_TIMEOUT} s and was stopped") from None


def library_path(verbose=True):
    """Path of the compiled library, building it first if it is not cached yet."""
    key, ctx = build_key()
    lib = cache_root() / f"ops-{key}" / LIB_NAME
    if lib.is_file():
        return lib
    cxx, cxx_version = _compiler()
    if verbose:
        print(f"picosparse: building sparse op for OpenVINO {ctx['ov_version']} (once) -> {lib}",
              file=sys.stderr, flush=True)
    with atomic_path(lib) as tmp:
        objs = tmp.parent / f".{tmp.name}.objs"
        objs.mkdir(parents=True, exist_ok=True)
        try:
            # one compiler per source file, in parallel: the build is CPU-bound (~3 min
            # serially on two cores), the link takes a second
            sources = source_files()[0]
            compiles = [[cxx, *CXXFLAGS, "-c", f"-I{ctx['inc']}", str(SRC_DIR / src), "-o",
                         str(objs / (Path(src).stem + ".o"))] for src in sources]
            link = [cxx, *CXXFLAGS, *[c[-1] for c in compiles], "-o", str(tmp),
                    str(ctx["libov"]), str(ctx["libtbb"]), f"-Wl,-rpath,{ctx['libs']}"]
            with ThreadPoolExecutor(max(1, min(len(compiles), os.cpu_count() or 1))) as pool:
                results = list(pool.map(lambda c: (c, _compile(cxx, c)), compiles))
            results.append((link, _compile(cxx, link)))
            for cmd, r in results:
                if r.returncode != 0:
                    log = lib.parent / "build.log"
                    log.write_text(" ".join(cmd) + "\n\n" + r.stdout + r.stderr)
                    raise StackError(f"building the sparse op failed (compiler log: {log})")
        finally:
            shutil.rmtree(objs, ignore_errors=True)
    write_json(lib.parent / "build.json", {"compiler": cxx, "compiler_version": cxx_version,
                                           "flags": list(CXXFLAGS),
                                           "openvino": ctx["ov_version"]})
    return lib
