"""Synthetic image-text data with controlled noisy correspondence.

Each image shows one to three coloured shapes on a plain background, each shape at a named
position of a 3x3 grid and of a named size; the caption describes them. Noise is injected into
the training split only:

- ``shuffle``: the caption is another sample's caption (the protocol of noisy-correspondence
  papers): a random derangement of the captions of the chosen samples;
- ``partial``: one or two attributes (colour, shape or position of one shape) are wrong in the
  caption, which is closer to web noise and not trivially separable by loss.

- ``mixed``: each noisy pair draws one of the two kinds.

Web-like difficulty (``Difficulty``, all off by default; ``PRESETS["web"]`` combines them): concepts
(a shape in a colour) drawn from a Zipf law, partial and alt-text-style captions that name only
some of what the image shows, harder images (unmentioned shapes, low contrast, small shapes,
textured backgrounds) and sensor noise. The train and val splits follow it; the test split stays
balanced over concepts, with full captions and plain images (sensor noise aside).

Every sample's ``.json`` records ``noisy``, the ``true_caption`` and its difficulty (concepts,
caption style, image hardness, whether it is about a rare concept). Output is deterministic in
``seed``: the same arguments write byte-identical shards.
"""

import hashlib
import io
import itertools
import json
import math
import os
import random
import tarfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from typing import Dict, List, Optional, Sequence

from PIL import Image, ImageDraw

from open_clip_dissect.atomic import atomic_output
from open_clip_dissect.errors import InputError

COLORS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 210, 40),
    "purple": (140, 60, 180),
    "orange": (245, 140, 30),
}
BACKGROUNDS = {"white": (245, 245, 245), "black": (20, 20, 20), "gray": (128, 128, 128)}
SHAPES = ("circle", "square", "triangle", "diamond")
SIZES = {"small": 0.28, "large": 0.45}  # extent as a fraction of a grid cell's double size
POSITIONS = {
    "top left": (0, 0),
    "top": (0, 1),
    "top right": (0, 2),
    "left": (1, 0),
    "center": (1, 1),
    "right": (1, 2),
    "bottom left": (2, 0),
    "bottom": (2, 1),
    "bottom right": (2, 2),
}
NOISE_KINDS = ("shuffle", "partial", "mixed")
SPLITS = ("train", "val", "test")  # test: the retrieval split, several captions per image


@dataclass(frozen=True)
class Shape:
    shape: str
    color: str
    size: str
    position: str

    def describe(self) -> str:
        return f"a {self.size} {self.color} {self.shape} {where(self.position)}"


def where(position: str) -> str:
    return {"center": "in the center", "left": "on the left", "right": "on the right"}.get(
        position, "at the " + position
    )


@dataclass(frozen=True)
class Scene:
    background: str
    shapes: tuple

    def caption(self) -> str:
        parts = [s.describe() for s in self.shapes]
        body = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
        return f"{body}, on a {self.background} background"

    def paraphrase(self, rng: random.Random) -> str:
        """Another wording of the same scene: shape order, prepositions, joins and background
        phrase vary; the vocabulary stays that of the training captions."""
        shapes = list(self.shapes)
        rng.shuffle(shapes)
        parts = []
        for s in shapes:
            where = rng.choice(["at the", "in the"]) + " " + s.position
            parts.append(
                rng.choice([f"a {s.size} {s.color} {s.shape} {where}", f"{where} a {s.size} {s.color} {s.shape}"])
            )
        joiner = rng.choice([", ", " and ", "; "])
        body = joiner.join(parts)
        background = rng.choice(
            [
                f"on a {self.background} background",
                f"{self.background} background",
                f"the background is {self.background}",
            ]
        )
        return rng.choice([f"{body}, {background}", f"{background}: {body}"])

    def captions(self, n: int, rng: random.Random) -> List[str]:
        """``n`` distinct-as-possible captions, the canonical one first."""
        out = [self.caption()]
        for _ in range(20 * n):
            if len(out) == n:
                break
            candidate = self.paraphrase(rng)
            if candidate not in out:
                out.append(candidate)
        return out + [self.paraphrase(rng) for _ in range(n - len(out))]


def random_scene(rng: random.Random, colors: Optional[Sequence[str]] = None) -> Scene:
    n = rng.randint(1, 3)
    positions = rng.sample(sorted(POSITIONS), n)
    colors = list(colors) if colors is not None else sorted(COLORS)
    shapes = tuple(Shape(rng.choice(SHAPES), rng.choice(colors), rng.choice(sorted(SIZES)), pos) for pos in positions)
    return Scene(rng.choice(sorted(BACKGROUNDS)), shapes)


