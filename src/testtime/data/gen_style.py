"""What one generated task's input grids share: its `Style`, drawn once per task by `gen_grids.draw_style`, and
read by every scene drawer (`gen_grids`, `gen_patterns`, `gen_cells`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Style:
    family: str
    bg: int
    palette: tuple[int, ...]  # foreground colors, never the background
    sides: tuple[int, int]  # each side's range, inclusive (for `halves`: one half's)
    square: bool
    count: tuple[int, int]  # how many objects, rectangles, frames, points or lines, inclusive
    extent: tuple[int, int]  # an object's side lengths, inclusive
    density: float  # share of a sprite's box it fills; of the grid for noise and halves; for frames, P(closed)
    multicolor: bool  # a sprite's cells mix palette colors, rather than one color a sprite
    speckle: float  # stray pixels over the scene (what denoising removes)
    vertical: bool  # halves sit side by side (else stacked); lines run as columns (else rows)
    paired: bool  # points come in same-colored pairs on one row or column (what `connect` joins)
    layout: str = ""  # the family's scene variant (LAYOUTS), "" for a family with one
    tiling: str = ""  # periodic: how the motif repeats (TILINGS)
    side: int = 0  # beacons: the side of the anchor its pixels lie on, by quarter turns of the grid
