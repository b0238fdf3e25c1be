"""Prefect flows that wire the stages of ``mmiris.pipelines`` (one flow per stage, plus the pipeline).

Flows pass artifact references as ``name@version`` strings and the store URI, never data,
so any stage runs alone on artifacts that already exist. The stage functions do the work and
run without Prefect; these modules only add retries, logs in the Prefect UI, Dask clusters
and metric tables. Deployments are in ``prefect.yaml`` at the project root.

This folder is the package ``mmiris.flows`` (``mmiris/flows`` links here in a checkout; a
wheel carries it there). Prefect deployments may still name the files, ``flows/train.py:train_flow``.
"""

if __name__ != "mmiris.flows":  # a checkout's folder found as a top-level package
    raise ImportError(f"import the flows as mmiris.flows, not {__name__} (docs/architecture.md)")
