"""Registration check (spec N11): align a capture of the painting with the mask applied to the
original capture and report the residual in micrometres."""

from __future__ import annotations

from typing import Any, Mapping, Optional
import numpy as np

from .detect import lab_of
from .scale import Scale

from .settings import MOTIONS, SETTINGS


def registration_summary(result: Mapping[str, Any]) -> dict:
    """A :func:`registration_check` result without its residual map: what the record and the node's JSON keep
    (``warp``, ``shift_px``, ``rms_um``, ``max_um``, ``scale``, ...)."""
    return {k: v for k, v in result.items() if k != "residual"}


def registration_check(capture: np.ndarray, original: np.ndarray, dpi: "float | Scale", motion: str = "homography",
                       max_side: int = 1024, iters: int = 200, eps: float = 1e-6,
                       exclude: Optional[np.ndarray] = None) -> dict:
    """ECC alignment (OpenCV) on L*.

    Args:
        capture, original: (H, W, 3) float32 sRGB of the same size.
        exclude: optional (H, W) bool, pixels of the original to ignore (the damage: it is hidden in a
            capture with the mask applied, and would bias the alignment towards zero shift).
    Returns dict: ``warp`` (3x3, maps original px -> capture px, full resolution), ``shift_px``
    (warp displacement at the image centre), ``rms_um`` / ``max_um`` of the warp displacement over
    the image, ``residual`` (H', W') float32 |L* difference| after alignment at analysis scale,
    ``scale``.
    """
    import cv2
    SETTINGS["motion"].check(motion)
    if capture.shape != original.shape:
        raise ValueError(f"capture has size {capture.shape}; the original is {original.shape}")
    h, w = original.shape[:2]
    s = min(1.0, max_side / max(h, w))
    size = (max(8, int(round(w * s))), max(8, int(round(h * s))))
    a = cv2.resize(np.ascontiguousarray(lab_of(original)[..., 0]), size, interpolation=cv2.INTER_AREA) / 100
    b = cv2.resize(np.ascontiguousarray(lab_of(capture)[..., 0]), size, interpolation=cv2.INTER_AREA) / 100
    mode = {"translation": cv2.MOTION_TRANSLATION, "euclidean": cv2.MOTION_EUCLIDEAN,
            "affine": cv2.MOTION_AFFINE, "homography": cv2.MOTION_HOMOGRAPHY}[motion]
    warp: Any = np.eye(3, dtype=np.float32) if motion == "homography" else np.eye(2, 3, dtype=np.float32)
    crit = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, iters, eps)
    tmask: Any = None
    if exclude is not None:
        if exclude.shape != original.shape[:2]:
            raise ValueError(f"exclude mask has size {exclude.shape}; the original is {original.shape[:2]}")
        ex = cv2.dilate(exclude.astype(np.uint8), np.ones((5, 5), np.uint8))
        tmask = (cv2.resize(ex, size, interpolation=cv2.INTER_NEAREST) == 0).astype(np.uint8)
    try:
        _, warp = cv2.findTransformECC(a.astype(np.float32), b.astype(np.float32), warp, mode, crit, tmask, 5)
    except cv2.error as exc:
        raise ValueError(f"registration did not converge ({exc.msg if hasattr(exc, 'msg') else exc}); "
                         "are the two captures of the same object?") from None
    W = np.eye(3)
    W[:warp.shape[0]] = warp
    S = np.diag([s, s, 1.0])
    Wf = np.linalg.inv(S) @ W @ S  # full-resolution warp: capture(x') = original(x) with x' = W x
    if motion == "homography":
        aligned = cv2.warpPerspective(b, W.astype(np.float32), size, flags=cv2.INTER_LINEAR + cv2.WARP_INVERSE_MAP)
    else:
        aligned = cv2.warpAffine(b, W[:2].astype(np.float32), size, flags=cv2.INTER_LINEAR + cv2.WARP_INVERSE_MAP)
    yy, xx = np.mgrid[0:h:max(1, h // 64), 0:w:max(1, w // 64)]
    pts = np.stack([xx.ravel(), yy.ravel(), np.ones(xx.size)])
    q = Wf @ pts
    q = q[:2] / q[2:]
    d = np.hypot(q[0] - pts[0], q[1] - pts[1])
    um = 1000.0 * Scale.of(dpi).mm_per_px
    c = Wf @ np.array([w / 2, h / 2, 1.0])
    return {"warp": Wf.tolist(), "shift_px": [float(c[0] / c[2] - w / 2), float(c[1] / c[2] - h / 2)],
            "rms_um": float(np.sqrt((d ** 2).mean()) * um), "max_um": float(d.max() * um),
            "residual": np.abs(aligned - a).astype(np.float32) * 100, "scale": s, "motion": motion}
