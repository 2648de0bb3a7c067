"""Training: the loop, schedule, checkpoints, optimisers, losses, devices and ranks."""
