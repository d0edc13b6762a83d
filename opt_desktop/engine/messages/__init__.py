"""Plain data that crosses every boundary (settings, requests, events, results, errors), and the job context all work receives."""
