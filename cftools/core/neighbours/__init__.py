"""Cosine k-nearest neighbours: faiss indexes, exact search of a few queries, inverted
lists, the auto policy (one, for cf-knn and the add), kNN quality."""
