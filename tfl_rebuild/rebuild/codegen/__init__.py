"""Source generation: the only package that writes code text."""
