"""Drift metrics a user could pass with --metric (tests import them by name, like a user would)."""

import numpy as np


def max_abs(reference, candidate):
    """Largest absolute difference over every output and sample."""
    return max(float(np.max(np.abs(np.asarray(c[k], np.float64) - r[k]))) for r, c in zip(reference, candidate) for k in r)


def not_a_number(reference, candidate):
    return "large"


def max_abs_where_fed_nonzero(reference, candidate, feeds):
    """Largest absolute difference at the positions where the feed's ``mask`` is nonzero (takes the feeds)."""
    return max(float(np.max(np.abs(np.asarray(c[k], np.float64) - r[k])[f["mask"] != 0]))
               for r, c, f in zip(reference, candidate, feeds) for k in r)
