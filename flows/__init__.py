"""Prefect flows that wire the stages of ``pipelines/`` (one flow per stage, plus the pipeline).

Flows pass artifact references as ``name@version`` strings and the store URI, never data,
so any stage runs alone on artifacts that already exist. The stage functions do the work and
run without Prefect; these modules only add retries, logs in the Prefect UI, Dask clusters
and metric tables. Deployments are in ``prefect.yaml`` at the project root.
"""
