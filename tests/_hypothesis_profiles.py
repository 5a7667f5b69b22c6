"""The fixed hypothesis settings of the property-based parity tests (tests/test_fuzz_*.py).

``CI``: deterministic (``derandomize=True``: the examples are a function of the test's source, so every
run of the suite draws the same inputs), no example database, no deadline (the first example of a new
shape compiles), ``print_blob=True`` (a failure prints the ``@reproduce_failure`` blob). Each property
sets its own ``max_examples`` with :func:`examples` so the whole fuzz runtime stays bounded.

``FNML_FUZZ_EXAMPLES=<n>`` multiplies nothing: it REPLACES every property's count, for a longer local
hunt (``FNML_FUZZ_EXAMPLES=500 pytest tests/test_fuzz_layers.py``); CI leaves it unset.
"""

from __future__ import annotations

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


def examples(n: int) -> settings:
    """The CI profile with ``max_examples=n`` (or ``$FNML_FUZZ_EXAMPLES`` when set)."""
    override = os.environ.get("FNML_FUZZ_EXAMPLES")
    return settings(CI, max_examples=int(override) if override else n)
