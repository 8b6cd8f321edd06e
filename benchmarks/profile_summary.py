r"""Where a traced step's device time goes: a table from a `train_step.py --profile_dir` trace.

  python benchmarks/profile_summary.py DIR [--steps=5] [--top=40] [--hlo=STEP.hlo.gz]

Reads the Perfetto/Chrome trace (`perfetto_trace.json.gz`) that `jax.profiler` writes under DIR,
keeps the events of the device's kernel streams, and prints the device time per step by kernel
class (matrix products, attention, reductions such as LayerNorm and softmax, elementwise and
random-bit fusions, copies) and the most expensive kernels. The classes are read off kernel
names, so they are a guide; the kernel table beside them is exact. With `--hlo` (the optimised
program, `train_step.py --dump_hlo`), XLA's own kernels are traced back to the model code they
run (forward or backward, which module): a table by model part.
"""

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys

# (class, pattern on the lower-cased kernel name), first match wins.
CLASSES = (
    ("Pallas kernels (models/kernels/)", r"xxact_"),
    ("attention (cuDNN fused)", r"cudnn|flash|fmha|sdpa"),
    ("matmul", r"gemm|xmma|cutlass|cublas|matmul|dot|wgmma|triton_gemm|sm90_|sm80_|gmma"),
    ("memcpy / memset", r"memcpy|memset|copy_|^copy|transpose"),
    ("random bits", r"rng|threefry|philox|random"),
    ("reduction (LayerNorm, softmax, losses)", r"reduce|reduction|norm|softmax"),
    ("elementwise fusion", r"fusion|loop_|elementwise|convert|add|multiply|select"),
)


def find_trace(directory: str) -> str:
  paths = sorted(glob.glob(os.path.join(directory, "**", "*.trace.json.gz"), recursive=True)
                 + glob.glob(os.path.join(directory, "**", "perfetto_trace.json.gz"),
                             recursive=True)
                 + glob.glob(os.path.join(directory, "**", "*.json.gz"), recursive=True))
  if not paths:
    raise FileNotFoundError(f"no *.json.gz trace under {directory!r}")
  return paths[0]


def classify(name: str) -> str:
  low = name.lower()
  for label, pattern in CLASSES:
    if re.search(pattern, low):
      return label
  return "other"


def load_events(path: str):
  with gzip.open(path, "rt") as f:
    data = json.load(f)
  events = data["traceEvents"] if isinstance(data, dict) else data
  processes, threads = {}, {}
  for e in events:
    if e.get("ph") == "M" and e.get("name") == "process_name":
      processes[e["pid"]] = e.get("args", {}).get("name", "")
    elif e.get("ph") == "M" and e.get("name") == "thread_name":
      threads[(e["pid"], e.get("tid"))] = e.get("args", {}).get("name", "")
  return events, processes, threads


def hlo_sources(path: str) -> dict:
  """Kernel name (as the trace spells it) -> op_name metadata of the optimised HLO."""
  opener = gzip.open if path.endswith(".gz") else open
  sources = {}
  pattern = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = .*?metadata=\{[^}]*op_name=\"([^\"]+)\"")
  with opener(path, "rt") as f:
    for line in f:
      m = pattern.match(line)
      if m:
        # The trace names kernel "input_transpose_fusion.107" as "input_transpose_fusion_107".
        sources[m.group(1).replace(".", "_")] = m.group(2)
  return sources


def model_part(op_name: str) -> tuple[str, str]:
  """("forward" | "backward" | "optimizer", module path with layer numbers as N)."""
  if "transpose(jvp(" in op_name:
    direction = "backward"
  elif "jvp(" in op_name:
    direction = "forward"
  else:
    direction = "optimizer / other"
  parts = [p for p in op_name.split("/")
           if not p.startswith(("jit(", "jvp(", "transpose(")) and p]
  path = "/".join(parts[:-1]) or "(top level)"
  return direction, re.sub(r"layer_\d+", "layer_N", path)


COMPONENTS = (  # (label, pattern on the module path), first match wins.
    ("dropout (random bits, masks)", r"dropout"),
    ("dense layers outside cuBLAS (bias, epilogues, layouts)",
     r"/(qkv|kv|q|out|fc1|fc2)$|projection"),
    ("attention core (scores, softmax, weights x V, head layouts)", r"attention"),
    ("LayerNorm + residual", r"norm\d|layer_N$"),
    ("losses, heads, optimizer update", r"top level|heads|^$"),
)


def component(module: str) -> str:
  for label, pattern in COMPONENTS:
    if re.search(pattern, module.lower()):
      return label
  return "other model code"


