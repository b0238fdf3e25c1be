"""Amazon product images: each item's ``image_url`` (the metadata's ``imUrl`` / ``image[0]``)
downloaded with the crawl machinery — cache, retries, rate limit, content checks — into
``item_images`` rows (see ``pipelines.crawl.crawl_amazon_images``)."""

from __future__ import annotations

from dataclasses import dataclass

from mmiris.crawl.fetcher import Counters, FetchSettings, process_fetcher
from mmiris.crawl.images import fetch_image
from mmiris.crawl.parallel import ChunkResult, run_items


@dataclass
class ImageTask:
    fetch: FetchSettings


def crawl_product(fetcher, item: dict, counters: Counters) -> dict:
    return {"item_id": int(item["item_id"]), "image": fetch_image(fetcher, item.get("image_url"), counters)}


def crawl_image_chunk(items: list[dict], task: ImageTask) -> ChunkResult:
    fetcher = process_fetcher(task.fetch)
    return run_items(items, lambda it, c: crawl_product(fetcher, it, c), task.fetch.run_id)
