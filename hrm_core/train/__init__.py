"""Training: the loop (trainer.py) and its parts: schedule, curriculum stages, evaluation,
checkpoints, optimisers, losses, random streams (seeds), devices and ranks."""
