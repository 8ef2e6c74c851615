"""Quality of generated frames against the synthetic world's ground truth.

Per frame: PSNR and SSIM against the true frame; the object's position error (centroid of
the pixels near its colour, against the true centre); colour error (mean distance of those
pixels to the true colour); solidity (whether those pixels form one piece of about the
object's area); sharpness (variance of the Laplacian). All numpy, no model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fpk.synthetic import world

COLOUR_TOLERANCE = 80.0  # RGB distance within which a pixel counts as the object's colour
AT_GOAL_PX = 4.0  # at goal: mean position error over the last second below this


@dataclass(frozen=True)
class FrameScore:
    psnr: float
    ssim: float
    position_error: float  # pixels; the frame's diagonal when the object is missing
    colour_error: float  # RGB distance of the object's pixels to its true colour
    solid: bool  # one 4-connected piece, area within 50% of the true one
    sharpness: float


METRICS = ("psnr", "ssim", "position_error", "colour_error", "sharpness")
HIGHER_IS_BETTER = {"psnr": True, "ssim": True, "position_error": False, "colour_error": False,
                    "sharpness": True}  # fmt: skip


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 99.0 if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Global SSIM on luma (one window: the whole frame), enough to rank samplers."""
    x, y = _luma(a), _luma(b)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = x.mean(), y.mean()
    vx, vy, cov = x.var(), y.var(), ((x - mx) * (y - my)).mean()
    return float((2 * mx * my + c1) * (2 * cov + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))


def sharpness(a: np.ndarray) -> float:
    y = _luma(a)
    lap = -4 * y[1:-1, 1:-1] + y[:-2, 1:-1] + y[2:, 1:-1] + y[1:-1, :-2] + y[1:-1, 2:]
    return float(lap.var())


def _luma(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def object_pixels(frame: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    dist = np.linalg.norm(frame.astype(np.float64) - np.array(colour), axis=-1)
    return dist < COLOUR_TOLERANCE


def _largest_piece(mask: np.ndarray) -> int:
    """Size of the largest 4-connected piece of `mask` (flood fill)."""
    seen = np.zeros_like(mask)
    best = 0
    for y, x in zip(*np.nonzero(mask), strict=True):
        if seen[y, x]:
            continue
        stack, size = [(y, x)], 0
        seen[y, x] = True
        while stack:
            cy, cx = stack.pop()
            size += 1
            for ny, nx in ((cy + 1, cx), (cy - 1, cx), (cy, cx + 1), (cy, cx - 1)):
                if 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1]:
                    if mask[ny, nx] and not seen[ny, nx]:
                        seen[ny, nx] = True
                        stack.append((ny, nx))
        best = max(best, size)
    return best


def score_frame(frame: np.ndarray, scene: world.Scene, index: int) -> FrameScore:
    truth = world.render_frame(scene, index)
    colour = world.COLOURS[scene.colour]
    mask = object_pixels(frame, colour)
    true_area = int(world.object_mask(scene.shape, *scene.position(index)).sum())
    if mask.sum() == 0:
        pos_err, col_err = float(np.hypot(*frame.shape[:2])), float(COLOUR_TOLERANCE)
    else:
        ys, xs = np.nonzero(mask)
        cx, cy = scene.centre(index)
        pos_err = float(np.hypot(xs.mean() + 0.5 - cx, ys.mean() + 0.5 - cy))
        col_err = float(np.linalg.norm(frame[mask].astype(np.float64) - colour, axis=-1).mean())
    piece = _largest_piece(mask) if mask.any() else 0
    solid = piece >= 0.5 * true_area and mask.sum() <= 1.5 * true_area
    return FrameScore(psnr(frame, truth), ssim(frame, truth), pos_err, col_err, bool(solid),
                      sharpness(frame))  # fmt: skip


def per_second(frames: np.ndarray, scene: world.Scene, fps: int = world.FPS) -> list[dict]:
    """Mean of each metric over every second of `frames` (F, H, W, 3)."""
    out = []
    for start in range(0, len(frames), fps):
        scores = [
            score_frame(frames[i], scene, i) for i in range(start, min(len(frames), start + fps))
        ]
        row = {m: float(np.mean([getattr(s, m) for s in scores])) for m in METRICS}
        row["solid"] = float(np.mean([s.solid for s in scores]))
        out.append(row)
    return out


DRIFT_SECONDS = 10  # the parts of a long video whose metric drift compares


def drift(series: list[float], seconds: int = DRIFT_SECONDS) -> float:
    """The paper's drift measure on per-second values: the mean over the last `seconds`
    minus the mean over the first (a third of the video each where it is shorter than three
    times that)."""
    n = max(1, min(seconds, len(series) // 3))
    return float(np.mean(series[-n:]) - np.mean(series[:n]))


def centre(
    frame: np.ndarray, scene: world.Scene, share: float = 0.25
) -> tuple[float, float] | None:
    """Centre (x, y) of the pixels of the object's colour in `frame`, or None where fewer than
    `share` of its area are there (the object gone)."""
    mask = object_pixels(frame, world.COLOURS[scene.colour])
    if mask.sum() < share * world.OBJECT**2:
        return None
    ys, xs = np.nonzero(mask)
    return float(xs.mean() + 0.5), float(ys.mean() + 0.5)


def largest_jump(frames: np.ndarray, scene: world.Scene) -> float:
    """The largest per-frame move of the object's centre over `frames` (F, H, W, 3), in px a
    frame: where the object is missing in between, the move from where it was last seen to
    where it is seen again, over the frames that took (so fading out at one place and in at
    another counts as the jump it is). The world moves it at most SPEED * sqrt(2) < 3."""
    best, last, gap = 0.0, None, 0
    for frame in frames:
        c = centre(frame, scene)
        gap += 1
        if c is None:
            continue
        if last is not None:
            best = max(best, float(np.hypot(c[0] - last[0], c[1] - last[1])) / gap)
        last, gap = c, 0
    return best


def end_state(per_sec: list[dict]) -> dict[str, bool]:
    """The model card's criteria on the last second of `per_second`'s rows: the object
    `present` (one solid shape of its colour in most frames) and `at_goal`."""
    last = per_sec[-1]
    return {"present": last["solid"] >= 0.5, "at_goal": last["position_error"] < AT_GOAL_PX}
