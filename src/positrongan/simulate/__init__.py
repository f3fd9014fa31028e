"""Monte Carlo simulation of a scan: the fast engine (``fast_numba.py`` compiled, the default;
``fast.py`` its vectorised numpy reference), the GATE engine (``gate.py``),
cross sections and interaction samplers (``materials.py``), the ROOT schema (``rootio.py``) and the
per-scan driver (``scan.py``)."""
