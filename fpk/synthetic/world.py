"""fpk's synthetic world: videos whose every frame is determined by the first frame and the
prompt, so that the ground truth of any future frame is known (drift and forgetting are
measured against it).

A scene is one object (a square or a circle of one of six colours, 16 px) on a plain or
checkered background, 64x64 px at 30 fps. The prompt names the object and where it goes:
"the red square moves to the top right corner and stops" (it moves 2 px a frame on each axis
until it is there), or "... stays in place". Positions start on the 8-px grid of the tiny
model's tokens and corners lie on it too, so that at every latent frame (4 pixel frames) the
object has moved a whole number of tokens: a copy with a shift, which RoPE makes learnable.

Continuous scenes (`continuous_scene`) move for the whole video, at the same speed, bouncing
off the frame's edges: "... bounces off the walls" (both axes, starting toward the bottom
right), "... moves left and right" (starting to the right), "... moves up and down" (starting
down). The edges lie on the token grid, so they keep the whole-token shift per latent frame;
the largest per-frame step of the centre is SPEED * sqrt(2) < 3 px. These are the videos on
which drift can happen (a goal scene is still after about a second).

One motion is kept out of the shipped tiny model's training on purpose: "... moves in a
circle" (`circling_scene`), a turn of radius RADIUS px every PERIOD frames, forever. It is what
the LoRA demonstration (`benchmarks/lora_circle.py`) teaches the model from 8 clips.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SIZE = 64  # frame side, pixels
OBJECT = 16  # object side, pixels
GRID = 8  # start positions lie on this grid (the tiny model's token size)
SPEED = 2  # pixels per frame on each axis
FPS = 30
HELD_OUT = 1_000_000  # scenes with seeds from here on are never trained on

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 90, 240),
    "yellow": (240, 220, 40),
    "cyan": (40, 220, 230),
    "magenta": (220, 50, 220),
}
BACKGROUNDS: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {
    "black": ((10, 10, 10), (10, 10, 10)),
    "gray": ((90, 90, 90), (90, 90, 90)),
    "navy": ((20, 25, 80), (20, 25, 80)),
    "checkered": ((30, 30, 30), (70, 70, 70)),
}
SHAPES = ("square", "circle")
CORNERS: dict[str, tuple[int, int]] = {
    "top left": (0, 0),
    "top right": (SIZE - OBJECT, 0),
    "bottom left": (0, SIZE - OBJECT),
    "bottom right": (SIZE - OBJECT, SIZE - OBJECT),
}
STAY = "stays"
GOALS = (*CORNERS, STAY)
CIRCLE = "circle"  # not a goal: the LoRA demonstration's motion (see the module doc)
MOTIONS: dict[str, tuple[int, int]] = {  # continuous motion -> first direction (x, y)
    "bounces": (1, 1),
    "left and right": (1, 0),
    "up and down": (0, 1),
}
#: Words of the continuous scenes' prompts that the shipped tokenizers were built without: they
#: are spelled in the tokenizers' character pieces. (Adding them as words would add BPE merges
#: that change how the prompt template is cut into tokens, and so every earlier prompt's
#: encoding.)
SPELLED_WORDS = ("bounces", "off", "walls", "up", "down")
RADIUS = 16  # pixels: the circle the object's top-left corner runs on (2 latent pixels)
PERIOD = 40  # pixel frames a turn takes: two sections of the tiny preset (10 latent frames)


@dataclass(frozen=True)
class Scene:
    colour: str
    shape: str
    background: str
    start: tuple[int, int]  # top-left corner of the object, pixels (x, y)
    goal: str  # a corner name or "stays"

    @property
    def prompt(self) -> str:
        what = f"the {self.colour} {self.shape} on a {self.background} background"
        if self.goal == STAY:
            return f"{what} stays in place"
        if self.goal == CIRCLE:
            return f"{what} moves in a circle"
        if self.goal == "bounces":
            return f"{what} bounces off the walls"
        if self.goal in MOTIONS:
            return f"{what} moves {self.goal}"
        return f"{what} moves to the {self.goal} corner and stops"

    def position(self, frame: int) -> tuple[int, int]:
        """Top-left corner of the object at pixel frame `frame`."""
        if self.goal == STAY:
            return self.start
        if self.goal == CIRCLE:  # clockwise on screen, from the circle's leftmost point
            angle = 2 * np.pi * frame / PERIOD
            x = self.start[0] + RADIUS * (1 - np.cos(angle))
            y = self.start[1] - RADIUS * np.sin(angle)
            return round(float(x)), round(float(y))
        if self.goal in MOTIONS:
            (dx, dy), span = MOTIONS[self.goal], SIZE - OBJECT
            return (_bounce(self.start[0], dx * SPEED * frame, span),
                    _bounce(self.start[1], dy * SPEED * frame, span))  # fmt: skip
        (sx, sy), (gx, gy) = self.start, CORNERS[self.goal]
        return _approach(sx, gx, SPEED * frame), _approach(sy, gy, SPEED * frame)

    def centre(self, frame: int) -> tuple[float, float]:
        x, y = self.position(frame)
        return x + OBJECT / 2, y + OBJECT / 2


def _approach(start: int, goal: int, distance: int) -> int:
    step = min(distance, abs(goal - start))
    return start + step if goal >= start else start - step


def _bounce(start: int, distance: int, span: int) -> int:
    """Where a point starting at `start` in [0, span] ends after `distance` px, reflected at
    0 and span."""
    u = (start + distance) % (2 * span)
    return u if u <= span else 2 * span - u


def palette_share(image: np.ndarray, tolerance: int = 24) -> float:
    """Share of the pixels of `image` (H, W, 3 uint8) within `tolerance` (per channel) of a
    colour this world draws: 1.0 for its frames at any size, far less for a photo."""
    palette = np.array([*COLOURS.values(), *(c for pair in BACKGROUNDS.values() for c in pair)])
    step = max(1, max(image.shape[:2]) // 128)  # a sample of the pixels is enough
    pixels = image[::step, ::step].reshape(-1, 1, 3).astype(np.int16)
    near = (np.abs(pixels - palette[None]) <= tolerance).all(axis=-1).any(axis=-1)
    return float(near.mean())


def vocabulary() -> list[str]:
    """Every word a prompt of this world can use (for the tiny tokenizers)."""
    words = {"the", "on", "a", "background", "moves", "to", "corner", "and", "stops", "stays"}
    words |= {"in", "place", "top", "bottom", "left", "right"}
    words |= set(COLOURS) | set(BACKGROUNDS) | set(SHAPES)
    return sorted(words)


def sample_scene(rng: np.random.Generator, goals=GOALS, p=(0.225,) * 4 + (0.1,)) -> Scene:
    """A scene drawn by `rng`: its look, a start on the token grid, one of `goals` (weights
    `p`; None: uniform)."""
    cells = (SIZE - OBJECT) // GRID + 1
    return Scene(
        colour=str(rng.choice(list(COLOURS))),
        shape=str(rng.choice(SHAPES)),
        background=str(rng.choice(list(BACKGROUNDS))),
        start=(int(rng.integers(cells)) * GRID, int(rng.integers(cells)) * GRID),
        goal=str(rng.choice(list(goals), p=p)),
    )


def circling_scene(seed: int) -> Scene:
    """The circling scene of `seed` (deterministic; seeds from HELD_OUT for held-out ones):
    starts on the token grid where the whole circle stays in the frame."""
    rng = np.random.default_rng([seed, 7])
    xs = np.arange(0, SIZE - OBJECT - 2 * RADIUS + 1, GRID)
    ys = np.arange(RADIUS, SIZE - OBJECT - RADIUS + 1, GRID)
    return Scene(
        colour=str(rng.choice(list(COLOURS))),
        shape=str(rng.choice(SHAPES)),
        background=str(rng.choice(list(BACKGROUNDS))),
        start=(int(rng.choice(xs)), int(rng.choice(ys))),
        goal=CIRCLE,
    )


def continuous_scene(seed: int) -> Scene:
    """The continuous-motion scene of `seed` (deterministic; seeds from HELD_OUT for held-out
    ones): one of MOTIONS, from a start anywhere on the token grid."""
    return sample_scene(np.random.default_rng([seed, 11]), MOTIONS, None)


def scene(seed: int) -> Scene:
    """The scene of `seed` (deterministic)."""
    return sample_scene(np.random.default_rng(seed))


def render_frame(s: Scene, frame: int) -> np.ndarray:
    """uint8 (SIZE, SIZE, 3)."""
    a, b = BACKGROUNDS[s.background]
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    checker = ((yy // GRID + xx // GRID) % 2).astype(bool)
    img = np.where(checker[..., None], np.array(b), np.array(a)).astype(np.uint8)
    x, y = s.position(frame)
    mask = object_mask(s.shape, x, y)
    img[mask] = COLOURS[s.colour]
    return img


def object_mask(shape: str, x: int, y: int) -> np.ndarray:
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    inside = (xx >= x) & (xx < x + OBJECT) & (yy >= y) & (yy < y + OBJECT)
    if shape == "circle":
        r = OBJECT / 2
        inside &= (xx + 0.5 - x - r) ** 2 + (yy + 0.5 - y - r) ** 2 <= r * r
    return inside


def render(s: Scene, frames: int, first: int = 0) -> np.ndarray:
    """uint8 (frames, SIZE, SIZE, 3), pixel frames first .. first + frames - 1."""
    return np.stack([render_frame(s, first + i) for i in range(frames)])
