"""Parameter counts per top-level component and forward FLOPs (XLA's cost analysis) of a model."""

from typing import Any

from clu import parameter_overview
import jax
import jax.numpy as jnp

from xxact_jax import constants
from xxact_jax.models import config as config_lib

COMPONENTS = ("composition_encoder", "xrd_encoder", "fusion", "heads")


def _example_inputs(batch_size: int, max_elements: int) -> tuple[jax.ShapeDtypeStruct, ...]:
  """Abstract (species, fractions, xrd) of one batch."""
  return (jax.ShapeDtypeStruct((batch_size, max_elements), jnp.int32),
          jax.ShapeDtypeStruct((batch_size, max_elements), jnp.float32),
          jax.ShapeDtypeStruct((batch_size, constants.NUM_XRD_POINTS), jnp.float32))


def abstract_params(model_config, max_elements: int = 10) -> Any:
  """The parameter tree as ShapeDtypeStructs (nothing is allocated)."""
  model = config_lib.build_model(model_config)
  inputs = _example_inputs(1, max_elements)
  variables = jax.eval_shape(
      lambda *x: model.init(jax.random.key(0), *x, train=False), *inputs)
  return variables["params"]


def parameter_counts(params: Any) -> dict[str, int]:
  """{component: count} for the four top-level collections plus "total"."""
  unknown = sorted(set(params) - set(COMPONENTS))
  if unknown:
    raise ValueError(f"Unexpected top-level parameter collections {unknown}")
  counts = {name: int(parameter_overview.count_parameters(params.get(name, {})))
            for name in COMPONENTS}
  counts["total"] = sum(counts.values())
  return counts


def parameter_table(params: Any) -> str:
  """Every parameter's name, shape, dtype and size, and the total (clu's parameter overview;
  abstract or concrete trees)."""
  return parameter_overview.get_parameter_overview(params, include_stats=False)


def forward_flops_per_sample(model_config, batch_size: int = 8,
                             max_elements: int = 10) -> float:
  """Forward (inference) FLOPs per sample, from XLA's cost analysis of the compiled program."""
  model = config_lib.build_model(model_config)
  inputs = _example_inputs(batch_size, max_elements)
  params = abstract_params(model_config, max_elements)
  apply = jax.jit(lambda p, *x: model.apply({"params": p}, *x, train=False))
  cost = apply.lower(params, *inputs).compile().cost_analysis()
  if isinstance(cost, (list, tuple)):  # Older jax returned one dict per device program.
    cost = cost[0]
  return float(cost["flops"]) / batch_size
