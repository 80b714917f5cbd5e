"""The Clusformer link model: the visual grammar (sequences, cosine encoding), the model,
its training loop and checkpoints, inference (the one batch loop)."""
