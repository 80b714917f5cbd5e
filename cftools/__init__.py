"""cftools: cluster unlabelled images by identity with Clusformer."""

import os

__version__ = "0.1.0"

# OpenMP threads waiting at a barrier sleep instead of spinning. With spinning threads,
# any other busy process on the machine (the usual laptop or shared server) slowed
# cf-train's small batches 2-19 times, on an idle machine sleeping costs little
# (bench/results/code-choices.md). Set here, before torch or faiss load their OpenMP
# runtime; a user's own OMP_WAIT_POLICY wins, and a program that loaded torch before
# cftools keeps the runtime's default.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