# ----------------------------------------------------------------------------- web-like difficulty

# Colour words beyond the plain six (--colors up to 16): rarer words for a long tail.
EXTRA_COLORS = {
    "pink": (250, 110, 180),
    "brown": (130, 80, 35),
    "cyan": (40, 200, 220),
    "maroon": (120, 10, 40),
    "olive": (120, 125, 20),
    "teal": (10, 120, 120),
    "navy": (25, 30, 110),
    "lime": (160, 230, 50),
    "magenta": (220, 30, 200),
    "gold": (200, 165, 60),
}
ALL_COLORS = {**COLORS, **EXTRA_COLORS}
CONCEPT_UNITS = ("shape-color", "color")  # a concept: a shape in a colour, or a colour word


def palette(colors: int = len(COLORS)) -> List[str]:
    """The first ``colors`` colour words: the plain six (sorted), then the extra ones in order."""
    return sorted(COLORS) + list(EXTRA_COLORS)[: max(0, colors - len(COLORS))]


def concept_names(colors: int = len(COLORS), unit: str = "shape-color") -> List[str]:
    words = palette(colors)
    return words if unit == "color" else [f"{color} {shape}" for shape in SHAPES for color in words]


CONCEPTS = tuple(concept_names())  # the plain generator's 24 concepts
HARDNESS = ("distractors", "low_contrast", "small", "texture")
CAPTION_STYLES = ("full", "partial", "alt")
RARE_FRACTION = 0.1  # "rare" concepts: the rarest tenth by training frequency


@dataclass(frozen=True)
class Difficulty:
    """What makes pairs web-like; the defaults reproduce the plain generator byte for byte."""

    concept_zipf: float = 0.0  # Zipf exponent over concepts (0: uniform)
    partial_caption_rate: float = 0.0  # captions naming only some shapes or attributes
    alt_text_rate: float = 0.0  # captions naming one object only ("a red circle")
    hard_image_rate: float = 0.0  # images with distractors, low contrast, small shapes or texture
    hard_image_kinds: tuple = HARDNESS  # the kinds a hard image draws from (each with probability 1/2)
    colors: int = len(COLORS)  # colour words in use, 6 to 16 (train, val and test)
    concept_unit: str = "shape-color"  # what the Zipf law and "rare" count: shape-colour pairs or colours
    pixel_noise: float = 0.0  # sd of Gaussian sensor noise, 0-255 scale (every split)

    def __post_init__(self):
        kinds = self.hard_image_kinds
        object.__setattr__(self, "hard_image_kinds", tuple(kinds.split(",") if isinstance(kinds, str) else kinds))

    def check(self) -> None:
        for flag, value in (
            ("--partial-caption-rate", self.partial_caption_rate),
            ("--alt-text-rate", self.alt_text_rate),
            ("--hard-image-rate", self.hard_image_rate),
        ):
            if not 0.0 <= value <= 1.0:
                raise InputError(flag, f"must be in [0, 1], got {value}")
        if self.partial_caption_rate + self.alt_text_rate > 1.0:
            raise InputError(
                "--alt-text-rate",
                "plus --partial-caption-rate must be at most 1, got "
                f"{self.alt_text_rate} + {self.partial_caption_rate}",
            )
        if not self.concept_zipf >= 0.0:
            raise InputError("--concept-zipf", f"must be >= 0, got {self.concept_zipf}")
        unknown = sorted(set(self.hard_image_kinds) - set(HARDNESS))
        if unknown or not self.hard_image_kinds:
            raise InputError(
                "--hard-image-kinds",
                f"must name some of {', '.join(HARDNESS)}, got {', '.join(self.hard_image_kinds) or 'none'}",
            )
        if not len(COLORS) <= self.colors <= len(ALL_COLORS):
            raise InputError("--colors", f"must be in [{len(COLORS)}, {len(ALL_COLORS)}], got {self.colors}")
        if self.concept_unit not in CONCEPT_UNITS:
            raise InputError("--concept-unit", f"must be one of {', '.join(CONCEPT_UNITS)}, got {self.concept_unit!r}")
        if not self.pixel_noise >= 0.0:
            raise InputError("--pixel-noise", f"must be >= 0, got {self.pixel_noise}")

    @property
    def plain(self) -> bool:
        return self == Difficulty()


