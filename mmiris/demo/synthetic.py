"""The embedded demo catalogue: generated movies whose posters and plots carry the same latent
content that drives the generated users' choices.

Nothing here is real data. Every item has latent *genre* weights (a primary genre, sometimes
a secondary one) and a *tone* in [0, 1] (0 bleak/dark, 1 cheerful/bright). The poster is
drawn from them (genre → motif and palette, tone → brightness) and so is the plot (genre →
vocabulary, tone → adjectives). Every user has a taste over genres and a preferred tone;
they pick items with probability ∝ exp(content affinity + popularity), so image and text
features carry signal a multimodal model can find, on top of the collaborative signal.

``generate(DemoConfig(...))`` is pure and deterministic for a seed;
``pipelines/demo_data.py`` publishes its result as the artifacts real data produces.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFont


@dataclass(frozen=True)
class Genre:
    name: str
    colors: tuple[tuple[int, int, int], tuple[int, int, int]]  # poster gradient top, bottom
    accent: tuple[int, int, int]
    motif: str  # how the poster shows it (see _draw_motif)
    characters: tuple[str, ...]
    actions: tuple[str, ...]
    settings: tuple[str, ...]
    title_words: tuple[str, ...]


GENRES: tuple[Genre, ...] = (
    Genre(
        "Space",
        ((10, 20, 70), (60, 20, 110)),
        (250, 240, 140),
        "stars",
        ("astronaut", "starship pilot", "android", "alien envoy", "mission commander"),
        (
            "drifts toward a dying star",
            "repairs a failing reactor",
            "decodes a signal from deep space",
            "lands on a frozen moon",
            "races a comet across the galaxy",
        ),
        (
            "aboard an orbital station",
            "beyond the edge of the galaxy",
            "on a distant planet",
            "inside a derelict starship",
        ),
        ("Orbit", "Nebula", "Starfall", "Eclipse", "Voyager", "Galaxy", "Comet", "Horizon"),
    ),
    Genre(
        "Noir",
        ((30, 30, 35), (90, 90, 100)),
        (230, 230, 230),
        "blinds",
        ("detective", "informant", "femme fatale", "crooked cop", "night reporter"),
        (
            "follows a trail of forged letters",
            "hides a stolen ledger",
            "investigates a murder at the docks",
            "is framed for a crime",
            "bargains with a mob boss",
        ),
        ("in a rain-soaked city", "in a smoky jazz club", "along the midnight waterfront", "in a shadowy precinct"),
        ("Shadow", "Alibi", "Ledger", "Rain", "Smoke", "Midnight", "Verdict", "Trench"),
    ),
    Genre(
        "Romance",
        ((240, 120, 160), (250, 200, 210)),
        (200, 20, 70),
        "hearts",
        ("young painter", "florist", "violinist", "widowed baker", "travelling poet"),
        (
            "falls in love with a stranger",
            "writes letters to a lost sweetheart",
            "plans a wedding that may never happen",
            "dances until dawn with an old flame",
            "chooses between two hearts",
        ),
        ("in a seaside village", "in a Parisian cafe", "under the cherry blossoms", "at a summer wedding"),
        ("Kiss", "Heart", "Promise", "Rose", "Letter", "Sweetheart", "Valentine", "Waltz"),
    ),
    Genre(
        "Western",
        ((230, 150, 60), (170, 90, 40)),
        (250, 230, 120),
        "desert",
        ("gunslinger", "sheriff", "rancher", "outlaw", "bounty hunter"),
        (
            "rides into a lawless frontier town",
            "defends the ranch from bandits",
            "tracks a stolen herd across the desert",
            "faces a rival at high noon",
            "guards the last stagecoach",
        ),
        ("on the dusty prairie", "in a frontier saloon", "across the red canyon", "along the railroad"),
        ("Frontier", "Canyon", "Saddle", "Outlaw", "Prairie", "Sheriff", "Dust", "Stagecoach"),
    ),
    Genre(
        "Horror",
        ((60, 0, 0), (10, 0, 0)),
        (220, 30, 30),
        "spikes",
        ("babysitter", "exorcist", "gravedigger", "cursed heir", "lone survivor"),
        (
            "hears whispers behind the walls",
            "wakes an ancient curse",
            "is hunted by a masked killer",
            "opens a forbidden coffin",
            "hides from something in the fog",
        ),
        ("in a haunted mansion", "in an abandoned asylum", "beneath the old cemetery", "in a cabin in the woods"),
        ("Crypt", "Haunting", "Scream", "Curse", "Coffin", "Phantom", "Blood", "Nightmare"),
    ),
    Genre(
        "Comedy",
        ((90, 200, 240), (250, 250, 150)),
        (250, 90, 20),
        "confetti",
        ("clumsy waiter", "stand-up comic", "chaotic family", "bumbling inventor", "talking dog"),
        (
            "throws the wildest party in town",
            "swaps lives with the boss by mistake",
            "ruins a wedding toast",
            "wins the lottery and loses the ticket",
            "starts a food fight at the gala",
        ),
        (
            "at a chaotic family reunion",
            "in a small-town bakery",
            "on a disastrous road trip",
            "at the office holiday party",
        ),
        ("Mayhem", "Party", "Hiccup", "Banana", "Oops", "Goofball", "Jamboree", "Shenanigans"),
    ),
)

TONE_WORDS = {  # tone < 0.5 → dark words, else bright words
    "dark": ("bleak", "grim", "haunted", "desperate", "lonely", "brooding"),
    "bright": ("cheerful", "sunny", "hopeful", "playful", "warm-hearted", "joyful"),
}


@dataclass
class DemoConfig:
    n_users: int = 300
    n_items: int = 200
    seed: int = 0
    min_per_user: int = 6  # enough for leave-one-out (test + valid + >= 4 train items)
    mean_per_user: float = 25.0  # interactions per user: min + geometric tail
    content_weight: float = 6.0  # logit weight of genre taste · item genres
    tone_weight: float = 3.0  # logit penalty of (user tone - item tone)^2 · 4
    popularity_weight: float = 1.0  # logit weight of log item popularity
    missing_image_rate: float = 0.03  # items published with present = False (image)
    missing_text_rate: float = 0.03  # items published with present = False (text)
    jpeg_every: int = 4  # every n-th poster is JPEG (the rest PNG), as real crawls mix formats
    poster_size: tuple[int, int] = (120, 180)  # width, height

    def to_dict(self) -> dict:
        d = asdict(self)
        d["poster_size"] = list(self.poster_size)
        return d


@dataclass
class DemoCatalogue:
    """Everything generated, including the latent truth (for tests and the curious)."""

    config: DemoConfig
    genre_names: list[str]
    item_genres: np.ndarray  # float32 [I, K], rows sum to 1
    item_tone: np.ndarray  # float32 [I]
    item_popularity: np.ndarray  # float32 [I], lognormal, mean ~1.6
    titles: list[str]
    years: np.ndarray  # int32 [I]
    plots: list[str | None]  # None where deliberately missing
    posters: list[bytes | None]  # encoded image bytes, None where deliberately missing
    poster_formats: list[str | None]
    user_taste: np.ndarray  # float32 [U, K], rows sum to 1
    user_tone: np.ndarray  # float32 [U]
    # interactions, filled by generate(): int64 [N], int64 [N], float32 [N] in 1..5, int64 [N]
    users: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, np.int64))
    items: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, np.int64))
    ratings: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, np.float32))
    timestamps: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, np.int64))

    @property
    def primary_genre(self) -> np.ndarray:
        return self.item_genres.argmax(1)

    def item_genre_names(self, i: int, threshold: float = 0.2) -> list[str]:
        order = np.argsort(-self.item_genres[i])
        return [self.genre_names[k] for k in order if self.item_genres[i, k] >= threshold]


def generate(config: DemoConfig | None = None) -> DemoCatalogue:
    cfg = config or DemoConfig()
    if cfg.n_items < 10 or cfg.n_users < 2:
        raise ValueError("the demo catalogue needs at least 10 items and 2 users")
    rng = np.random.default_rng(cfg.seed)
    K, I, U = len(GENRES), cfg.n_items, cfg.n_users

    # Items: a primary genre, for half of them a secondary one; a tone; a popularity.
    primary = rng.integers(0, K, I)
    secondary = (primary + rng.integers(1, K, I)) % K
    has_second = rng.random(I) < 0.5
    genres = np.zeros((I, K), dtype=np.float32)
    genres[np.arange(I), primary] = np.where(has_second, 0.7, 1.0)
    genres[np.arange(I)[has_second], secondary[has_second]] = 0.3
    tone = rng.random(I).astype(np.float32)
    popularity = rng.lognormal(0.0, 1.0, I).astype(np.float32)
    years = rng.integers(1960, 2021, I).astype(np.int32)
    titles = _titles(rng, primary, secondary, has_second)

    n_missing_img = int(round(cfg.missing_image_rate * I))
    n_missing_txt = int(round(cfg.missing_text_rate * I))
    perm = rng.permutation(I)
    no_image = set(perm[:n_missing_img].tolist())
    no_text = set(perm[n_missing_img : n_missing_img + n_missing_txt].tolist())

    plots: list[str | None] = []
    posters: list[bytes | None] = []
    formats: list[str | None] = []
    for i in range(I):
        item_rng = np.random.default_rng([cfg.seed, i])
        plots.append(None if i in no_text else _plot(item_rng, genres[i], float(tone[i])))
        if i in no_image:
            posters.append(None)
            formats.append(None)
        else:
            fmt = "JPEG" if cfg.jpeg_every and i % cfg.jpeg_every == cfg.jpeg_every - 1 else "PNG"
            img = _poster(item_rng, genres[i], float(tone[i]), titles[i], cfg.poster_size)
            posters.append(_encode(img, fmt))
            formats.append(fmt)

    # Users: concentrated taste over genres (Dirichlet 0.3), a preferred tone.
    taste = rng.dirichlet(np.full(K, 0.3), U).astype(np.float32)
    user_tone = rng.random(U).astype(np.float32)
    logits = (
        cfg.content_weight * taste @ genres.T
        - cfg.tone_weight * 4.0 * (user_tone[:, None] - tone[None, :]) ** 2
        + cfg.popularity_weight * np.log(popularity)[None, :]
    )
    cap = max(cfg.min_per_user, I // 2)
    extra = rng.geometric(1.0 / max(1.0, cfg.mean_per_user - cfg.min_per_user + 1), U) - 1
    counts = np.minimum(cfg.min_per_user + extra, cap)
    # Sampling without replacement ∝ exp(logits): Gumbel top-k, vectorised over users.
    perturbed = logits + rng.gumbel(size=logits.shape)
    order = np.argsort(-perturbed, axis=1, kind="stable")
    take = np.arange(I)[None, :] < counts[:, None]
    users = np.repeat(np.arange(U, dtype=np.int64), counts)
    items = order[take].astype(np.int64)
    # Ratings follow affinity within the user's picks; timestamps increase per user.
    aff = logits[users, items]
    ratings = np.clip(np.round(3.0 + (aff - aff.mean()) / (aff.std() + 1e-9)), 1, 5).astype(np.float32)
    start = 946684800 + rng.integers(0, 20 * 86400 * 365, U)
    timestamps = (start[users] + rng.integers(0, 86400 * 365, len(users))).astype(np.int64)
    return DemoCatalogue(
        cfg,
        [g.name for g in GENRES],
        genres,
        tone,
        popularity,
        titles,
        years,
        plots,
        posters,
        formats,
        taste,
        user_tone,
        users,
        items,
        ratings,
        timestamps,
    )


# --------------------------------------------------------------------------- text
def _titles(rng, primary, secondary, has_second) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for p, s, two in zip(primary, secondary, has_second):
        a = GENRES[p].title_words[rng.integers(len(GENRES[p].title_words))]
        b = GENRES[s if two else p].title_words[rng.integers(len(GENRES[s if two else p].title_words))]
        form = rng.integers(3)
        title = (
            (f"The {a} {b}" if a != b else f"The {a}")
            if form == 0
            else (f"{a} of the {b}" if form == 1 and a != b else f"{a} {rng.integers(2, 5)}")
        )
        seen[title] = seen.get(title, 0) + 1
        out.append(title if seen[title] == 1 else f"{title} {_roman(seen[title])}")
    return out


def _roman(n: int) -> str:
    return ["", "I", "II", "III", "IV", "V", "VI", "VII", "VIII", "IX", "X"][n] if n <= 10 else str(n)


def _plot(rng, weights: np.ndarray, tone: float) -> str:
    words = TONE_WORDS["bright" if tone >= 0.5 else "dark"]
    sentences = []
    for _ in range(int(rng.integers(2, 5))):
        g = GENRES[int(rng.choice(len(GENRES), p=weights / weights.sum()))]
        who = g.characters[rng.integers(len(g.characters))]
        what = g.actions[rng.integers(len(g.actions))]
        where = g.settings[rng.integers(len(g.settings))]
        adj = words[rng.integers(len(words))]
        article = "An" if adj[0] in "aeiou" else "A"
        sentences.append(f"{article} {adj} {who} {what} {where}.")
    return " ".join(sentences)


# --------------------------------------------------------------------------- posters
def _poster(rng, weights: np.ndarray, tone: float, title: str, size: tuple[int, int]) -> Image.Image:
    w, h = size
    order = np.argsort(-weights)
    main = GENRES[int(order[0])]
    light = 0.45 + 0.75 * tone  # tone drives brightness: dark posters for bleak films
    top, bottom = (np.array(c, dtype=np.float32) * light for c in main.colors)
    ramp = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    grad = np.clip(top * (1 - ramp) + bottom * ramp, 0, 255).astype(np.uint8)
    img = Image.fromarray(np.broadcast_to(grad, (h, w, 3)).copy(), "RGB")
    draw = ImageDraw.Draw(img)
    _draw_motif(draw, rng, main, w, h, strength=float(weights[order[0]]))
    if weights[order[1]] > 0:
        _draw_motif(draw, rng, GENRES[int(order[1])], w, h, strength=float(weights[order[1]]))
    # A title band, as on a real poster.
    band = int(h * 0.18)
    draw.rectangle([0, h - band, w, h], fill=(15, 15, 20))
    font = ImageFont.load_default(size=max(9, w // 11))
    words, lines, cur = title.split(), [], ""
    for word in words:
        if cur and draw.textlength(f"{cur} {word}", font=font) > w - 8:
            lines.append(cur)
            cur = word
        else:
            cur = f"{cur} {word}".strip()
    lines.append(cur)
    y = h - band + 3
    for line in lines[:2]:
        draw.text((4, y), line, fill=(240, 240, 240), font=font)
        y += int(getattr(font, "size", 10)) + 2
    return img


def _draw_motif(draw: ImageDraw.ImageDraw, rng, g: Genre, w: int, h: int, strength: float) -> None:
    n = max(2, int(round(12 * strength)))
    acc = g.accent
    area_h = int(h * 0.8)
    if g.motif == "stars":
        for _ in range(n * 3):
            x, y, r = rng.integers(0, w), rng.integers(0, area_h), int(rng.integers(1, 3))
            draw.ellipse([x - r, y - r, x + r, y + r], fill=acc)
        r = int(w * 0.18 * strength + 6)
        cx, cy = int(rng.integers(r, w - r)), int(rng.integers(r, area_h - r))
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(120, 170, 230), outline=acc, width=2)
    elif g.motif == "blinds":
        for k in range(n):
            y0 = int(k * area_h / n)
            draw.polygon([(0, y0), (w, y0 + w // 2), (w, y0 + w // 2 + 4), (0, y0 + 4)], fill=acc)
    elif g.motif == "hearts":
        for _ in range(n):
            x, y, s = int(rng.integers(8, w - 8)), int(rng.integers(8, area_h - 8)), int(rng.integers(5, 11))
            draw.ellipse([x - s, y - s, x, y], fill=acc)
            draw.ellipse([x, y - s, x + s, y], fill=acc)
            draw.polygon([(x - s, y - s // 2), (x + s, y - s // 2), (x, y + s)], fill=acc)
    elif g.motif == "desert":
        r = int(w * 0.15 + 4)
        draw.ellipse([w // 2 - r, 20, w // 2 + r, 20 + 2 * r], fill=acc)
        for k in range(max(2, n // 3)):
            y0 = int(area_h * (0.55 + 0.12 * k))
            draw.rectangle([0, y0, w, y0 + 6], fill=(120, 60, 30))
        x = int(rng.integers(10, w - 20))
        draw.rectangle([x, area_h - 50, x + 8, area_h], fill=(40, 110, 50))
        draw.rectangle([x - 8, area_h - 36, x, area_h - 32], fill=(40, 110, 50))
    elif g.motif == "spikes":
        for _ in range(n):
            x, s = int(rng.integers(0, w)), int(rng.integers(10, 30))
            base = int(rng.integers(area_h // 2, area_h))
            draw.polygon([(x - s // 3, base), (x + s // 3, base), (x, base - 2 * s)], fill=acc)
        draw.ellipse([w // 2 - 10, 18, w // 2 + 10, 38], fill=(240, 240, 210))
    elif g.motif == "confetti":
        palette = [(250, 90, 20), (40, 180, 70), (230, 40, 160), (60, 90, 230), (250, 210, 0)]
        for _ in range(n * 4):
            x, y = int(rng.integers(0, w)), int(rng.integers(0, area_h))
            c = palette[int(rng.integers(len(palette)))]
            draw.rectangle([x, y, x + int(rng.integers(3, 7)), y + int(rng.integers(3, 7))], fill=c)


def _encode(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    if fmt == "JPEG":
        img.save(buf, "JPEG", quality=85)
    else:
        img.save(buf, "PNG", optimize=False)
    return buf.getvalue()
