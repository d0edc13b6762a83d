"""Jobs and the in-process engine: one worker thread owns the model and runs one job at a time."""
