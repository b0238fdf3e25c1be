"""A user's recommendations as a readable text table (``mmiris recommend --user 10``)."""

from __future__ import annotations

import pyarrow as pa

from mmiris.recommend.catalogue import Catalogue


def _label(cat: Catalogue, item: int, width: int) -> str:
    year = cat.years.get(int(item))
    title = cat.title(item)
    text = f"{title} ({year})" if year and f"({year})" not in title else title
    return text if len(text) <= width else text[: width - 1] + "…"


def format_user(table: pa.Table, user: int, cat: Catalogue, width: int = 56, ids: dict | None = None) -> str:
    """Rank, probability and title of each recommendation for ``user``, each followed by its
    explanation items (paper Tables VII–IX) and their interest relevance a_ij. ``ids``: the
    id to show for an item (new items: their own id), default the item id itself."""
    ids = ids or {}
    rows = [r for r in table.to_pylist() if r["user_id"] == user]
    rows.sort(key=lambda r: r["rank"])
    if not rows:
        return f"no recommendations for user {user}"
    lines = [f"{'rank':>4}  {'score':>6}  {'item':<{width}}  {'id':>6}"]
    for r in rows:
        lines.append(
            f"{r['rank']:>4}  {r['score']:>6.3f}  {_label(cat, r['item_id'], width):<{width}}  "
            f"{ids.get(r['item_id'], r['item_id']):>6}"
        )
        for e in r["explanations"] or []:
            lines.append(f"{'':>4}  {'':>6}    ↳ {e['relevance']:.3f}  {_label(cat, e['item_id'], width - 10)}")
    if rows[0]["explanations"] is None:
        lines.append("(this model has no attention: no explanations)")
    else:
        lines.append("↳ = your history items most relevant to the recommendation (interest relevance a_ij)")
    return "\n".join(lines)
