"""Reading and running deployed models: exported Paddle programs, Paddle-Lite .nb files,
x86 runtimes and Paddle-Lite's benchmark_bin on ARM boards over adb."""
