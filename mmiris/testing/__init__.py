"""Test doubles that ship with mmiris, for its tests, benchmarks and users' own tests.

Not for production use; nothing in the library imports them.

- ``mmiris.testing.omdb_server``: a local OMDb-compatible HTTP server on 127.0.0.1 (records
  from a JSONL file, posters from a folder, seeded fault injection, a request log), also
  ``python -m mmiris.testing.omdb_server``.
- ``mmiris.testing.crawl``: generated posters, OMDb-shaped records and items artifacts for
  crawl tests.
"""
