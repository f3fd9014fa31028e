"""Monte Carlo simulation of a scan: the fast engine (``fast_numba.py`` compiled, the default;
``fast.py`` its vectorised numpy reference), the GATE engine (``gate.py``), their typed
settings (``settings.py``), cross sections and interaction samplers (``materials.py``) and the
per-scan driver (``driver.py``), the one place that sorts, writes (``positrongan.rootfile``) and
counts, whatever the engine."""
