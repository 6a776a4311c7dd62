"""The default recipe's shipped model, installed with the package as wycifar.bundled (wycifar-predict's default)."""
