"""Monotone inclusions 0 ∈ F(x) + G(x) with F a finite sum: :func:`.solve.monotone_inclusion`."""
