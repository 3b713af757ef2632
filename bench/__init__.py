"""autopeft's benchmark scripts (figures in BENCHMARKS.md). Run each as a module from the repository root, e.g.
``python -m bench.tabular build --quick --model TINY``; what they share is in :mod:`bench.common`."""
