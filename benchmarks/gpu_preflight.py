r"""What a GPU session's stages need against what the machine has (gpu_session.sh `setup`).

  python3 benchmarks/gpu_preflight.py --stages=setup,baseline,kernels [--out=preflight.json]

For each module the stages import: its version and where it comes from (the machine's image,
or a carried wheel installed under /tmp/site), or `MISSING` with the wheel that carries it
(benchmarks/fetch_wheels.sh); then the carried data (datasets, the PyTorch peer) and the JAX
backend. Prints one line per item and a verdict, writes the same as JSON with --out, and exits
1 when something a requested stage needs is missing (the session goes on: each stage then fails
on its own, with this file saying why).
"""

import argparse
import importlib
import json
import os
import sys

CARRIED = "/tmp/site"

# module -> (wheel that carries it, or "image" for what the CUDA image provides; stages needing it)
ALL = ("baseline", "sweep", "hlo", "final", "simulated", "kernels", "kernelcheck")
MODULES = {
    "jax": ("image", ALL),
    "jaxlib": ("image", ALL),
    "flax": ("image", ALL),
    "optax": ("image", ALL),
    "orbax.checkpoint": ("image", ALL),
    "tensorstore": ("image", ALL),
    "numpy": ("image", ALL),
    "absl": ("image", ALL),
    "grain": ("grain", ALL),
    "array_record": ("array-record", ALL),
    "ml_collections": ("ml-collections", ALL),
    "clu": ("clu", ALL),
    "tensorboardX": ("tensorboardX", ALL),
    "pytest": ("pytest (+ pluggy, iniconfig)", ("kernelcheck",)),
    "jax.experimental.pallas.triton": ("image (jax)", ("kernels", "kernelcheck")),
    "pymatgen": ("pymatgen (+ monty, spglib, ruamel.yaml, ...): prepare only", ()),
    "torch": ("image, or none: the torch stage is then skipped", ("torch",)),
}


def module_status(name: str) -> dict:
  try:
    module = importlib.import_module(name)
  except Exception as e:  # pylint: disable=broad-except
    return {"ok": False, "error": f"{type(e).__name__}: {e}"[:200]}
  top = sys.modules[name.split(".")[0]]
  path = os.path.dirname(getattr(top, "__file__", "") or "")
  return {"ok": True, "version": getattr(top, "__version__", None) or getattr(module, "__version__", None),
          "from": "carried wheel" if path.startswith(CARRIED) else "image", "path": path}


def dataset_status(path: str) -> dict:
  meta = os.path.join(path, "metadata.json") if path else ""
  if not path or not os.path.exists(meta):
    return {"ok": False, "path": path}
  with open(meta) as f:
    m = json.load(f)
  return {"ok": True, "path": path, "rows": sum((m.get("counts") or {}).values())
          if isinstance(m.get("counts"), dict) else m.get("counts")}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--stages", default="setup,baseline")
  parser.add_argument("--data", default=".gpudata/mp6k")
  parser.add_argument("--sim_data", default=".gpudata/mp4k_s")
  parser.add_argument("--torch_ref", default="")
  parser.add_argument("--out", default=None)
  args = parser.parse_args(argv)
  stages = {s for s in args.stages.split(",") if s}
  report = {"stages": sorted(stages), "python": sys.version.split()[0], "modules": {},
            "missing_for_stages": []}
  for name, (carrier, needed_by) in MODULES.items():
    status = module_status(name)
    status.update(carrier=carrier, needed_by=[s for s in needed_by if s in stages])
    report["modules"][name] = status
    if not status["ok"] and status["needed_by"]:
      report["missing_for_stages"].append(name)
    line = (f"{status.get('version') or ''} ({status['from']})" if status["ok"]
            else f"MISSING, carried by: {carrier}")
    print(f"preflight: {name:32s} {line}")
  data_stages = stages & {"baseline", "final"}
  report["data"] = dataset_status(args.data)
  report["sim_data"] = dataset_status(args.sim_data)
  report["torch_ref"] = args.torch_ref or None
  for key, needed in (("data", data_stages), ("sim_data", stages & {"simulated"})):
    print(f"preflight: {key:32s} {'ok' if report[key]['ok'] else 'MISSING'} {report[key]['path']}")
    if needed and not report[key]["ok"]:
      report["missing_for_stages"].append(key)
  print(f"preflight: {'torch_ref.py':32s} {args.torch_ref or 'MISSING (torch stage skipped)'}")
  if "torch" in stages and not args.torch_ref:
    report["missing_for_stages"].append("torch_ref")
  try:
    import jax  # pylint: disable=g-import-not-at-top
    report["backend"] = jax.default_backend()
    report["devices"] = [str(d) for d in jax.devices()]
  except Exception as e:  # pylint: disable=broad-except
    report["backend"] = f"error: {e}"[:200]
  print(f"preflight: {'backend':32s} {report['backend']}")
  ok = not report["missing_for_stages"]
  print("preflight: " + ("everything the stages need is here" if ok else
                         f"MISSING for the stages: {report['missing_for_stages']}"))
  if args.out:
    with open(args.out, "w") as f:
      json.dump(report, f, indent=1)
  return 0 if ok else 1


if __name__ == "__main__":
  sys.exit(main())