# ``make-data --preset web``: frozen after calibration (docs/web-preset.md); the
# values were tuned only against the two calibration conditions, never against a selection result.
PRESETS: Dict[str, dict] = {
    "web": dict(
        concept_zipf=1.2,
        partial_caption_rate=0.2,
        alt_text_rate=0.6,
        hard_image_rate=0.5,
        hard_image_kinds=("distractors", "texture"),
        pixel_noise=25.0,
        noise_rate=0.4,
        noise_kind="shuffle",
    ),
}


SETTING_DEFAULTS = dict(asdict(Difficulty()), noise_rate=0.4, noise_kind="shuffle")


def resolve_settings(preset: Optional[str] = None, **given) -> dict:
    """Noise and difficulty values: the defaults, then the preset's, then those given (not None)."""
    if preset is not None and preset not in PRESETS:
        raise InputError("--preset", f"must be one of {sorted(PRESETS)}, got {preset!r}")
    settings = dict(SETTING_DEFAULTS, **(PRESETS[preset] if preset else {}))
    settings.update({k: v for k, v in given.items() if v is not None})
    return settings


def concept_weights(seed: int, zipf: float, names: Sequence[str] = CONCEPTS) -> Dict[str, float]:
    """Probability of each concept: a Zipf law over a seed-drawn order (each seed has its own tail)."""
    order = list(names)
    random.Random(f"{seed}:concept-order").shuffle(order)
    raw = [1.0 / (rank + 1) ** zipf for rank in range(len(order))]
    total = sum(raw)
    return {c: w / total for c, w in zip(order, raw)}


@dataclass(frozen=True)
class Mention:
    """One shape as a caption names it; None: the attribute is left out."""

    shape: str
    color: str
    size: Optional[str] = None
    position: Optional[str] = None

    def describe(self) -> str:
        words = " ".join(w for w in (self.size, self.color, self.shape) if w)
        words = ("an " if words[0] in "aeiou" else "a ") + words
        return words if self.position is None else f"{words} {where(self.position)}"

    def matches(self, shape: Shape) -> bool:
        return (
            self.shape == shape.shape
            and self.color == shape.color
            and self.size in (None, shape.size)
            and self.position in (None, shape.position)
        )


@dataclass(frozen=True)
class CaptionSpec:
    """What a styled caption says: some shapes (some attributes each) and maybe the background."""

    mentions: tuple
    background: Optional[str]

    def text(self) -> str:
        parts = [m.describe() for m in self.mentions]
        body = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
        return body if self.background is None else f"{body}, on a {self.background} background"

    def describes(self, background: str, shapes: Sequence[Shape]) -> bool:
        """True if every mention is a different shape of the image and the background is right."""
        if self.background not in (None, background) or len(self.mentions) > len(shapes):
            return False
        return any(
            all(m.matches(s) for m, s in zip(self.mentions, chosen))
            for chosen in itertools.permutations(shapes, len(self.mentions))
        )


def full_spec(scene: Scene) -> CaptionSpec:
    return CaptionSpec(tuple(Mention(s.shape, s.color, s.size, s.position) for s in scene.shapes), scene.background)


def styled_spec(scene: Scene, style: str, rng: random.Random) -> CaptionSpec:
    """``full``: everything; ``partial``: a subset of the shapes, each maybe without size or
    position, the background half the time; ``alt``: one shape by colour and kind only."""
    if style == "full":
        return full_spec(scene)
    if style == "alt":
        s = rng.choice(scene.shapes)
        return CaptionSpec((Mention(s.shape, s.color),), None)
    chosen = rng.sample(list(scene.shapes), rng.randint(1, max(1, len(scene.shapes) - 1)))
    chosen.sort(key=scene.shapes.index)
    mentions = tuple(
        Mention(s.shape, s.color, s.size if rng.random() < 0.5 else None, s.position if rng.random() < 0.5 else None)
        for s in chosen
    )
    return CaptionSpec(mentions, scene.background if rng.random() < 0.5 else None)


def corrupt_spec(spec: CaptionSpec, rng: random.Random, colors: Sequence[str] = tuple(sorted(COLORS))) -> CaptionSpec:
    """``partial`` noise on a styled caption: one or two named attributes made wrong."""
    mentions = list(spec.mentions)
    for _ in range(rng.randint(1, 2)):
        i = rng.randrange(len(mentions))
        attributes = ["color", "shape"] + (["position"] if mentions[i].position else [])
        attribute = rng.choice(attributes)
        if attribute == "color":
            value = rng.choice([c for c in colors if c != mentions[i].color])
        elif attribute == "shape":
            value = rng.choice([s for s in SHAPES if s != mentions[i].shape])
        else:
            value = rng.choice([p for p in sorted(POSITIONS) if p != mentions[i].position])
        mentions[i] = replace(mentions[i], **{attribute: value})
    return CaptionSpec(tuple(mentions), spec.background)


