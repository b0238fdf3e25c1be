"""Versioned Parquet artifacts: the store, its references and the schema contracts."""

from mmiris.artifacts.store import ArtifactRef, ArtifactStore, Manifest, Output, file_sha256

__all__ = ["ArtifactRef", "ArtifactStore", "Manifest", "Output", "file_sha256"]
