"""cftools: cluster unlabelled images by identity with Clusformer."""

__version__ = "0.1.0"
