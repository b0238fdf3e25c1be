"""The embedded demo: a generated catalogue (``synthetic``) and nothing real."""
