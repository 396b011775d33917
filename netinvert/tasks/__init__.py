"""Tasks: loops over many ``invert()`` calls (an atlas batch, leakage pairs, unit patterns, one VNN-COMP instance);
the resumable sweeps over them are :mod:`netinvert.sweeps`."""
