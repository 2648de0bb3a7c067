"""The training config: its schema and its composition from configs/ with Hydra."""
