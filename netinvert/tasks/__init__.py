"""Tasks: loops over many ``invert()`` calls (atlas, leakage, unit patterns, benchmark families)."""
