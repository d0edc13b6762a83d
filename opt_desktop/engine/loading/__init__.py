"""Finding and loading a model: the catalog, the demo, the Hub cache, placement, precision."""
