"""The training loop: epochs (epoch.py), the run (train.py), losses, metrics, schedule, logs."""
