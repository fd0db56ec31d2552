"""The paper's metrics and the audits, registered in one fixed order: the order of every model's
results, of `which` by default and of the default table, so results files and tables do not
depend on the order modules happen to be imported in."""
from jax_unlearn.metrics import ain, audit, base, distances, errors, mia

BUILTIN = (errors.CohortErrors(), distances.Wasserstein(), distances.ActivationDistance(),
           mia.MembershipAttack(), ain.AnamnesisIndex())
AUDITS = (audit.LiRA(), audit.ULiRA(), audit.Epsilon(), audit.KS(), audit.SVM())
for _entry in BUILTIN + AUDITS:
  base.register(_entry)

# The built-in metrics' contract, whatever else is registered later: keys every model's results
# hold, and the columns of the default table.
REQUIRED_KEYS = tuple(k for m in BUILTIN for k in m.required)
DEFAULT_COLUMNS = tuple(c.key for c in sorted(
    (c for m in BUILTIN for c in m.columns if c.show != base.HIDDEN), key=lambda c: c.show))