def weighted_scene(rng: random.Random, weights: Dict[str, float]) -> Scene:
    """A scene whose shapes' concepts follow ``weights`` (sizes, positions, background uniform;
    with colour concepts the kind of shape is uniform too)."""
    n = rng.randint(1, 3)
    positions = rng.sample(sorted(POSITIONS), n)
    names, probs = zip(*sorted(weights.items()))
    concepts = rng.choices(names, probs, k=n)
    words = [c.split(" ") if " " in c else [c, rng.choice(SHAPES)] for c in concepts]
    shapes = tuple(Shape(shape, color, rng.choice(sorted(SIZES)), pos) for (color, shape), pos in zip(words, positions))
    return Scene(rng.choice(sorted(BACKGROUNDS)), shapes)


def draw_hardness(
    scene: Scene, rate: float, weights: Dict[str, float], rng: random.Random, allowed: Sequence[str] = HARDNESS
):
    """(hardness kinds, distractor shapes) of one image: with probability ``rate`` at least one
    of the ``allowed`` kinds, each with probability 1/2."""
    if rate <= 0.0 or rng.random() >= rate:
        return (), ()
    kinds = ()
    while not kinds:
        kinds = tuple(k for k in HARDNESS if k in allowed and rng.random() < 0.5)
    extra = ()
    if "distractors" in kinds:
        free = [p for p in sorted(POSITIONS) if p not in {s.position for s in scene.shapes}]
        picked = weighted_scene(rng, weights).shapes
        extra = tuple(replace(s, position=p) for s, p in zip(picked[: rng.randint(1, 2)], rng.sample(free, 2)))
    return kinds, extra


def corrupt_scene(scene: Scene, rng: random.Random) -> Scene:
    """One or two wrong attributes (colour, shape or position) of the scene's shapes."""
    shapes = list(scene.shapes)
    for _ in range(rng.randint(1, 2)):
        i = rng.randrange(len(shapes))
        attribute = rng.choice(("color", "shape", "position"))
        if attribute == "color":
            value = rng.choice([c for c in sorted(COLORS) if c != shapes[i].color])
        elif attribute == "shape":
            value = rng.choice([s for s in SHAPES if s != shapes[i].shape])
        else:
            taken = {s.position for s in shapes}
            value = rng.choice([p for p in sorted(POSITIONS) if p not in taken])
        shapes[i] = replace(shapes[i], **{attribute: value})
    return Scene(scene.background, tuple(shapes))


def render(
    scene: Scene,
    size: int,
    hard: Sequence[str] = (),
    extra: Sequence[Shape] = (),
    pixel_noise: float = 0.0,
    noise_seed: str = "",
) -> Image.Image:
    """The scene's picture; ``hard`` kinds and ``extra`` (unmentioned) shapes make it harder,
    ``pixel_noise`` adds Gaussian sensor noise (seeded by ``noise_seed``)."""
    background = BACKGROUNDS[scene.background]
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    if "texture" in hard:  # stripes a little lighter or darker than the background
        rng = random.Random(noise_seed + ":texture")
        step = rng.choice((-45, 45))
        shade = tuple(max(0, min(255, c + step)) for c in background)
        period = rng.randint(4, 9)
        for offset in range(-size, size, period):
            if rng.random() < 0.5:
                draw.line((offset, 0, offset + size, size), fill=shade, width=max(1, period // 3))
            else:
                draw.line((0, offset, size, offset), fill=shade, width=max(1, period // 3))
    cell = size / 3
    scale = 0.7 if "small" in hard else 1.0
    for s in tuple(scene.shapes) + tuple(extra):
        row, col = POSITIONS[s.position]
        cx, cy = (col + 0.5) * cell, (row + 0.5) * cell
        r = SIZES[s.size] * cell * scale
        color = ALL_COLORS[s.color]
        if "low_contrast" in hard:  # half way towards the background
            color = tuple(round(0.5 * c + 0.5 * b) for c, b in zip(color, background))
        if s.shape == "circle":
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=color)
        elif s.shape == "square":
            draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=color)
        elif s.shape == "triangle":
            draw.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=color)
        else:  # diamond
            draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=color)
    if pixel_noise > 0:
        import numpy as np

        rng = np.random.default_rng(int(hashlib.md5(noise_seed.encode()).hexdigest()[:8], 16))
        pixels = np.asarray(image, dtype=np.float32) + rng.normal(0.0, pixel_noise, (size, size, 3))
        image = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))
    return image


