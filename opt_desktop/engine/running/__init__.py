"""Running a loaded model: generation, the attention kernel, statistics capture, scoring, the lens."""
