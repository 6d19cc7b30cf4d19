"""Side-by-side benchmarks of gradcalc against hand-written NumPy, PyTorch and Python floors.

Run ``python benchmarks/run.py`` (``--quick`` for a smoke run); see issue 6 for
the workloads W1-W6 and their target ratios.
"""
