"""Reading and running deployed models: exported Paddle programs, Paddle-Lite .nb files,
x86 runtimes and Paddle-Lite's benchmark_bin on ARM boards over adb.

`from picosparse.deploy import Detector` (detector.py) turns any exported PicoDet folder into
boxes on images; it needs numpy, opencv and a runtime, not paddle.
"""


def __getattr__(name):
    # lazy: `picosparse.deploy.adb` and friends must not pull in numpy/opencv
    if name in ("Detector", "Detections"):
        from picosparse.deploy import detector
        return getattr(detector, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
