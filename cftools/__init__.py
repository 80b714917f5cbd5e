"""cftools: cluster unlabelled images by identity with Clusformer."""

import os

__version__ = "0.1.0"

# OpenMP threads waiting at a barrier spin briefly, then sleep. With the runtime's long
# default spin, any other busy process on the machine (the usual laptop or shared server)
# slowed cf-train's small batches up to 19 times; sleeping at once (OMP_WAIT_POLICY=
# PASSIVE) cost the idle machine most, a short spin least (bench/results/code-choices.md).
# Set here, before torch or faiss load their OpenMP runtime (GNU's reads GOMP_SPINCOUNT);
# a user's own OMP_WAIT_POLICY or GOMP_SPINCOUNT wins, and a program that loaded torch
# before cftools keeps the runtime's default.
if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", "1000")
