"""Links -> clusters: link weights, graphs and the union-find, the decoders, the singleton
policy."""
