"""One error type for bad input, so the CLI can print a single clear line instead of a traceback."""
import difflib
import sys


class UserError(ValueError):
  """Bad input from the user: the message names the problem, `hint` names the fix."""

  def __init__(self, message: str, hint: str | None = None):
    self.message = message
    self.hint = hint
    super().__init__(f"{message}" + (f" Fix: {hint}" if hint else ""))


def report(e: UserError) -> int:
  """Prints `e` as a command's error (the problem, then its fix) on stderr; the exit status 2."""
  print(f"error: {e.message}", file=sys.stderr)
  if e.hint:
    print(f"fix: {e.hint}", file=sys.stderr)
  return 2


def unknown_name(kind: str, name: str, known) -> UserError:
  """Error for an unknown registry name, suggesting the closest known one (else the list)."""
  known = sorted(known)
  close = difflib.get_close_matches(str(name), known, n=1)
  hint = f"did you mean {close[0]!r}?" if close else f"use one of the {kind} names listed."
  return UserError(f"unknown {kind} {name!r}; known: {', '.join(known)}.", hint)
