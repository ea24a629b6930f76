"""The team's web app: JSON API, health and metrics (pages and the web chat come later)."""
