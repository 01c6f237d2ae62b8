"""implicit-slots: slot attention as a fixed point, solved by any solver and differentiated by any estimator.

The package layers, from the bottom up (each imports only from layers below it):

- ``fixed_point``: solvers (iteration, Anderson, Broyden) and gradient estimators (unrolled, Neumann, IFT).
- ``slot_attention``: the slot-attention cell and the module that joins cell, solver and estimator.
- ``diagnostics``: residuals, Jacobian norms, gradient norms.
- ``models``: SLATE, the slot-attention autoencoder and set prediction.
- ``config``: the experiment schema and YAML loading (``base:`` layering).
- ``experiment``: what training and evaluation share (model building, checkpoints, datasets, device).
- ``pretrained``: the shipped trained models and ``segment``.
- ``training`` / ``evaluation``: the engine and the evaluators.
- ``benchmarks`` / ``reproduce`` / ``cli``: benchmarks, the paper's experiments and the command line.

``data`` and ``metrics`` sit at the bottom beside ``fixed_point`` (tests/test_architecture.py).
"""

__version__ = "0.1.0"
