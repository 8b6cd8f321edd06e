"""Element + fraction encoding of a composition (pymatgen-free, shared with inference)."""

import re

import numpy as np

from xxact_jax import constants

_TOKEN = re.compile(r"([A-Z][a-z]*)|(\d+(?:\.\d*)?|\.\d+)|([()\[\]])|(\s+)")
_CLOSING = {")": "(", "]": "["}


def _tokenize(formula: str) -> list[tuple[str, str]]:
  tokens, pos = [], 0
  while pos < len(formula):
    match = _TOKEN.match(formula, pos)
    if match is None:
      raise ValueError(
          f"Bad formula {formula!r}: unexpected character {formula[pos]!r} at position {pos}.")
    symbol, number, bracket, _ = match.groups()
    if symbol:
      tokens.append(("symbol", symbol))
    elif number:
      tokens.append(("number", number))
    elif bracket:
      tokens.append(("bracket", bracket))
    pos = match.end()
  return tokens


def parse_formula(formula: str) -> dict[str, float]:
  """{element symbol: amount} of a formula such as "Fe2O3", "Ca(OH)2" or "Li0.5CoO2" (whitespace
  ignored, brackets may nest, repeated symbols summed); ValueError naming the formula and the
  offending symbol or character."""
  if not isinstance(formula, str) or not formula.strip():
    raise ValueError(f"Bad formula {formula!r}: expected a non-empty string.")
  stack: list[tuple[str, dict[str, float]]] = [("", {})]
  tokens = _tokenize(formula)
  i = 0

  def take_multiplier() -> float:
    nonlocal i
    if i < len(tokens) and tokens[i][0] == "number":
      i += 1
      return float(tokens[i - 1][1])
    return 1.0

  while i < len(tokens):
    kind, text = tokens[i]
    i += 1
    if kind == "symbol":
      if text not in constants.ATOMIC_NUMBER:
        raise ValueError(f"Bad formula {formula!r}: unknown element symbol {text!r}.")
      counts = stack[-1][1]
      counts[text] = counts.get(text, 0.0) + take_multiplier()
    elif kind == "bracket" and text in "([":
      stack.append((text, {}))
    elif kind == "bracket":
      if len(stack) == 1 or stack[-1][0] != _CLOSING[text]:
        raise ValueError(f"Bad formula {formula!r}: unbalanced {text!r}.")
      _, group = stack.pop()
      multiplier = take_multiplier()
      for symbol, amount in group.items():
        stack[-1][1][symbol] = stack[-1][1].get(symbol, 0.0) + amount * multiplier
    else:
      raise ValueError(f"Bad formula {formula!r}: number {text!r} does not follow an element.")
  if len(stack) != 1:
    raise ValueError(f"Bad formula {formula!r}: unclosed {stack[-1][0]!r}.")
  counts = {s: a for s, a in stack[0][1].items() if a != 0}
  if not counts:
    raise ValueError(f"Bad formula {formula!r}: no elements.")
  return counts


def encode_composition(amounts: dict[str, float], max_elements: int
                      ) -> tuple[np.ndarray, np.ndarray]:
  """Encodes element amounts as (atomic numbers, fractions), K = max_elements slots.

  Elements are sorted by descending fraction, ties by ascending atomic number; unused slots hold
  0 (species) and 0.0 (fraction). ValueError for an unknown symbol, a non-positive amount, or
  more than max_elements distinct elements (never truncates).
  """
  if len(amounts) > max_elements:
    raise ValueError(
        f"Composition has {len(amounts)} elements ({', '.join(sorted(amounts))}), "
        f"more than max_elements={max_elements}.")
  if not amounts:
    raise ValueError("Composition is empty.")
  numbers, values = [], []
  for symbol, amount in amounts.items():
    if symbol not in constants.ATOMIC_NUMBER:
      raise ValueError(f"Unknown element symbol {symbol!r}.")
    amount = float(amount)
    if not amount > 0 or not np.isfinite(amount):
      raise ValueError(f"Element {symbol} has non-positive or non-finite amount {amount!r}.")
    numbers.append(constants.ATOMIC_NUMBER[symbol])
    values.append(amount)
  fractions = np.asarray(values, np.float64) / np.sum(values)
  # Rounding before sorting keeps exact ties (e.g. 1/3 vs 2/6) ordered by Z.
  order = np.lexsort((np.asarray(numbers), -np.round(fractions, 12)))
  species = np.zeros(max_elements, np.int32)
  encoded = np.zeros(max_elements, np.float32)
  species[:len(order)] = np.asarray(numbers)[order]
  encoded[:len(order)] = fractions[order]
  return species, encoded


def zero_amount_symbols(formula: str) -> list[str]:
  """Elements written with a zero amount in `formula` ("Fe0O3" -> ["Fe"]), in order.

  `parse_formula` drops them (as pymatgen does); inference refuses them, since a zero is more
  likely a typo than a deliberate absence. A zero after a bracket names every element inside.
  Assumes `formula` parses (call `parse_formula` first).
  """
  tokens = _tokenize(formula)
  found = []
  for i, (kind, text) in enumerate(tokens):
    if kind != "number" or float(text) != 0 or i == 0:
      continue
    previous_kind, previous = tokens[i - 1]
    if previous_kind == "symbol":
      symbols = [previous]
    else:                      # a closing bracket: the elements back to its opening one
      depth, j = 0, i - 1
      while j >= 0:
        if tokens[j][0] == "bracket":
          depth += 1 if tokens[j][1] in ")]" else -1
          if depth == 0:
            break
        j -= 1
      symbols = [t for k, t in tokens[j + 1:i - 1] if k == "symbol"]
    found.extend(s for s in symbols if s not in found)
  return found
