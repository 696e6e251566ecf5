"""The web dashboard at `/`: one static page and its script, no build step (dashboard.js
reads the same API as everyone else)."""
