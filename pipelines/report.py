"""Stage: a self-contained HTML report of what is in the store.

    path = build_report(store, "report/")   # → report/report.html + report/figures/*.png

Per split: metrics tables like the paper's Tables II, IV and V (from ``metrics``
artifacts), training-loss curves like Fig. 6 (from the models' ``training_log``), and
explanation cards like Tables VII–IX with a relevance chart like Fig. 1 (from a
``recommendations`` artifact, posters from ``item_images``, titles from ``item_text`` /
``items``), and "new this week" cards: the top items among those that arrived after
training (from a ``new_item_recommendations`` artifact, ``mmiris recommend --new-items``). The page embeds every picture as a data: URI, so it opens without a server;
the PNG figures are also written next to it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from mmiris.artifacts import ArtifactRef, ArtifactStore
from mmiris.errors import MmirisError
from mmiris.report import figures as F
from mmiris.report.collect import (
    NEW_ITEMS_KIND,
    SplitSection,
    collect_cards,
    collect_curves,
    collect_metrics,
    collect_new_cards,
    collect_tunes,
    describe_dataset,
    model_info,
    pick_new_item_recommendations,
    pick_recommendations,
)
from mmiris.report.html import render

log = logging.getLogger("mmiris.report")


def build_report(
    store: ArtifactStore,
    out_dir: str | Path,
    *,
    metrics: list[str] | None = None,
    recommendations: list[str] | None = None,
    users: list[int] | None = None,
    n_users: int = 3,
    top: int = 3,
    title: str = "mmiris report",
    notes: list[str] | None = None,
    items: str | None = None,
    item_text: str | None = None,
    item_images: str | None = None,
    study: str | Path | None = None,
) -> Path:
    """Write ``out_dir/report.html`` (and ``out_dir/figures/``); returns the HTML path.

    ``metrics``/``recommendations``: artifact refs to show (default: every metrics artifact,
    and per split the newest recommendations with explanations). ``users``: whose cards to
    show (default: the first ``n_users`` users); ``top``: recommendations per card.
    ``items``/``item_text``/``item_images``: the catalogue artifacts for titles and posters
    (default: those related to the recommendations through lineage). ``study``: a
    benchmarks.study rows file whose tables and validation curves are shown first."""
    out = Path(out_dir)
    fig_dir = out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    by_split = collect_metrics(store, metrics)
    rec_manifests = [store.manifest(store.resolve(r)) for r in recommendations or []]
    for m in rec_manifests:
        if m.kind not in ("recommendations", NEW_ITEMS_KIND):
            raise MmirisError(
                f"--recommendations {m.ref}: a {m.kind!r} artifact, expected recommendations or {NEW_ITEMS_KIND}"
            )
    splits = list(by_split)
    for m in rec_manifests:
        splits += [p for p in m.parents if _kind(store, p) == "split" and p not in splits]
    if not splits and recommendations is None:  # no metrics yet: any recommendations
        for name in store.names():
            for m in store.versions(name):
                if m.kind in ("recommendations", NEW_ITEMS_KIND):
                    splits += [p for p in m.parents if _kind(store, p) == "split" and p not in splits]

    sections, figs, extra = [], {}, []
    if study is not None:
        from mmiris.report import study as S

        doc = S.load_study(study)
        png = S.curves_png(doc, 16)
        if png:
            figs["study-curves-16"] = png
        extra.append(S.html_section(doc, png, str(study)))
    for s_idx, split in enumerate(splits):
        dataset, n_users_split, n_items = describe_dataset(store, split)
        sec = SplitSection(
            split, dataset, n_users_split, n_items, metrics=by_split.get(split, []), tunes=collect_tunes(store, split)
        )
        recs = next((m for m in rec_manifests if split in m.parents and m.kind == "recommendations"), None)
        if recs is None and recommendations is None:
            recs = pick_recommendations(store, split)
        new_recs = next((m for m in rec_manifests if split in m.parents and m.kind == NEW_ITEMS_KIND), None)
        if new_recs is None and recommendations is None:
            new_recs = pick_new_item_recommendations(store, split)
        infos = {r.model.ref: r.model for r in sec.metrics}
        if recs is not None:
            model_ref = next((p for p in recs.parents if _kind(store, p) == "model"), None)
            if model_ref:
                sec.recommender = infos.get(model_ref) or model_info(store, model_ref)
                infos.setdefault(model_ref, sec.recommender)
        sec.curves = collect_curves(store, list(infos.values()))
        if sec.curves:
            figs[f"loss-{s_idx}"] = F.loss_curves(
                [(c.model.label, c.steps, c.loss) for c in sec.curves if len(c.steps)],
                [(c.model.label, c.val_epochs, c.val_hr10) for c in sec.curves if len(c.val_epochs) > 1] or None,
            )
        if recs is not None:
            sec.recommendations = str(recs.ref)
            sec.cards, cat = collect_cards(
                store,
                recs,
                users,
                n_users,
                top,
                catalogue=dict(items=items, item_text=item_text, item_images=item_images),
            )
            sec.catalogue_sources = cat.sources
            for card in sec.cards:
                if card.chart is not None:
                    figs[f"relevance-{s_idx}-{card.user}"] = F.relevance_chart(*card.chart)
        if new_recs is not None:  # the same users as the cards above, where they have some
            sec.new = collect_new_cards(
                store,
                new_recs,
                users,
                n_users,
                top,
                catalogue=dict(items=items, item_text=item_text, item_images=item_images),
                prefer=[c.user for c in sec.cards],
            )
        sections.append(sec)

    for old in [*fig_dir.glob("loss-*.png"), *fig_dir.glob("relevance-*.png"), *fig_dir.glob("study-*.png")]:
        if old.stem not in figs:  # from an earlier report into the same folder
            old.unlink()
    for name, png in figs.items():
        (fig_dir / f"{name}.png").write_bytes(png)
    page = render(sections, figs, title=title, store_uri=store.uri, notes=notes, extra=extra)
    path = out / "report.html"
    tmp = out / ".report.html.tmp"
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    log.info("report written to %s (%d split(s), %d figure(s))", path, len(sections), len(figs))
    return path


def _kind(store: ArtifactStore, ref: str) -> str | None:
    try:
        return store.manifest(ArtifactRef.parse(ref)).kind
    except MmirisError:
        return None
