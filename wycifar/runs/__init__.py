"""A run on disk: its folder (`folders`: claimed, resumed, its model and checkpoints), its record
(`records`: metrics.json from start to end), the summary over many (`summary`), and the Hydra
resolvers and callbacks that put them in place."""
