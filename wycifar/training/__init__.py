"""The training parts: the LightningModule and what builds it from a config (`builders`), its
loss, schedules, precision and test-time views, checkpoints and loggers; `run.train` and
`evaluate.evaluate` drive a training and a test."""
