"""The embedded synthetic "shapes" benchmark.

A seeded, procedurally generated world of 1-3 coloured shapes on a 3x3 grid that exercises
every task of mmret: image-text retrieval (Karpathy/ALBEF JSON), multilingual retrieval
(IGLUE JSONL, Multi30K and XTD text files in en, de, fr, cs, zh, ja, parallel across
languages) and composed image retrieval (CIRR- and FashionIQ-style triplets whose targets
are one-edit variants of their references).

Vocabulary: 6 shapes (circle, square, triangle, star, cross, diamond), 8 colours, 2 sizes
(small ~1/6 of the image side, large ~1/3), 9 grid positions. Backgrounds (plain, stripes,
checks x three tones) are never mentioned in any text; the texture is the FashionIQ
"category": plain -> dress, stripes -> shirt, checks -> toptee. Every edit keeps the
background, so a reference and its target always share a category.

Usage::

    from mmret.data.synthetic import generate, layout
    manifest = generate("data/shapes", num_images=10000, seed=0)
    paths = layout("data/shapes")  # where each format lives

or ``mmret-synth --out data/shapes --images 10000`` (``mmret/data/synthetic/cli.py``).
"""

from mmret.data.synthetic.generate import DEFAULT_SPLITS, GENERATOR_VERSION, generate
from mmret.data.synthetic.languages import SUPPORTED_LANGUAGES
from mmret.data.synthetic.prepare import prepare_synthetic
from mmret.data.synthetic.render import render_scene
from mmret.data.synthetic.writers import ShapesLayout, layout

__all__ = [
    "DEFAULT_SPLITS",
    "GENERATOR_VERSION",
    "SUPPORTED_LANGUAGES",
    "ShapesLayout",
    "generate",
    "layout",
    "prepare_synthetic",
    "render_scene",
]
