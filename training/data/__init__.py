"""Data: find image/mask pairs, decode, map mask values, augment, sample (datasets.py is the entry)."""
