"""The training engine: one Trainer for every Segmenter, with hooks and checkpoints."""
