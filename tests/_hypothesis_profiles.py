"""The hypothesis budget of the property-based parity tests (tests/test_fuzz_*.py), set here once.

Every profile is deterministic (``derandomize=True``: the examples are a function of the test's source, so
every run of the suite draws the same inputs), keeps no example database, has no deadline (the first example
of a new shape compiles) and prints the ``@reproduce_failure`` blob on a failure.

A property states its *full* budget with :func:`examples` (``@examples(40)``): the number of draws a
thorough run makes, relative to the property's cost. The profile, chosen by ``$FNML_FUZZ_PROFILE``, scales
every budget at once:

- ``quick`` (the default, what ``make test`` and CI run): a quarter of each full budget, at least 3 draws:
  every property still runs on several derandomized shapes, dtypes and options, inside the suite's time
  budget;
- ``full``: each property's full budget (``FNML_FUZZ_PROFILE=full make test``);
- ``long``: ten times the full budget, for a hunt on a quiet machine.

``FNML_FUZZ_EXAMPLES=<n>`` replaces every budget with ``n`` (one property, locally:
``FNML_FUZZ_EXAMPLES=500 pytest tests/test_fuzz_layers.py -k conv2d``).
"""

from __future__ import annotations

import math
import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "fnml-ci",
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=(HealthCheck.too_slow, HealthCheck.data_too_large),
)
CI = settings.get_profile("fnml-ci")

# Fraction of each property's full budget that a profile runs, and the fewest draws it makes.
PROFILES: dict[str, float] = {"quick": 0.25, "full": 1.0, "long": 10.0}
MIN_EXAMPLES = 3


def profile_name() -> str:
    """The profile in force (``$FNML_FUZZ_PROFILE``, default ``quick``); an unknown name is an error."""
    name = os.environ.get("FNML_FUZZ_PROFILE", "quick")
    if name not in PROFILES:
        raise ValueError(f"FNML_FUZZ_PROFILE={name!r} is not a profile; expected one of {sorted(PROFILES)}")
    return name


def budget(full: int) -> int:
    """The number of draws for a property whose full budget is ``full``, under the profile in force."""
    override = os.environ.get("FNML_FUZZ_EXAMPLES")
    if override:
        return int(override)
    return max(MIN_EXAMPLES, math.ceil(full * PROFILES[profile_name()]))


def examples(full: int) -> settings:
    """The deterministic profile with the property's scaled budget (see :func:`budget`)."""
    return settings(CI, max_examples=budget(full))
