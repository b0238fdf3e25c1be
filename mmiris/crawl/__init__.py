"""Crawlers: OMDb plots and posters for MovieLens, Amazon product images.

``omdb`` (client and lookup strategy), ``titles`` (MovieLens titles to OMDb's), ``fetcher``
(cache, quota, rate limit, retries for every request), ``cache`` (persistent responses),
``ratelimit`` (rate shared across Dask workers, daily quota), ``images`` (downloads with
content checks), ``amazon`` (product images), ``parallel`` (chunked Dask/thread execution),
``apikey`` (the key, never printed), ``tables`` (the tables a crawl publishes). The stages
are in ``pipelines/crawl.py``; see ``docs/crawling.md``. The local OMDb server and crawl
test helpers are test doubles, in ``mmiris.testing``.
"""
