"""The NCF pre-split format of the NCF and NAIS papers.

- ``*.train.rating`` and ``*.test.rating``: ``user<TAB>item<TAB>rating[<TAB>timestamp]``, ids
  from 0, one test row per user.
- ``*.test.negative``: ``(user,item)<TAB>neg<TAB>neg...``, one line per test row.
- an optional item map (``ncf_item<TAB>movie_id<TAB>exact``) linking NCF item ids to
  MovieLens movieIds (``-1``: unknown), to join titles, genres and IMDb ids.

Ids are kept exactly as the files give them (the dense ids *are* the NCF ids), so the given
test items and negatives stay valid as they are. The negatives file is checked strictly —
its (user, item) must match the test file, every id must be an item of the data and every
line must have the same count — and never repaired.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from mmiris.errors import InputError
from mmiris.ingest.delimited import Field, decode, read_delimited
from mmiris.ingest.download import is_url
from mmiris.ingest.interactions import Interactions, dedupe_mask
from mmiris.splits.leave_one_out import Held, LeaveOneOut, hold_out_last, sample_negatives

_PAIR = re.compile(r"^\(\s*(\d+)\s*,\s*(\d+)\s*\)$")
_BOOL = {"true": True, "false": False, "1": True, "0": False}


@dataclass
class NcfData:
    train_user: np.ndarray
    train_item: np.ndarray
    test_user: np.ndarray
    test_item: np.ndarray
    test_negatives: np.ndarray  # [n_test, k], rows in test-file order
    interactions: Interactions  # train + test rows, ids as in the files
    n_users: int
    n_items: int
    fingerprint: dict[str, str]
    stats: dict = field(default_factory=dict)


NCF_SUFFIXES = (".train.rating", ".test.rating", ".test.negative")


def ncf_sources(sources: str | Path | Sequence[str | Path]) -> tuple[str, str, str]:
    """(train, test, negatives) of an NCF data set: from a folder holding one file of each
    suffix, or from the three files (paths or URLs) — placed by their suffixes when they
    have them, else taken in train, test, negatives order."""
    given = [str(sources)] if isinstance(sources, (str, Path)) else [str(s) for s in sources]
    if len(given) == 1 and not is_url(given[0]):
        train, test, negatives = find_files(given[0])
        return str(train), str(test), str(negatives)
    if len(given) != 3:
        raise InputError(
            f"ncf: got {len(given)} source(s); expected a folder or the three files "
            f"*.train.rating, *.test.rating, *.test.negative"
        )
    by_suffix = {next((x for x in NCF_SUFFIXES if Path(s).name.endswith(x)), None): s for s in given}
    if set(by_suffix) == set(NCF_SUFFIXES):
        return by_suffix[NCF_SUFFIXES[0]], by_suffix[NCF_SUFFIXES[1]], by_suffix[NCF_SUFFIXES[2]]
    return given[0], given[1], given[2]


def find_files(folder: str | Path) -> tuple[Path, Path, Path]:
    """The ``*.train.rating``, ``*.test.rating`` and ``*.test.negative`` of a folder."""
    folder = Path(folder)
    found = []
    for suffix in NCF_SUFFIXES:
        hits = sorted(folder.glob(f"*{suffix}"))
        if len(hits) != 1:
            raise InputError(f"{folder}: expected exactly one *{suffix} file, found {[h.name for h in hits] or 'none'}")
        found.append(hits[0])
    return found[0], found[1], found[2]


def _read_ratings(path: Path, on_bad_lines: str) -> tuple[pa.Table, bytes]:
    data = path.read_bytes()
    start = len(data) - len(data.lstrip())
    first = data[start : data.find(b"\n", start) if b"\n" in data[start:] else len(data)]
    n = len(first.split(b"\t"))
    fields = [Field("user"), Field("item"), Field("rating", "float", optional=True)]
    if n >= 4:
        fields.append(Field("timestamp", optional=True))
    t = read_delimited(data, source=str(path), sep="\t", fields=fields, on_bad_lines=on_bad_lines).table
    if "timestamp" not in t.column_names:
        t = t.append_column("timestamp", pa.nulls(t.num_rows, pa.int64()))
    for col in ("user", "item"):
        neg = int(np.count_nonzero(t.column(col).to_numpy() < 0))
        if neg:
            raise InputError(f"{path}: {neg} row(s) with a negative {col} id; expected ids from 0")
    return t, data


def read_negatives(path: Path, test_user: np.ndarray, test_item: np.ndarray, n_items: int) -> np.ndarray:
    """[n_test, k] negatives aligned with the test rows; strict (see the module docstring)."""
    text = decode(path.read_bytes(), str(path), "utf-8")
    fast = _negatives_fast(text, test_user, test_item, n_items)
    return fast if fast is not None else _negatives_checked(text, path, test_user, test_item, n_items)


def _negatives_fast(text: str, test_user: np.ndarray, test_item: np.ndarray, n_items: int) -> np.ndarray | None:
    """Vectorised parse and checks; None when anything is off (the slow path then names it)."""
    lines = [line.rstrip("\t\r") for line in text.splitlines() if line.strip()]
    if not lines or any(not line.startswith("(") for line in lines):
        return None
    body = "\n".join(lines).replace("(", "").replace(")", "").replace(",", "\t")
    try:
        t = pacsv.read_csv(
            io.BytesIO(body.encode()),
            read_options=pacsv.ReadOptions(autogenerate_column_names=True),
            parse_options=pacsv.ParseOptions(delimiter="\t", quote_char=False),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None
    if t.num_columns < 2 or any(not pa.types.is_integer(c.type) or c.null_count for c in t.columns):
        return None
    m = np.column_stack([c.to_numpy() for c in t.columns]).astype(np.int64)
    users, items, negs = m[:, 0], m[:, 1], m[:, 2:]
    if len(users) != len(test_user) or len(np.unique(users)) != len(users):
        return None
    order = np.argsort(test_user)
    pos = np.searchsorted(test_user[order], users)
    pos[pos == len(order)] = 0
    rows = order[pos]
    if not (np.array_equal(test_user[rows], users) and np.array_equal(test_item[rows], items)):
        return None
    if negs.size and (negs.min() < 0 or negs.max() >= n_items):
        return None
    out = np.empty_like(negs)
    out[rows] = negs
    return out


def _negatives_checked(text: str, path: Path, test_user: np.ndarray, test_item: np.ndarray, n_items: int) -> np.ndarray:
    """Line by line, raising on the first problem with file, line and field."""
    row_of_user = {int(u): r for r, u in enumerate(test_user.tolist())}
    out: list[list[int] | None] = [None] * len(test_user)
    width = None
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.rstrip("\r\n").rstrip("\t").split("\t")
        m = _PAIR.match(parts[0].strip())
        if not m:
            raise InputError(
                f"{path}:{lineno}: field 1: expected '(user,item)', got {parts[0][:40]!r} — is the separator a tab?"
            )
        u, i = int(m.group(1)), int(m.group(2))
        r = row_of_user.get(u)
        if r is None:
            raise InputError(f"{path}:{lineno}: field 1: user {u} has no row in the test file")
        if int(test_item[r]) != i:
            raise InputError(
                f"{path}:{lineno}: field 1: ({u},{i}) does not match the test file, "
                f"whose item for user {u} is {int(test_item[r])}"
            )
        if out[r] is not None:
            raise InputError(f"{path}:{lineno}: user {u} has a second negatives line; expected one")
        negs = []
        for k, v in enumerate(parts[1:], 2):
            try:
                j = int(v)
            except ValueError:
                raise InputError(f"{path}:{lineno}: field {k}: expected an integer item id, got {v[:40]!r}") from None
            if not 0 <= j < n_items:
                raise InputError(
                    f"{path}:{lineno}: field {k}: negative item id {j} is out of "
                    f"range; expected 0..{n_items - 1} (the items of the train/test "
                    f"files and item map)"
                )
            negs.append(j)
        if width is None:
            width = len(negs)
        elif len(negs) != width:
            raise InputError(f"{path}:{lineno}: {len(negs)} negatives, expected {width} like the lines before")
        out[r] = negs
    missing = [int(test_user[r]) for r, v in enumerate(out) if v is None]
    if missing:
        raise InputError(
            f"{path}: no negatives line for {len(missing)} test user(s), e.g. user "
            f"{missing[0]}; expected one line per test row"
        )
    return np.asarray(out, dtype=np.int64).reshape(len(test_user), width or 0)


def read_item_map(path: Path) -> tuple[dict[int, str], dict[int, bool]]:
    """``ncf_item, movie_id, exact`` (tab-separated, header) -> movieIds and exact flags.
    A movie_id of -1 means the map does not know the movie."""
    t = read_delimited(
        path.read_bytes(),
        source=str(path),
        sep="\t",
        header=True,
        fields=[Field("ncf_item"), Field("movie_id"), Field("exact", "str")],
    ).table
    movie, exact = {}, {}
    for lineno, (n, m, e) in enumerate(
        zip(t.column("ncf_item").to_pylist(), t.column("movie_id").to_pylist(), t.column("exact").to_pylist()), 2
    ):
        flag = _BOOL.get(e.strip().lower())
        if flag is None:
            raise InputError(
                f"{path}: row {lineno - 1} (ncf_item {n}): field 'exact': expected True or False, got {e!r}"
            )
        if n in movie:
            raise InputError(f"{path}: ncf_item {n} appears twice; expected one row per item")
        movie[n] = str(m) if m >= 0 else ""
        exact[n] = flag
    return movie, exact


def read_ncf(
    train: str | Path, test: str | Path, negatives: str | Path, *, item_map_items: int = 0, on_bad_lines: str = "error"
) -> NcfData:
    """Read and cross-check the three files. ``item_map_items``: the item map's highest
    ncf_item + 1, so its items count as items of the data (for the negatives' range)."""
    train, test, negatives = Path(train), Path(test), Path(negatives)
    for p in (train, test, negatives):
        if not p.exists():
            raise InputError(f"{p}: no such file")
    tr, tr_bytes = _read_ratings(train, on_bad_lines)
    te, te_bytes = _read_ratings(test, on_bad_lines)
    tu, ti = te.column("user").to_numpy(), te.column("item").to_numpy()
    seen: dict[int, int] = {}
    for r, u in enumerate(tu.tolist()):
        if u in seen:
            raise InputError(
                f"{test}: user {u} has test rows {seen[u] + 1} and {r + 1}; expected one test item per user"
            )
        seen[u] = r
    ru, ri = tr.column("user").to_numpy(), tr.column("item").to_numpy()
    n_users = int(max(ru.max(initial=-1), tu.max(initial=-1))) + 1
    n_items = max(int(max(ri.max(initial=-1), ti.max(initial=-1))) + 1, item_map_items)
    negs = read_negatives(negatives, tu, ti, n_items)

    # interactions: train then test rows; duplicates (also a test pair repeated in train) once.
    users = np.concatenate([ru, tu]).astype(np.int64)
    items = np.concatenate([ri, ti]).astype(np.int64)
    rating = pa.concat_arrays([tr.column("rating").combine_chunks(), te.column("rating").combine_chunks()])
    ts = pa.concat_arrays([tr.column("timestamp").combine_chunks(), te.column("timestamp").combine_chunks()])
    keep = dedupe_mask(users, items, ts, n_items)
    mask = pa.array(keep)
    inter = Interactions(
        users[keep],
        items[keep],
        rating.filter(mask),
        ts.filter(mask),
        [str(u) for u in range(n_users)],
        [str(i) for i in range(n_items)],
        {"duplicates_dropped": int(len(keep) - keep.sum())},
    )
    train_keep = dedupe_mask(ru.astype(np.int64), ri.astype(np.int64), tr.column("timestamp").combine_chunks(), n_items)
    test_keys = tu.astype(np.int64) * n_items + ti
    pair_keys = ru.astype(np.int64) * n_items + ri
    stats = {
        "train_duplicates_dropped": int(len(train_keep) - train_keep.sum()),
        "test_pairs_also_in_train": int(np.isin(pair_keys[train_keep], test_keys).sum()),
        "test_item_in_negatives": int((negs == ti[:, None]).any(axis=1).sum()),
        "test_negatives_per_user": int(negs.shape[1]),
    }
    fingerprint = {
        p.name: hashlib.sha256(b).hexdigest()
        for p, b in ((train, tr_bytes), (test, te_bytes), (negatives, negatives.read_bytes()))
    }
    return NcfData(
        ru[train_keep].astype(np.int64),
        ri[train_keep].astype(np.int64),
        tu.astype(np.int64),
        ti.astype(np.int64),
        negs,
        inter,
        n_users,
        n_items,
        fingerprint,
        stats,
    )


def ncf_split(data: NcfData, *, seed: int = 0, n_valid_negatives: int | None = None) -> LeaveOneOut:
    """The given split, kept exactly, plus a validation row per user.

    Test rows and their negatives are the files' (``test_item_in_negatives`` counts users
    whose test item is among their own negatives, a quirk of the published ML-1M file, kept).
    Validation: one train interaction per user, chosen at random with ``seed`` and removed
    from train, with ``n_valid_negatives`` (default: as many as the test rows have) sampled
    uniformly from the items the user has no train or test interaction with. Users with
    fewer than 2 train rows get no validation row (``users_without_valid``).
    """
    rng = np.random.default_rng(seed)
    k = data.test_negatives.shape[1] if n_valid_negatives is None else n_valid_negatives
    counts = np.bincount(data.train_user, minlength=data.n_users)
    rows = hold_out_last(data.train_user, None, rng, counts >= 2)
    rest = np.ones(len(data.train_user), dtype=bool)
    rest[rows] = False
    all_user = np.concatenate([data.train_user, data.test_user])
    all_item = np.concatenate([data.train_item, data.test_item])
    vu = data.train_user[rows]
    valid = Held(vu, data.train_item[rows], sample_negatives(vu, all_user, all_item, data.n_items, k, rng))
    test = Held(data.test_user, data.test_item, data.test_negatives)
    stats = {
        "n_users": data.n_users,
        "n_items": data.n_items,
        "n_train": int(rest.sum()),
        "n_valid": len(vu),
        "n_test": len(data.test_user),
        "seed": seed,
        "mode": "given (NCF files); valid: random from train",
        "n_negatives": int(k),
        "test_negatives_from_file": True,
        "users_without_valid": int(np.count_nonzero((counts > 0) & (counts < 2))),
        **data.stats,
    }
    return LeaveOneOut(data.train_user[rest], data.train_item[rest], valid, test, stats)


def ncf_item_rows(
    n_items: int, movie_of: dict[int, str], exact: dict[int, bool], meta: dict[str, dict]
) -> tuple[list[str], list[dict | None], dict]:
    """Source ids and metadata rows for NCF items 0..n_items-1 through an item map.

    ``source_id`` is the MovieLens movieId the map gives (what the metadata, links.csv and
    OMDb records are keyed by), or ``ncf:<id>`` where the map does not know the movie.
    ``metadata_exact`` is the map's ``exact`` flag: False marks a best-guess mapping.
    """
    sources, rows = [], []
    unknown = inexact = 0
    for i in range(n_items):
        movie = movie_of.get(i, "")
        sources.append(movie or f"ncf:{i}")
        m = meta.get(movie) if movie else None
        if not movie:
            unknown += 1
        if m is not None:
            m = {**m, "metadata_exact": exact.get(i, True)}
            inexact += not m["metadata_exact"]
        rows.append(m)
    return sources, rows, {"items_unmapped": unknown, "items_metadata_inexact": inexact}
