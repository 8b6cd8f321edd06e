"""Errors raised for bad inference input; each names the file, record and field."""

from typing import Optional


class InputError(ValueError):
  """Bad user input (pattern file, formula, CSV row, workdir)."""

  def __init__(self, problem: str, path: Optional[str] = None,
               line: Optional[int] = None, field: Optional[str] = None):
    self.problem, self.path, self.line, self.field = problem, path, line, field
    where = [text for value, text in ((path, str(path)), (line, f"line {line}"),
                                      (field, f"field {field!r}")) if value is not None]
    super().__init__((": ".join([", ".join(where), problem])) if where else problem)


class PatternError(InputError):
  """A measured XRD pattern that cannot be used."""
