"""Render the report as one self-contained HTML page: every picture is a data: URI, no
scripts, no external CSS or fonts, so the file opens in any browser without a server."""

from __future__ import annotations

import base64
import html
from datetime import datetime, timezone

from mmiris.report.collect import Card, MetricRow, SplitSection, TuneRow, display_name
from mmiris.report.figures import thumbnail

CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:24px auto;max-width:1180px;
     color:#1d1d1f;background:#fafafa;padding:0 16px}
h1{font-size:26px;margin-bottom:4px} h2{font-size:20px;margin-top:34px;border-bottom:2px solid #ddd;padding-bottom:4px}
h3{font-size:16px;margin:22px 0 8px} .muted{color:#666;font-size:13px}
table.metrics{border-collapse:collapse;margin:6px 0 14px;background:#fff;font-size:14px}
table.metrics th,table.metrics td{border:1px solid #ccc;padding:4px 10px;text-align:right}
table.metrics th:first-child,table.metrics td:first-child{text-align:left}
table.metrics caption{caption-side:top;text-align:left;font-weight:600;padding:4px 0;font-size:13px}
td.best{font-weight:700;background:#eef6ee}
.card{background:#fff;border:1px solid #ddd;border-radius:8px;padding:14px 16px;margin:16px 0}
.card h3{margin-top:0} .rec{display:flex;gap:18px;align-items:flex-start;border-top:1px solid #eee;padding:10px 0}
.item{width:150px;text-align:center;font-size:13px}
.item img,.noimg{height:120px;border-radius:4px;box-shadow:0 1px 3px rgba(0,0,0,.25)}
.noimg{width:80px;display:inline-flex;align-items:center;justify-content:center;background:#eee;color:#888;font-size:11px}
.target{width:170px;border-right:2px solid #eee;padding-right:14px} .title{font-weight:600;margin-top:4px}
.score{color:#0a6;font-weight:700} .rel{color:#a50} .hist{display:flex;gap:12px;flex-wrap:wrap}
.because{font-size:12px;color:#666;margin-bottom:4px} img.chart{max-width:100%;margin-top:8px}
figure{margin:10px 0} figcaption{font-size:13px;color:#555}
"""


def data_uri(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def e(text) -> str:
    return html.escape(str(text))


def render(
    sections: list[SplitSection],
    figures: dict[str, bytes],
    *,
    title: str,
    store_uri: str,
    notes: list[str] | None = None,
    extra: list[str] | None = None,
) -> str:
    """``figures`` maps a figure name (``loss-<n>``, ``relevance-<n>-<user>``) to PNG bytes."""
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out = [
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{e(title)}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>{e(title)}</h1>",
        f"<p class='muted'>Generated {now} from artifact store <code>{e(store_uri)}</code>.</p>",
    ]
    for n in notes or []:
        out.append(f"<p class='muted'>{e(n)}</p>")
    if not sections and not extra:
        out.append("<p>No metrics, models or recommendations found in the store yet.</p>")
    out += extra or []  # trusted fragments built with e() (the study section)
    for s_idx, s in enumerate(sections):
        out.append(f"<h2>Split <code>{e(s.split)}</code></h2>")
        size = f"{s.n_users:,} users × {s.n_items:,} items" if s.n_users and s.n_items else ""
        out.append(f"<p class='muted'>Data: {e(s.dataset)}{'. ' + size if size else ''}</p>")
        out += _metric_tables(s.metrics)
        if s.tunes:
            out.append(_tune_table(s.tunes))
        loss = figures.get(f"loss-{s_idx}")
        if loss:
            out.append("<h3>Training loss (like the paper's Fig. 6)</h3>")
            out.append(
                f"<figure><img class='chart' alt='training loss curves' src='{data_uri('image/png', loss)}'>"
                "<figcaption>Training loss per optimiser step for each trained model "
                "(faint: raw, bold: moving average); right: validation HR@10 per epoch.</figcaption></figure>"
            )
        if s.cards:
            rec = s.recommender.label if s.recommender else "the model"
            out.append(f"<h3>Explained recommendations of {e(rec)} (like the paper's Tables VII–IX)</h3>")
            out.append(
                f"<p class='muted'>From <code>{e(s.recommendations)}</code>. Each row: a recommended item "
                "with its predicted probability, and the user's historical items of highest interest "
                "relevance a<sub>ij</sub> (attention weight) to it."
                + (
                    " Catalogue: " + ", ".join(f"{k} <code>{e(v)}</code>" for k, v in s.catalogue_sources.items()) + "."
                    if s.catalogue_sources
                    else ""
                )
                + "</p>"
            )
            for card in s.cards:
                out.append(
                    _card(
                        card,
                        figures.get(f"relevance-{s_idx}-{card.user}"),
                        posters="item_images" in s.catalogue_sources,
                    )
                )
        if s.new is not None and s.new.cards:
            out.append(
                f"<h3>New this week: {e(s.new.recommender.label)} on {s.new.n_new:,} items that arrived after training</h3>"
            )
            out.append(
                f"<p class='muted'>From <code>{e(s.new.ref)}</code>. The best of the new items for each user, "
                "scored from their poster and plot through the model's content path (no retraining: they have "
                "no interactions yet), with the user's historical items of highest interest relevance "
                "a<sub>ij</sub> to each.</p>"
            )
            for card in s.new.cards:
                out.append(_card(card, None, posters=s.new.posters, new=True))
    out.append("</body></html>")
    return "\n".join(out)


def _metric_tables(rows: list[MetricRow]) -> list[str]:
    if not rows:
        return ["<p class='muted'>No metrics for this split.</p>"]
    out = []
    for protocol in sorted({r.protocol for r in rows}, key=lambda p: (p != "sampled", p)):
        pr = [r for r in rows if r.protocol == protocol]
        users = max(r.users for r in pr)
        what = (
            "held-out item vs its stored sampled negatives (paper protocol)"
            if protocol == "sampled"
            else "held-out item vs every unseen item"
            if protocol == "full"
            else protocol
        )
        out.append(f"<h3>Metrics — {e(protocol)} ranking</h3><p class='muted'>{e(what)}; {users:,} users.</p>")
        # Table II: methods at N = 10.
        out.append(_table(pr, [("hr", 10), ("ndcg", 10)], "Comparison of methods (like Table II)"))
        # Tables IV/V: item-similarity models per embedding size at N = 10 and 20.
        for emb in sorted({r.model.emb for r in pr if r.model.emb}, key=int):
            sub = [r for r in pr if r.model.emb == emb]
            out.append(
                _table(
                    sub,
                    [("hr", 10), ("ndcg", 10), ("hr", 20), ("ndcg", 20), ("hr", 5), ("ndcg", 5)],
                    f"Embedding size {emb} (like Tables IV–V)",
                )
            )
    return out


def _table(rows: list[MetricRow], cols: list[tuple[str, int]], caption: str) -> str:
    models = sorted({r.model.ref: r.model for r in rows}.values(), key=lambda m: m.order)
    val = {(r.model.ref, r.metric, r.k): r.value for r in rows}
    cols = [c for c in cols if any((m.ref, *c) in val for m in models)]
    if not cols:
        return ""
    best = {
        c: max((val[(m.ref, c[0], c[1])] for m in models if (m.ref, c[0], c[1]) in val), default=None) for c in cols
    }
    head = "".join(f"<th>{'HR' if m == 'hr' else 'NDCG'}@{k}</th>" for m, k in cols)
    body = []
    for m in models:
        cells = []
        for c in cols:
            v = val.get((m.ref, *c))
            cls = " class='best'" if v is not None and len(models) > 1 and v == best[c] else ""
            cells.append(f"<td{cls}>{'–' if v is None else f'{v:.4f}'}</td>")
        emb = f" <span class='muted'>(k={m.emb})</span>" if m.emb else ""
        body.append(f"<tr><td title='{e(m.ref)}'>{e(m.label)}{emb}</td>{''.join(cells)}</tr>")
    return (
        f"<table class='metrics'><caption>{e(caption)}</caption><tr><th>Method</th>{head}</tr>"
        + "".join(body)
        + "</table>"
    )


def _tune_table(rows: list[TuneRow]) -> str:
    """The newest hyperparameter search per model (``mmiris tune``), scored on validation items."""
    body = []
    for r in rows:
        trials = ", ".join(f"{n} {s}" for s, n in r.trials.items() if n)
        best = "–" if r.best_value is None else f"{r.best_value:.4f}"
        params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.best_params.items())
        body.append(
            f"<tr><td title='{e(r.ref)}'>{e(display_name(r.model))}</td><td>{e(trials)}</td>"
            f"<td>{best}</td><td>{e(params) or '–'}</td></tr>"
        )
    return (
        "<h3>Hyperparameter search (mmiris tune)</h3><p class='muted'>Best validation HR@10 (sampled "
        "protocol, validation items only) of the newest study per model; <code>mmiris train "
        "--params-from tune-&lt;model&gt;</code> trains with the best parameters.</p>"
        "<table class='metrics'><tr><th>Method</th><th>Trials</th><th>Best HR@10 (valid)</th>"
        "<th>Best parameters</th></tr>" + "".join(body) + "</table>"
    )


def _img(poster: bytes | None, alt: str, posters: bool = True) -> str:
    if not posters:  # no item_images artifact at all: titles only
        return ""
    thumb = thumbnail(poster) if poster else None
    if thumb is None:
        return "<span class='noimg'>no poster</span>"
    return f"<img alt='{e(alt)}' src='{data_uri(*thumb)}'>"


def _card(card: Card, chart: bytes | None, posters: bool = True, new: bool = False) -> str:
    who = (
        f"User {e(card.source_id)} <span class='muted'>(user_id {card.user})</span>"
        if card.source_id is not None and str(card.source_id) != str(card.user)
        else f"User {card.user}"
    )  # the source id users know (e.g. MovieLens UserID), and the dense id of the artifacts
    if new:  # "new this week": items that arrived after training
        out = [f"<div class='card new' id='new-user-{card.user}'><h3>New this week for {who[0].lower()}{who[1:]}</h3>"]
    else:
        out = [f"<div class='card' id='user-{card.user}'><h3>{who}</h3>"]
    if card.history_size:
        out.append(f"<p class='muted'>{card.history_size} items in the training history.</p>")
    for r in card.rows:
        out.append("<div class='rec'>")
        out.append(
            f"<div class='item target'>{_img(r.poster, r.title, posters)}<div class='title'>#{r.rank} {e(r.title)}</div>"
            f"<div class='score'>p = {r.score:.3f}</div></div>"
        )
        if r.explanations:
            out.append("<div><div class='because'>most relevant in the user's history</div><div class='hist'>")
            for x in r.explanations:
                out.append(
                    f"<div class='item'>{_img(x.poster, x.title, posters)}<div class='title'>{e(x.title)}</div>"
                    f"<div class='rel'>relevance {x.relevance:.3f}</div></div>"
                )
            out.append("</div></div>")
        else:
            out.append("<div class='because'>no explanation: this model has no attention</div>")
        out.append("</div>")
    if chart:
        out.append(
            f"<figure><img class='chart' alt='relevance of history items for user {card.user}' "
            f"src='{data_uri('image/png', chart)}'><figcaption>Interest relevance of user {card.user}'s "
            "history items to each recommendation (like the paper's Fig. 1; the most relevant "
            f"{len(card.chart[0]) if card.chart else 0} history items).</figcaption></figure>"
        )
    out.append("</div>")
    return "\n".join(out)
