"""Feature extraction's library side; the stage functions are in ``pipelines/extract.py``.

- ``inputs``: what the driver reads of an input artifact (ids, content hashes, reasons: no
  image bytes) and what a worker reads (its own items' bytes or texts).
- ``reuse``: rows of an earlier extraction that a new one can keep.
- ``worker``: the worker side: encoder cache, allocator and thread setup, device choice,
  encoding one task's items and writing its part file.
- ``run``: the driver: plan tasks over id ranges, submit them to Dask, commit the parts.
"""
