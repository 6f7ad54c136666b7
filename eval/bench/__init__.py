"""Benchmarks and kernel tools: ``python -m eval.bench.<name>``.

attention    one attention call at real shapes, every method side by side (CUDA)
e2e          one transformer forward per method at real configurations, with its Amdahl ceiling (CUDA; --toy on CPU)
cpu          the torch sparse path against dense SDPA on the CPU
small_call   where the time of one small sparse call goes (CUDA)
plan_padding the sparse kernel's tile work over the pairs an svg2 plan keeps (CPU)
kernel_ir    how Triton pipelines the sparse kernel, from its sm_90 TTGIR (no GPU)

Shapes are named as in ``eval.shapes``; every CSV is written by ``eval.bench.rows.RowWriter``.
"""
