"""Analytic ray caster of the synthetic tabletop world (pure numpy).

World frame: the table is the plane z = 0, x points right, y away from the camera,
z up (metres). The camera is fixed (one pinhole, OpenCV convention: x right, y down,
z forward), so everything that depends only on the camera (rays, the table's colour
and depth) is computed once per image size and cached.

Objects are exact analytic solids standing on the table, rotated about the vertical
axis: boxes (cube, brick), capped cylinders, spheres, open cups (hollow cylinders with
a bottom) and bowls (half ellipsoid shells). A ray is intersected with every surface
of an object and the nearest hit wins, which gives exact occlusion between surfaces of
one object (the inside of a cup) and, with a z-buffer, between objects. Rays are only
cast inside each object's projected bounding rectangle, which keeps a 640x480 frame
at a few milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

BASE_SIZE = (640, 480)  # (W, H) of the reference camera
BASE_FOCAL = 525.0  # pixels at BASE_SIZE (a typical RGB-D camera)
CAMERA_POSITION = np.array([0.0, 0.0, 0.46])  # metres, world frame
CAMERA_TARGET = np.array([0.0, 0.40, 0.0])  # the camera looks at this table point
LIGHT_DIR = np.array([0.35, -0.45, 1.0]) / np.linalg.norm([0.35, -0.45, 1.0])  # to the light
AMBIENT = 0.38
EPS = 1e-6


def camera_rotation() -> np.ndarray:
    """R_cw (3, 3): world -> camera rotation; rows are the camera axes in the world frame."""
    forward = CAMERA_TARGET - CAMERA_POSITION
    forward = forward / np.linalg.norm(forward)
    right = np.cross(forward, np.array([0.0, 0.0, 1.0]))
    right = right / np.linalg.norm(right)
    down = np.cross(forward, right)
    return np.stack([right, down, forward])


R_CW = camera_rotation()


def intrinsics(size: tuple[int, int]) -> np.ndarray:
    """K (3, 3) float64 of the fixed camera rendered at size (W, H)."""
    w, h = size
    sx, sy = w / BASE_SIZE[0], h / BASE_SIZE[1]
    return np.array([[BASE_FOCAL * sx, 0.0, w / 2.0], [0.0, BASE_FOCAL * sy, h / 2.0], [0.0, 0.0, 1.0]])


@dataclass(frozen=True)
class Solid:
    """Geometry of one object in its local frame (origin at the base centre, z up).

    shape: "cube" | "brick" | "cylinder" | "ball" | "cup" | "bowl".
    dims: (half_x, half_y, height) for boxes; (radius, radius, height) otherwise.
    """

    shape: str
    dims: tuple[float, float, float]
    wall: float = 0.0  # cup / bowl wall thickness


@lru_cache(maxsize=8)
def camera_rays(size: tuple[int, int]) -> np.ndarray:
    """World-frame ray directions (H, W, 3) scaled so that the ray parameter is camera depth."""
    w, h = size
    k = intrinsics(size)
    u = (np.arange(w) + 0.5 - k[0, 2]) / k[0, 0]
    v = (np.arange(h) + 0.5 - k[1, 2]) / k[1, 1]
    d_cam = np.stack(np.broadcast_arrays(u[None, :], v[:, None], np.ones((h, w))), axis=-1)
    return (d_cam @ R_CW).astype(np.float64)  # d_world = R_cw^T d_cam


@lru_cache(maxsize=8)
def table_geometry(size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Depth (H, W) float32 of the table plane and its world xy (H, W, 2) per pixel."""
    rays = camera_rays(size)
    t = -CAMERA_POSITION[2] / np.minimum(rays[..., 2], -EPS)  # every ray looks down
    xy = CAMERA_POSITION[None, None, :2] + t[..., None] * rays[..., :2]
    return t.astype(np.float32), xy


def table_image(size: tuple[int, int], base_rgb: tuple[float, float, float], grain: float) -> np.ndarray:
    """Shaded table (H, W, 3) float32 in [0, 255]: a wood-like grain plus distance fall-off."""
    depth, xy = table_geometry(size)
    stripes = np.sin(xy[..., 0] * 55.0 + 3.0 * np.sin(xy[..., 1] * 7.0 + xy[..., 0] * 3.0))
    shade = (AMBIENT + (1 - AMBIENT) * LIGHT_DIR[2]) * (1.0 + grain * stripes)
    shade = shade * np.clip(1.15 - 0.25 * depth, 0.7, 1.1)
    return (np.asarray(base_rgb, np.float32)[None, None, :] * shade[..., None]).astype(np.float32)