def summarise(path: str, steps: int, top: int, hlo: str | None = None) -> str:
  events, processes, threads = load_events(path)
  device_pids = {pid for pid, name in processes.items()
                 if re.search(r"/device:(gpu|tpu)|gpu:\d", name.lower())}
  if not device_pids:  # A CPU trace: the XLA thunks run on host threads.
    device_pids = set(processes)
  by_thread = collections.Counter()
  for e in events:
    if e.get("ph") == "X" and e.get("pid") in device_pids:
      by_thread[(e["pid"], e.get("tid"))] += float(e.get("dur", 0))
  lines = [f"trace: {path}", "device threads (total µs over the traced steps):"]
  for (pid, tid), dur in by_thread.most_common():
    lines.append(f"  {processes.get(pid, pid)} / {threads.get((pid, tid), tid)}: {dur:,.0f}")
  # Kernel streams hold the kernels; 'XLA Ops' / 'XLA Modules' threads hold HLO-level spans that
  # overlap them, so only stream threads are summed.
  streams = {key for key in by_thread
             if re.search(r"stream", threads.get(key, "").lower())
             and not re.search(r"xla ops|xla modules|steps", threads.get(key, "").lower())}
  if not streams:  # No stream threads (CPU): the spans that name an HLO op.
    streams = {(e.get("pid"), e.get("tid")) for e in events
               if e.get("ph") == "X" and "hlo_op" in e.get("args", {})}
  per_kernel = collections.Counter()
  calls = collections.Counter()
  for e in events:
    if (e.get("ph") == "X" and (e.get("pid"), e.get("tid")) in streams
        and not e.get("name", "").startswith(("ThunkExecutor", "ThreadpoolListener"))):
      per_kernel[e.get("name", "?")] += float(e.get("dur", 0))
      calls[e.get("name", "?")] += 1
  total = sum(per_kernel.values())
  if not total:
    raise ValueError(f"{path}: no device kernels in the trace")
  per_class = collections.Counter()
  for name, dur in per_kernel.items():
    per_class[classify(name)] += dur
  lines.append(f"\nkernel time per step: {total / steps / 1e3:,.2f} ms over {steps} step(s), "
               f"{len(per_kernel)} distinct kernels, {sum(calls.values()) / steps:,.0f} "
               "launches per step")
  lines.append("\n| class | ms / step | share |\n|---|---|---|")
  for label, dur in per_class.most_common():
    lines.append(f"| {label} | {dur / steps / 1e3:,.2f} | {100 * dur / total:.1f}% |")
  lines.append(f"\n| kernel (top {top}) | class | ms / step | calls / step | share |\n"
               "|---|---|---|---|---|")
  for name, dur in per_kernel.most_common(top):
    short = name if len(name) <= 90 else name[:87] + "..."
    lines.append(f"| `{short}` | {classify(name)} | {dur / steps / 1e3:,.3f} | "
                 f"{calls[name] / steps:g} | {100 * dur / total:.1f}% |")
  families = collections.Counter()
  for name, dur in per_kernel.items():
    families[re.sub(r"[._]?\d+", "N", name)[:100]] += dur
  lines.append(f"\n| kernel family (digits as N, top {top}) | ms / step | share |\n|---|---|---|")
  for name, dur in families.most_common(top):
    lines.append(f"| `{name}` | {dur / steps / 1e3:,.3f} | {100 * dur / total:.1f}% |")
  if hlo:
    sources = hlo_sources(hlo)
    parts = collections.Counter()
    unmapped = 0.0
    for name, dur in per_kernel.items():
      op_name = sources.get(name)
      if op_name is None:
        unmapped += dur
        continue
      direction, module = model_part(op_name)
      # Attention's einsums and softmax sit under the attention modules; name the op kind too.
      parts[(direction, module, classify(name))] += dur
    lines.append(f"\n| pass | model part | kernel class | ms / step | share |\n"
                 "|---|---|---|---|---|")
    for (direction, module, label), dur in parts.most_common(top):
      lines.append(f"| {direction} | `{module}` | {label} | {dur / steps / 1e3:,.3f} | "
                   f"{100 * dur / total:.1f}% |")
    lines.append(f"| (library kernels: cuBLAS, cuDNN) | | | {unmapped / steps / 1e3:,.3f} | "
                 f"{100 * unmapped / total:.1f}% |")
    by_component = collections.Counter()
    for (_, module, _), dur in parts.items():
      by_component[component(module)] += dur
    by_component["matrix products in cuBLAS (dense layers)"] += unmapped
    lines.append("\n| component | ms / step | share |\n|---|---|---|")
    for label, dur in by_component.most_common():
      lines.append(f"| {label} | {dur / steps / 1e3:,.2f} | {100 * dur / total:.1f}% |")
  # HLO-level spans carry the op names of the program (flax module paths in their metadata).
  hlo = collections.Counter()
  for e in events:
    if (e.get("ph") == "X" and e.get("pid") in device_pids
        and re.search(r"xla ops", threads.get((e.get("pid"), e.get("tid")), "").lower())):
      args = e.get("args", {})
      label = args.get("tf_op") or args.get("long_name") or e.get("name", "?")
      label = re.sub(r"\d+", "N", str(label))[:120]
      hlo[label] += float(e.get("dur", 0))
  if hlo:
    lines.append(f"\n| HLO op / source (top {top}, digits as N) | ms / step |\n|---|---|")
    for label, dur in hlo.most_common(top):
      lines.append(f"| `{label}` | {dur / steps / 1e3:,.3f} |")
  return "\n".join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("directory")
  parser.add_argument("--steps", type=int, default=5, help="Steps in the trace.")
  parser.add_argument("--top", type=int, default=40)
  parser.add_argument("--hlo", help="The step's optimised HLO (train_step.py --dump_hlo).")
  args = parser.parse_args()
  try:
    print(summarise(find_trace(args.directory), args.steps, args.top, args.hlo))
  except (FileNotFoundError, KeyError, ValueError) as e:
    sys.exit(f"profile_summary.py: {e}")


if __name__ == "__main__":
  main()
