"""The paper's named variants (Table 2): a forward solver and a gradient estimator each.

| name    | forward solver | gradient                         |
|---------|----------------|----------------------------------|
| vanilla | iteration      | unrolled (backprop through all)  |
| IN      | iteration      | first-order Neumann (Fig. 2)     |
| IB      | iteration      | IFT, Broyden backward solve      |
| BN      | Broyden        | first-order Neumann              |
| BB      | Broyden        | IFT, Broyden backward solve      |
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Variant:
    """A named (forward solver, gradient estimator, backward solver) combination."""

    name: str
    solver: str
    gradient: str
    backward_solver: str = "broyden"
    description: str = ""


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("vanilla", "iteration", "unrolled", description="unrolled slot attention (SLATE)"),
        Variant("IN", "iteration", "neumann", description="implicit slot attention (paper Fig. 2)"),
        Variant("IB", "iteration", "ift", description="iteration forward, Broyden IFT backward"),
        Variant("BN", "broyden", "neumann", description="Broyden forward, first-order Neumann backward"),
        Variant("BB", "broyden", "ift", description="Broyden forward, Broyden IFT backward"),
    )
}


def get_variant(name: str) -> Variant:
    """Look up a variant by its paper name; unknown names raise ``KeyError`` listing the valid ones."""
    if name not in VARIANTS:
        raise KeyError(f"unknown variant {name!r}; valid variants: {list(VARIANTS)}")
    return VARIANTS[name]