def rotation_z(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _nearest(candidates: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Nearest of several (t (N,), normal (N, 3)) surface hits; misses are inf."""
    ts = np.stack([c[0] for c in candidates])
    idx = np.argmin(ts, axis=0)
    t = np.take_along_axis(ts, idx[None], axis=0)[0]
    normals = np.stack([c[1] for c in candidates])  # (k, N, 3)
    n = normals[idx, np.arange(len(idx))]
    return t, n


def _valid(t: np.ndarray, ok: np.ndarray) -> np.ndarray:
    return np.where(ok & (t > EPS), t, np.inf)


def _cylinder_side(o, d, r, z0, z1):
    """Both hits of an infinite vertical cylinder of radius r, kept where z0 <= z <= z1."""
    a = d[:, 0] ** 2 + d[:, 1] ** 2
    b = 2 * (o[0] * d[:, 0] + o[1] * d[:, 1])
    c = o[0] ** 2 + o[1] ** 2 - r * r
    disc = b * b - 4 * a * c
    hit = (disc >= 0) & (a > EPS)
    sq = np.sqrt(np.where(hit, disc, 0.0))
    a_safe = np.where(a > EPS, a, 1.0)
    out = []
    for t in ((-b - sq) / (2 * a_safe), (-b + sq) / (2 * a_safe)):
        z = o[2] + t * d[:, 2]
        t = _valid(t, hit & (z >= z0) & (z <= z1))
        p = o[None, :] + t[:, None] * d
        n = np.stack([p[:, 0], p[:, 1], np.zeros_like(t)], -1) / r
        out.append((t, n))
    return out


def _disc(o, d, z, rmin, rmax):
    """Hit of the horizontal annulus at height z with rmin <= radius <= rmax."""
    dz = np.where(np.abs(d[:, 2]) > EPS, d[:, 2], EPS)
    t = (z - o[2]) / dz
    px, py = o[0] + t * d[:, 0], o[1] + t * d[:, 1]
    rr = px * px + py * py
    t = _valid(t, (rr <= rmax * rmax) & (rr >= rmin * rmin))
    n = np.zeros((len(t), 3))
    n[:, 2] = 1.0
    return (t, n)


def _ellipsoid(o, d, center_z, r, zscale, zmax=None):
    """Both hits of a sphere of radius r stretched by zscale in z, optionally cut at z <= zmax."""
    oc = np.array([o[0], o[1], (o[2] - center_z) / zscale])
    ds = d * np.array([1.0, 1.0, 1.0 / zscale])
    a = np.einsum("ij,ij->i", ds, ds)
    b = 2 * ds @ oc
    c = oc @ oc - r * r
    disc = b * b - 4 * a * c
    hit = disc >= 0
    sq = np.sqrt(np.where(hit, disc, 0.0))
    out = []
    for t in ((-b - sq) / (2 * a), (-b + sq) / (2 * a)):
        p = oc[None, :] + t[:, None] * ds
        ok = hit if zmax is None else hit & (p[:, 2] * zscale + center_z <= zmax)
        t = _valid(t, ok)
        n = p * np.array([1.0, 1.0, 1.0 / zscale])
        n = n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), EPS)
        out.append((t, n))
    return out


def _box(o, d, half):
    """Entry hit of an axis-aligned box [-hx,hx] x [-hy,hy] x [0,h] (slab method)."""
    lo = np.array([-half[0], -half[1], 0.0])
    hi = np.array([half[0], half[1], half[2]])
    d_safe = np.where(np.abs(d) > EPS, d, EPS)
    t1 = (lo[None] - o[None]) / d_safe
    t2 = (hi[None] - o[None]) / d_safe
    tmin = np.minimum(t1, t2)
    tmax = np.maximum(t1, t2)
    axis = np.argmax(tmin, axis=1)
    t_near = tmin.max(axis=1)
    t_far = tmax.min(axis=1)
    t = _valid(t_near, t_near <= t_far)
    n = np.zeros((len(t), 3))
    n[np.arange(len(t)), axis] = -np.sign(d_safe[np.arange(len(t)), axis])
    return (t, n)


def intersect_solid(solid: Solid, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ray casting in the object's local frame.

    o: (3,) ray origin; d: (N, 3) directions. Returns t (N,) (inf = miss) and unit
    normals (N, 3) facing the ray.
    """
    hx, hy, h = solid.dims
    if solid.shape in ("cube", "brick"):
        t, n = _box(o, d, (hx, hy, h))
    elif solid.shape == "cylinder":
        t, n = _nearest([*_cylinder_side(o, d, hx, 0.0, h), _disc(o, d, h, 0.0, hx)])
    elif solid.shape == "ball":
        t, n = _nearest(_ellipsoid(o, d, hx, hx, 1.0))
    elif solid.shape == "cup":
        inner = hx - solid.wall
        t, n = _nearest(
            [
                *_cylinder_side(o, d, hx, 0.0, h),
                *_cylinder_side(o, d, inner, solid.wall, h),
                _disc(o, d, h, inner, hx),  # rim
                _disc(o, d, solid.wall, 0.0, inner),  # inner bottom
            ]
        )
    elif solid.shape == "bowl":
        zscale = h / hx  # a half ellipsoid: radius hx, depth h
        inner = hx - solid.wall
        t, n = _nearest(
            [
                *_ellipsoid(o, d, h, hx, zscale, zmax=h),
                *_ellipsoid(o, d, h, inner, (h - solid.wall) / inner, zmax=h),
                _disc(o, d, h, inner, hx),
            ]
        )
    else:
        raise ValueError(f"unknown shape {solid.shape!r}")
    flip = np.einsum("ij,ij->i", n, d) > 0
    n[flip] *= -1.0
    return t, n


def local_corners(solid: Solid) -> np.ndarray:
    """(8, 3) corners of the solid's local bounding box."""
    hx, hy, h = solid.dims
    xs, ys, zs = (-hx, hx), (-hy, hy), (0.0, h)
    return np.array([[x, y, z] for x in xs for y in ys for z in zs])


def project_rect(points_world: np.ndarray, size: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """Pixel rectangle (x0, y0, x1, y1), end-exclusive and clipped, covering the points."""
    k = intrinsics(size)
    pc = (points_world - CAMERA_POSITION) @ R_CW.T
    if np.any(pc[:, 2] <= 0.01):
        return None
    uv = (pc[:, :2] / pc[:, 2:3]) * np.array([k[0, 0], k[1, 1]]) + k[:2, 2]
    w, h = size
    x0 = int(np.clip(np.floor(uv[:, 0].min()) - 1, 0, w))
    x1 = int(np.clip(np.ceil(uv[:, 0].max()) + 2, 0, w))
    y0 = int(np.clip(np.floor(uv[:, 1].min()) - 1, 0, h))
    y1 = int(np.clip(np.ceil(uv[:, 1].max()) + 2, 0, h))
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


@dataclass
class ObjectHits:
    """Where one object is hit inside its pixel rectangle, before occlusion by others.

    rect: (x0, y0, x1, y1); depth: (h, w) float64 camera depth (inf = miss);
    shade: (h, w) Lambert factor.
    """

    rect: tuple[int, int, int, int]
    depth: np.ndarray
    shade: np.ndarray


def cast_object(solid: Solid, position: np.ndarray, yaw: float, size: tuple[int, int]) -> ObjectHits | None:
    """Cast the rays of the object's rectangle; position is the base centre (world, z = 0)."""
    rot = rotation_z(yaw)
    corners = local_corners(solid) @ rot.T + position
    rect = project_rect(corners, size)
    if rect is None:
        return None
    x0, y0, x1, y1 = rect
    d_world = camera_rays(size)[y0:y1, x0:x1].reshape(-1, 3)
    o_local = rot.T @ (CAMERA_POSITION - position)
    d_local = d_world @ rot  # rot^T applied to each row
    t, n_local = intersect_solid(solid, o_local, d_local)
    n_local[~np.isfinite(t)] = 0.0  # misses carry inf * 0 normals
    n_world = n_local @ rot.T
    shade = AMBIENT + (1 - AMBIENT) * np.clip(n_world @ LIGHT_DIR, 0.0, 1.0)
    hh, ww = y1 - y0, x1 - x0
    return ObjectHits(rect, t.reshape(hh, ww), shade.reshape(hh, ww))


def shadow_factor(xy: np.ndarray, position: np.ndarray, radius: float, height: float) -> np.ndarray:
    """Soft contact shadow on the table (values in (0, 1]) cast away from the light."""
    offset = -LIGHT_DIR[:2] / LIGHT_DIR[2] * height * 0.35
    rel = xy - (position[:2] + offset)
    dist = np.sqrt(rel[..., 0] ** 2 + rel[..., 1] ** 2) / (radius * 1.25)
    return 1.0 - 0.35 * np.clip(1.2 - dist, 0.0, 1.0)
