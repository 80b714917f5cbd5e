"""Choices made on labelled data, never on the set to cluster: the calibration objective
and the one best-F search, the decoders' thresholds and link modes, the sequence length,
the guard."""