@dataclass
class Sample:
    key: str
    uid: str
    scene: Scene
    caption: str
    noisy: bool
    captions: Optional[List[str]] = None  # retrieval split: several wordings of the scene
    style: str = "full"  # caption style: full, partial or alt
    spec: Optional[CaptionSpec] = None  # what the caption says (styled captions)
    hard: tuple = ()  # image hardness kinds
    extra: tuple = ()  # shapes drawn but never captioned
    pixel_noise: float = 0.0
    noise_kind: Optional[str] = None
    groups: List[str] = field(default_factory=list)  # e.g. "rare": about a rare concept
    concept_unit: str = "shape-color"

    def image(self, size: int) -> Image.Image:
        return render(self.scene, size, self.hard, self.extra, self.pixel_noise, self.uid)

    def concept(self, item) -> str:
        return item.color if self.concept_unit == "color" else f"{item.color} {item.shape}"

    def concepts(self) -> List[str]:
        return [self.concept(s) for s in self.scene.shapes]

    def caption_concepts(self) -> List[str]:
        """The concepts the sample's caption names (plain captions: every shape of the scene)."""
        if self.spec is None:
            return self.concepts()
        return [self.concept(m) for m in self.spec.mentions]


def make_samples(
    split: str,
    n: int,
    seed: int,
    noise_rate: float = 0.0,
    noise_kind: str = "shuffle",
    captions_per_image: int = 1,
    difficulty: Difficulty = Difficulty(),
) -> List[Sample]:
    """The samples of one split (scenes and captions, no pixels); noise only for ``train``;
    ``captions_per_image`` > 1 gives each sample that many wordings (retrieval split).
    ``difficulty`` shapes the train and val splits; the test split keeps uniform concepts, full
    captions and plain images (only its sensor noise follows ``difficulty``)."""
    if not 0.0 <= noise_rate <= 1.0:
        raise InputError("--noise-rate", f"must be in [0, 1], got {noise_rate}")
    if noise_kind not in NOISE_KINDS:
        raise InputError("--noise-kind", f"must be one of {NOISE_KINDS}, got {noise_kind!r}")
    difficulty.check()
    styled = split != "test" and not difficulty.plain
    names = concept_names(difficulty.colors, difficulty.concept_unit)
    weights = concept_weights(seed, difficulty.concept_zipf, names) if styled else None
    colors = palette(difficulty.colors) if difficulty.colors != len(COLORS) else None  # None: the plain draw
    samples, seen = [], set()
    for i in range(n):
        tag = f"{seed}:{split}:{i}"
        rng = random.Random(tag)
        scene = weighted_scene(rng, weights) if styled else random_scene(rng, colors)
        # The retrieval split never repeats a scene: two identical images tie on every query,
        # and no retrieval metric can say which of them is "the" right answer.
        redraw = 0
        while split == "test" and scene in seen:
            redraw += 1
            scene = random_scene(random.Random(f"{tag}:redraw{redraw}"), colors)
        seen.add(scene)
        uid = hashlib.md5(tag.encode()).hexdigest()
        captions = (
            scene.captions(captions_per_image, random.Random(tag + ":captions")) if captions_per_image > 1 else None
        )
        sample = Sample(
            f"{i:08d}",
            uid,
            scene,
            scene.caption(),
            False,
            captions,
            pixel_noise=difficulty.pixel_noise,
            concept_unit=difficulty.concept_unit,
        )
        if styled:
            style_rng = random.Random(tag + ":style")
            u = style_rng.random()
            sample.style = (
                "alt"
                if u < difficulty.alt_text_rate
                else "partial"
                if u < difficulty.alt_text_rate + difficulty.partial_caption_rate
                else "full"
            )
            sample.spec = styled_spec(scene, sample.style, style_rng)
            sample.caption = sample.spec.text()
            sample.hard, sample.extra = draw_hardness(
                scene, difficulty.hard_image_rate, weights, random.Random(tag + ":hard"), difficulty.hard_image_kinds
            )
        samples.append(sample)
    if split != "train" or noise_rate == 0.0 or n == 0:
        return samples

    rng = random.Random(f"{seed}:{split}:noise")
    chosen = sorted(rng.sample(range(n), round(noise_rate * n)))
    if noise_kind == "mixed":
        kinds = {i: rng.choice(("shuffle", "partial")) for i in chosen}
    else:
        kinds = {i: noise_kind for i in chosen}
    shuffled = [i for i in chosen if kinds[i] == "shuffle"]
    order = shuffled[:]
    rng.shuffle(order)
    # Rotating a random order by one is a derangement: nobody keeps its own caption.
    new = {order[j]: samples[order[(j + 1) % len(order)]] for j in range(len(order))} if len(order) > 1 else {}
    if styled:
        specs = {i: other.spec for i, other in new.items()}
        specs.update(
            {
                i: corrupt_spec(samples[i].spec, random.Random(f"{seed}:{split}:{i}:noise"), palette(difficulty.colors))
                for i in chosen
                if kinds[i] == "partial"
            }
        )
        for i, spec in specs.items():
            sample = samples[i]
            sample.spec, sample.caption = spec, spec.text()
            # A caption can still be true of the image (another shape or a distractor fits it).
            sample.noisy = not spec.describes(sample.scene.background, sample.scene.shapes + sample.extra)
            sample.noise_kind = kinds[i] if sample.noisy else None
        return samples
    new_captions = {i: other.caption for i, other in new.items()}
    new_captions.update(
        {
            i: corrupt_scene(samples[i].scene, random.Random(f"{seed}:{split}:{i}:noise")).caption()
            for i in chosen
            if kinds[i] == "partial"
        }
    )
    for i, caption in new_captions.items():
        samples[i].caption = caption
        # Two scenes can share a description; such a sample is not mislabelled after all.
        samples[i].noisy = caption != samples[i].scene.caption()
        samples[i].noise_kind = kinds[i] if samples[i].noisy else None
    return samples


