"""Versioned Parquet artifacts: the store, its references and the schema contracts."""

from mmiris.artifacts.store import (
    ArtifactNameError,
    ArtifactRef,
    ArtifactStore,
    ChecksumError,
    Manifest,
    Output,
    Pending,
    check_name,
    file_sha256,
)

__all__ = [
    "ArtifactNameError",
    "ArtifactRef",
    "ArtifactStore",
    "ChecksumError",
    "Manifest",
    "Output",
    "Pending",
    "check_name",
    "file_sha256",
]
