"""implicit-slots: slot attention as a fixed point, solved by any solver and differentiated by any estimator.

The package layers, from the bottom up (each imports only from layers below it):

- ``fixed_point``: solvers (iteration, Anderson, Broyden) and gradient estimators (unrolled, Neumann, IFT).
- ``slot_attention``: the slot-attention cell and the module that joins cell, solver and estimator.
- ``models``: SLATE, the slot-attention autoencoder and set prediction.
- ``training`` / ``evaluation`` / ``cli``: the engine, evaluation and the command line.

``data``, ``metrics`` and ``diagnostics`` depend on nothing above ``fixed_point`` / ``slot_attention``.
"""

__version__ = "0.1.0"
