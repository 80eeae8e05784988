"""Training side (torch): data, augmentation, losses, metrics, loop, checkpoints, export."""
