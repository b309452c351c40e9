"""The channels people use: the web pages and API, and the CLI. Thin: they translate
between people and the domain."""
