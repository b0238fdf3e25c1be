"""Readers for the formats users have (MovieLens, NCF pre-split, Amazon reviews), downloads,
dense re-indexing and k-core filtering. The stages that publish artifacts are in
``pipelines/ingest.py``."""
