"""Where and how computing runs: devices, mixed precision, process groups and row sharding
under torchrun, memory behaviour."""