def concept_counts(samples: Sequence[Sample], names: Sequence[str] = CONCEPTS) -> Dict[str, int]:
    """How many shapes of each concept the samples' images show (distractors aside)."""
    counts = {c: 0 for c in names}
    for sample in samples:
        for concept in sample.concepts():
            counts[concept] += 1
    return counts


def rare_concepts(counts: Dict[str, int], fraction: float = RARE_FRACTION) -> List[str]:
    """The rarest ``fraction`` of the concepts (at least one), rarest first; ties by name."""
    ranked = sorted(counts, key=lambda c: (counts[c], c))
    return ranked[: max(1, math.ceil(fraction * len(ranked)))]


def tag_rare(samples: Sequence[Sample], rare: Sequence[str], by_caption: bool) -> None:
    """Add the group ``rare`` to the samples about a rare concept: whose own caption names one
    (``by_caption``: training pairs) or whose image shows one (retrieval images)."""
    rare = set(rare)
    for sample in samples:
        named = sample.caption_concepts() if by_caption else sample.concepts()
        if rare.intersection(named):
            sample.groups.append("rare")


def _encode(image: Image.Image, image_format: str) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG" if image_format == "png" else "JPEG", quality=95)
    return buf.getvalue()


def _add_member(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(payload), 0, 0o644  # fixed metadata: reproducible bytes
    tar.addfile(info, io.BytesIO(payload))


def sample_record(sample: Sample, split: str) -> dict:
    extra = {"captions": sample.captions} if sample.captions else {}
    return {
        **extra,
        "key": sample.key,
        "uid": sample.uid,
        "split": split,
        "caption": sample.caption,
        "true_caption": sample.scene.caption(),
        "noisy": sample.noisy,
        "noise_kind": sample.noise_kind if sample.noisy else None,
        "background": sample.scene.background,
        "shapes": [vars(s) for s in sample.scene.shapes],
        "concepts": sample.concepts(),
        "caption_concepts": sample.caption_concepts(),
        "caption_style": sample.style,
        "hard": list(sample.hard),
        "distractors": [vars(s) for s in sample.extra],
        "groups": list(sample.groups),
    }


def write_shard(
    path: str, samples: List[Sample], split: str, image_size: int, image_format: str, image_dir: Optional[str] = None
) -> int:
    """Write one webdataset shard atomically; with ``image_dir`` also write the images as files."""
    with atomic_output(path) as tmp, tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
        for sample in samples:
            image = _encode(sample.image(image_size), image_format)
            _add_member(tar, f"{sample.key}.{image_format}", image)
            text = "\n".join(sample.captions) if sample.captions else sample.caption
            _add_member(tar, f"{sample.key}.txt", text.encode())
            record = sample_record(sample, split)
            _add_member(tar, f"{sample.key}.json", json.dumps(record, sort_keys=True).encode())
            if image_dir is not None:
                with open(os.path.join(image_dir, f"{sample.key}.{image_format}"), "wb") as f:
                    f.write(image)
    return len(samples)


def write_split(
    out_dir: str,
    split: str,
    samples: List[Sample],
    shard_size: int = 1000,
    image_size: int = 64,
    image_format: str = "png",
    csv: bool = False,
    workers: int = 1,
    progress: bool = True,
) -> List[str]:
    """Write ``out_dir/<split>/NNNNN.tar`` plus ``sizes.json`` (read by OpenCLIP) and optionally
    ``out_dir/<split>.csv`` with the images under ``out_dir/<split>_images/``."""
    from tqdm import tqdm

    if image_format not in ("png", "jpg"):
        raise InputError("--image-format", f"must be png or jpg, got {image_format!r}")
    split_dir = os.path.join(out_dir, split)
    os.makedirs(split_dir, exist_ok=True)
    image_dir = os.path.abspath(os.path.join(out_dir, f"{split}_images")) if csv else None
    if image_dir:
        os.makedirs(image_dir, exist_ok=True)
    chunks = [samples[i : i + shard_size] for i in range(0, len(samples), shard_size)]
    names = [f"{i:05d}.tar" for i in range(len(chunks))]
    jobs = [
        (os.path.join(split_dir, name), chunk, split, image_size, image_format, image_dir)
        for name, chunk in zip(names, chunks)
    ]
    bar = tqdm(total=len(samples), desc=f"{split} shards", unit="sample", disable=not progress)
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            for count in pool.map(write_shard, *zip(*jobs)):
                bar.update(count)
    else:
        for job in jobs:
            bar.update(write_shard(*job))
    bar.close()
    _write_json(os.path.join(split_dir, "sizes.json"), {n: len(c) for n, c in zip(names, chunks)})
    if csv:
        import pandas as pd

        rows = [
            (os.path.join(image_dir, f"{s.key}.{image_format}"), caption, s.key, s.noisy)
            for s in samples
            for caption in (s.captions or [s.caption])
        ]
        frame = pd.DataFrame(rows, columns=["filepath", "title", "key", "noisy"])
        with atomic_output(os.path.join(out_dir, f"{split}.csv")) as tmp:
            frame.to_csv(tmp, sep="\t", index=False)
    return [os.path.join(split_dir, n) for n in names]


def write_coco_layout(out_dir: str, samples: List[Sample], image_size: int = 64) -> dict:
    """The samples as MS-COCO's Karpathy test split is laid out for CLIP_benchmark:
    ``out_dir/val2014/COCO_val2014_<id>.jpg`` and ``out_dir/coco_test_karpathy.json`` (COCO captions
    JSON, every caption of every image). JPEG bytes equal those of ``--image-format jpg`` shards."""
    image_dir = os.path.join(out_dir, "val2014")
    os.makedirs(image_dir, exist_ok=True)
    images, annotations = [], []
    for sample in samples:
        image_id = int(sample.key) + 1
        name = f"COCO_val2014_{image_id:012d}.jpg"
        _write_bytes(os.path.join(image_dir, name), _encode(sample.image(image_size), "jpg"))
        images.append({"id": image_id, "file_name": name, "width": image_size, "height": image_size})
        for caption in sample.captions or [sample.caption]:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "caption": caption})
    _write_json(os.path.join(out_dir, "coco_test_karpathy.json"), {"images": images, "annotations": annotations})
    return {"root": out_dir, "images": len(images), "captions": len(annotations)}


