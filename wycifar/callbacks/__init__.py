"""Report callbacks, one per thing the reference README shows about a run."""
