"""The web service: pages, the HTTP API, and the application factory."""
