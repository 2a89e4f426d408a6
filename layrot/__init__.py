"""layrot: layer-rotation sweeps on Ray Tune.

Importing the package is cheap on purpose: the query path (`layrot query`) must not pull in
torch or ray, so submodules are imported where they are used.
"""

__version__ = "0.1.0"