def write_flickr_layout(
    out_dir: str, samples: List[Sample], image_size: int = 64, annotation: str = "flickr30k_test_karpathy.txt"
) -> dict:
    """The samples as Flickr30K's Karpathy test split is laid out for CLIP_benchmark:
    ``out_dir/<name>.jpg`` and ``out_dir/flickr30k_test_karpathy.txt`` (CSV with the header
    ``image,caption``, one row per caption; captions holding a comma are quoted, and
    CLIP_benchmark, which splits rows on ``.jpg,``, keeps those quotes)."""
    import csv

    os.makedirs(out_dir, exist_ok=True)
    rows = []
    for sample in samples:
        name = f"{sample.key}.jpg"
        _write_bytes(os.path.join(out_dir, name), _encode(sample.image(image_size), "jpg"))
        rows.extend((name, caption) for caption in sample.captions or [sample.caption])
    with atomic_output(os.path.join(out_dir, annotation)) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(("image", "caption"))
        writer.writerows(rows)
    return {"root": out_dir, "images": len(samples), "captions": len(rows)}


def _write_bytes(path: str, payload: bytes) -> None:
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        f.write(payload)


def _write_json(path: str, obj) -> None:
    with atomic_output(path) as tmp, open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)


def shard_pattern(out_dir: str, split: str, num_shards: int) -> str:
    """The brace pattern OpenCLIP's ``--train-data``/``--val-data`` take for a split."""
    last = max(num_shards - 1, 0)
    return os.path.join(out_dir, split, f"{{00000..{last:05d}}}.tar")


