"""Errors raised for bad inference input; each names the file, record and field."""

from typing import Optional


class InputError(ValueError):
  """Bad user input (pattern file, formula, CSV row, workdir)."""

  def __init__(self, problem: str, path: Optional[str] = None,
               line: Optional[int] = None, field: Optional[str] = None):
    self.problem = problem
    self.path = path
    self.line = line
    self.field = field
    where = []
    if path is not None:
      where.append(str(path))
    if line is not None:
      where.append(f"line {line}")
    if field is not None:
      where.append(f"field {field!r}")
    super().__init__((": ".join([", ".join(where), problem])) if where else problem)


class PatternError(InputError):
  """A measured XRD pattern that cannot be used."""
