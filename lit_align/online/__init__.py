"""Learning from the policy's own samples (see the ``online`` branch for the full contract)."""
