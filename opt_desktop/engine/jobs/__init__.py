"""The one Engine interface, jobs, and the engine in this process: one worker thread owns the model."""
