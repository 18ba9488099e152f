"""Hypothesis profiles: ``ci`` (the default, a few hundred fuzz examples in all) and ``fuzz``
(10,000 examples per test), chosen with ``HYPOTHESIS_PROFILE=fuzz``.

Loading a profile sets Hypothesis' global defaults; tests that pass ``max_examples`` to
``@settings`` themselves (test_engine, test_projector) keep their own counts.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

FUZZ_EXAMPLES = {"ci": 30, "fuzz": 10_000}
"""Examples per fuzz test under each profile (the fuzz tests run on three adapters)."""

_QUIET_CHECKS = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example]

settings.register_profile(
    "ci", max_examples=FUZZ_EXAMPLES["ci"], deadline=None, suppress_health_check=_QUIET_CHECKS
)
settings.register_profile(
    "fuzz",
    max_examples=FUZZ_EXAMPLES["fuzz"],
    deadline=None,
    suppress_health_check=_QUIET_CHECKS,
)

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
settings.load_profile(PROFILE)
