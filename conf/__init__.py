"""Hydra's configs of wycifar, installed with the package as wycifar.conf."""
