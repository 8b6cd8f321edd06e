"""Fused Pallas kernels for the transformer layers' memory-bound glue (issue 29).

Each kernel is written for the GPU's Triton lowering and runs in Pallas interpret mode on other
backends (the CPU tests), with a custom VJP whose backward is a kernel too. They sit behind the
model-config switches `fused_attention`, `fused_norm` and `fused_bias_grad` (models/config.py),
all off by default until a GPU measurement says they pay (benchmarks/RESULTS.md).

  attention.py   short-sequence multi-head attention with dropout on the weights
  norm.py        LayerNorm(x + dropout(h)), the post-LN residual block
  bias.py        dense layers whose bias gradient is one tiled column reduction
  common.py      interpret-mode choice, the in-kernel dropout hash, compiler parameters
"""
