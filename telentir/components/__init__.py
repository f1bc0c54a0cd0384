"""Components a Runtime holds that services call: the job pool and the Stripe gateway.

They sit below `telentir.runtime` and every service: they import settings, errors and
storage only, never a service or a route (`tests/unit/test_layers.py`).
"""