def make_dataset(
    out_dir: str,
    train_size: int = 20000,
    val_size: int = 1000,
    seed: int = 0,
    noise_rate: float = 0.4,
    noise_kind: str = "shuffle",
    shard_size: int = 1000,
    image_size: int = 64,
    image_format: str = "png",
    csv: bool = False,
    workers: int = 1,
    progress: bool = True,
    test_size: int = 0,
    test_captions: int = 5,
    coco_layout: Optional[str] = None,
    flickr_layout: Optional[str] = None,
    difficulty: Difficulty = Difficulty(),
    preset: Optional[str] = None,
) -> dict:
    """Write the train (noisy), val (clean, drawn like train: the held-out split a detector may
    watch) and, with ``test_size``, the test (retrieval: clean, ``test_captions`` wordings per
    image, balanced over concepts) splits; return and save a manifest. ``coco_layout`` and
    ``flickr_layout``: folders that also get the test split in MS-COCO's and Flickr30K's layout
    (as CLIP_benchmark reads them). Samples about the rarest tenth of the concepts (by training
    frequency) carry the group ``rare`` in their ``.json``."""
    if shard_size < 1:
        raise InputError("--shard-size", f"must be >= 1, got {shard_size}")
    for flag, folder in (("--coco-layout", coco_layout), ("--flickr-layout", flickr_layout)):
        if folder and test_size < 1:
            raise InputError(flag, "writes the test split: give --test-size > 0")
    splits = {
        "train": make_samples("train", train_size, seed, noise_rate, noise_kind, difficulty=difficulty),
        "val": make_samples("val", val_size, seed, difficulty=difficulty),
    }
    if test_size:
        splits["test"] = make_samples("test", test_size, seed, captions_per_image=test_captions, difficulty=difficulty)
    counts = concept_counts(splits["train"], concept_names(difficulty.colors, difficulty.concept_unit))
    rare = rare_concepts(counts)
    for split, samples in splits.items():
        tag_rare(samples, rare, by_caption=split != "test")
    manifest = {
        "seed": seed,
        "noise_rate": noise_rate,
        "noise_kind": noise_kind,
        "preset": preset,
        "image_size": image_size,
        "image_format": image_format,
        "difficulty": asdict(difficulty),
        "concept_counts": counts,
        "rare_concepts": rare,
        "splits": {},
    }
    for split, samples in splits.items():
        shards = write_split(out_dir, split, samples, shard_size, image_size, image_format, csv, workers, progress)
        manifest["splits"][split] = {
            "num_samples": len(samples),
            "num_noisy": sum(s.noisy for s in samples),
            "num_shards": len(shards),
            "num_rare": sum("rare" in s.groups for s in samples),
            "caption_styles": {style: sum(s.style == style for s in samples) for style in CAPTION_STYLES},
            "hard_images": sum(bool(s.hard) for s in samples),
            "pattern": shard_pattern(out_dir, split, len(shards)),
            "csv": os.path.join(out_dir, f"{split}.csv") if csv else None,
        }
        if split == "test":
            if coco_layout:
                manifest["coco_layout"] = write_coco_layout(coco_layout, samples, image_size)
            if flickr_layout:
                manifest["flickr_layout"] = write_flickr_layout(flickr_layout, samples, image_size)
    manifest = json.loads(json.dumps(manifest))  # as a later read of manifest.json gives it (lists, not tuples)
    _write_json(os.path.join(out_dir, "manifest.json"), manifest)
    return manifest


def read_sample_records(split_dir: str) -> List[dict]:
    """The ``.json`` record of every sample in a split's shards, in shard order."""
    out = []
    for name in sorted(os.listdir(split_dir)):
        if name.endswith(".tar"):
            with tarfile.open(os.path.join(split_dir, name)) as tar:
                for member in tar.getmembers():
                    if member.name.endswith(".json"):
                        out.append(json.loads(tar.extractfile(member).read()))
    return out
