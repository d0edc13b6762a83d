"""Plain data that crosses every boundary (settings, requests, events, results, errors); the job context."""
