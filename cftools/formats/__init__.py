"""The on-disk formats: the schema of every artifact, reading and validating, atomic
writing, features and labels from every source, the field's formats (npy, bin/meta,
npz), links, clusters and thresholds."""
