"""One error type for bad input, so the CLI can print a single clear line instead of a traceback."""
import difflib


class UserError(ValueError):
  """Bad input from the user: the message names the problem, `hint` names the fix."""

  def __init__(self, message: str, hint: str | None = None):
    self.message = message
    self.hint = hint
    super().__init__(f"{message}" + (f" Fix: {hint}" if hint else ""))


def unknown_name(kind: str, name: str, known) -> UserError:
  """Error for an unknown registry name, suggesting the closest known one."""
  known = sorted(known)
  close = difflib.get_close_matches(str(name), known, n=1)
  hint = f"did you mean {close[0]!r}?" if close else None
  return UserError(f"unknown {kind} {name!r}; known: {', '.join(known)}.", hint)
