"""FLOPs from XLA's cost analysis and peak rates of common accelerators (for MFU)."""

import jax

# Dense bf16 peak FLOP/s per device (vendor figures, no sparsity).
PEAK_BF16_FLOPS = (
    ("H100 PCIe", 756e12),
    ("H100", 989e12),
    ("H200", 989e12),
    ("GH200", 989e12),
    ("A100", 312e12),
    ("L4", 121e12),
    ("TPU v4", 275e12),
    ("TPU v5 lite", 197e12),
    ("TPU v5e", 197e12),
    ("TPU v5p", 459e12),
    ("TPU v6", 918e12),
)


def peak_flops_per_device(device: jax.Device) -> float | None:
  """The device's peak bf16 FLOP/s, or None where unknown (e.g. CPU)."""
  kind = getattr(device, "device_kind", "")
  for name, flops in PEAK_BF16_FLOPS:
    if name.lower() in kind.lower():
      return flops
  return None


def compiled_flops(compiled) -> float | None:
  """FLOPs of one call of a compiled computation on one device, from XLA's cost analysis.

  For an SPMD-partitioned program XLA analyses the per-device module, so with a batch sharded
  over n devices this is about 1/n of the whole step's FLOPs.
  """
  try:
    analysis = compiled.cost_analysis()
  except Exception:  # Some backends do not implement it.
    return None
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else None
  if not analysis or "flops" not in analysis:
    return None
  return float(analysis["flops"])
