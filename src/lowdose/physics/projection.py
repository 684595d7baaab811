"""Projection-domain low-dose simulation (being built; registers ``projection`` when done)."""
