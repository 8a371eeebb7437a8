"""Seeded road-scene layouts: a perspective picture of a drive, as per-pixel maps.

A `DriveLayout(seed, height, width)` holds a procedural world along a road and the
car driving it; `maps(i)` rasterises frame i into `LayoutMaps`:

* `surface` (uint16): index into `surfaces`, the table of what each drawn region is
  (segmentation class, material, object instance, share of diffuse light it sees,
  temperature override, texture amplitude). Class, material and instance maps are
  look-ups through that table, which keeps rasterisation to one map and lets the
  renderer fold per-surface constants into its tables.
* `sun` (float32 in [0, 1]): direct-sun share. On the ground it is the cast-shadow map
  (trees, buildings, poles, vehicles, people), drawn at 1/4 resolution, blurred for
  penumbrae and upsampled; on upright faces it is the face's sun incidence times the
  ground value at the object's foot.
* `texture` (float32, ~1): multiplicative variation so regions are not flat: a
  low-frequency field fixed per seed plus per-frame grain, scaled per surface; the sky
  gets a brightening towards the horizon instead.
* `objects`: detection instances (bike, car, car_stop, color_cone, person) with tight
  boxes of their visible pixels.

Geometry: a pinhole camera `camera_height_m` above a flat ground, world X to the right,
Y up, Z forward. The road centre bends with a slowly varying curvature. The world is
cut into 10 m segments whose content comes from an RNG seeded by (seed, stream,
segment), so it is the same whichever frame looks at it; moving things (oncoming and
leading cars, walkers, cyclists) belong to streams with a common speed. Frame i sees
the world at time i / fps with the car `speed_mps * t` along the road, so dashes
scroll and objects approach and grow.

Boxes are (x0, y0, x1, y1) in pixel-edge coordinates of the layout (the sensor's
filter area): pixel (x, y) is inside when x0 <= x < x1 and y0 <= y < y1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import cached_property

import cv2
import numpy as np

from ..classes import BIKE, CAR, CAR_STOP, COLOR_CONE, OTHER, PERSON, ROAD, ROAD_MARKS, SKY, VEGETATION
from .spectra import AMBIENT_K, MATERIAL_IDS, SKY_MATERIAL

SEGMENT_M = 10.0
Z_NEAR_M = 1.0            # ground polygons are clipped here
DRAW_RANGE_M = (2.5, 250.0)  # upright things drawn between these distances
SHADOW_RANGE_M = (-20.0, 120.0)  # casters considered for shadows
ROAD_FAR_M = 400.0
SUN_MAP_SCALE = 4
MIN_OBJECT_PIXELS = 40
_STATIC, _ONCOMING, _LEADING, _WALKERS, _CYCLISTS = range(5)

# Texture amplitude by material (relative std of the multiplicative field).
_TEXTURE = {"grass": 0.22, "dry_grass": 0.22, "soil": 0.15, "foliage_deciduous": 0.3, "foliage_conifer": 0.3,
            "bark": 0.15, "asphalt": 0.10, "asphalt_worn": 0.12, "brick": 0.1, "sky": 0.0}
_CAR_PAINTS = ("car_paint_white", "car_paint_black", "car_paint_silver", "car_paint_red", "car_paint_blue")
_CAR_PAINT_WEIGHTS = (0.25, 0.2, 0.25, 0.12, 0.18)
_SHIRTS = ("cotton_red", "cotton_light", "cotton_dark", "cotton_denim")
_TROUSERS = ("cotton_denim", "cotton_dark", "cotton_light")


@dataclass(frozen=True)
class Surface:
    """What a drawn region is: the row of the surface table its pixels point to."""

    class_id: int
    material: int
    instance: int = 0           # 1-based index into LayoutMaps.objects, 0 = none
    sky_view: float = 1.0       # share of the diffuse light it receives (upright faces ~0.5)
    temperature_k: float | None = None  # override of the material's (running engines, tyres)
    texture: float = 0.06       # amplitude of the texture field on it


@dataclass(frozen=True)
class SceneObject:
    """A detection instance: class id (DETECTION_CLASSES), visible box, main material.

    Layout boxes are whole pixels; the drive reports the same objects in the cameras'
    common view with fractional boxes.
    """

    class_id: int
    box: tuple[float, float, float, float]
    material: int
    distance_m: float
    instance: int
    pixels: int


@dataclass(frozen=True)
class SceneConditions:
    """Sun and sky for one frame."""

    sun_elevation_deg: float
    sun_azimuth_deg: float  # 0 = ahead, 90 = from the right
    intensity: float
    haze: float


@dataclass(eq=False)
class LayoutMaps:
    surface: np.ndarray       # (h, w) uint16 index into `surfaces`
    sun: np.ndarray           # (h, w) float32 direct-sun share
    texture: np.ndarray       # (h, w) float32 multiplicative texture
    surfaces: tuple[Surface, ...]
    objects: tuple[SceneObject, ...]
    horizon_y: float
    conditions: SceneConditions

    @property
    def shape(self) -> tuple[int, int]:
        return self.surface.shape

    def table(self, name: str, dtype) -> np.ndarray:
        """A Surface field for every surface id, e.g. table('material', np.uint8)."""
        return np.array([getattr(s, name) for s in self.surfaces], dtype=dtype)

    @cached_property
    def class_ids(self) -> np.ndarray:
        return self.table("class_id", np.uint8)[self.surface]

    @cached_property
    def material_ids(self) -> np.ndarray:
        return self.table("material", np.uint8)[self.surface]

    @cached_property
    def instance_ids(self) -> np.ndarray:
        return self.table("instance", np.uint16)[self.surface]


# --- drawing helpers ------------------------------------------------------------------------

def _clip_near(poly: np.ndarray, z_near: float = Z_NEAR_M) -> np.ndarray:
    """Clip a closed (n, 2) polygon of (X, Z) ground points to Z >= z_near."""
    out = []
    n = len(poly)
    for i in range(n):
        a, b = poly[i], poly[(i + 1) % n]
        a_in, b_in = a[1] >= z_near, b[1] >= z_near
        if a_in:
            out.append(a)
        if a_in != b_in:
            t = (z_near - a[1]) / (b[1] - a[1])
            out.append(a + t * (b - a))
    return np.array(out).reshape(-1, 2)


def _convex_hull(points: np.ndarray) -> np.ndarray:
    return cv2.convexHull(points.astype(np.float32)).reshape(-1, 2).astype(np.float64)


def _ellipse_points(cx, cy, rx, ry, n=20) -> np.ndarray:
    a = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    return np.stack([cx + rx * np.cos(a), cy + ry * np.sin(a)], axis=1)


class _View:
    """Pinhole camera over flat ground."""

    def __init__(self, f: float, cx: float, horizon: float, height_m: float):
        self.f, self.cx, self.horizon, self.height_m = f, cx, horizon, height_m

    def project(self, x, y, z) -> np.ndarray:
        x, y, z = np.broadcast_arrays(np.asarray(x, float), np.asarray(y, float), np.asarray(z, float))
        return np.stack([self.cx + self.f * x / z, self.horizon + self.f * (self.height_m - y) / z], axis=-1)

    def ground(self, xz: np.ndarray) -> np.ndarray:
        return self.project(xz[:, 0], 0.0, xz[:, 1])


class _Canvas:
    """The surface map plus the surface table; polygons in full-resolution pixels."""

    def __init__(self, height: int, width: int):
        self.surface = np.zeros((height, width), np.uint16)  # 0 = sky
        self.sun = None
        self.surfaces: list[Surface] = []
        self._ids: dict[Surface, int] = {}
        self.add(Surface(SKY, SKY_MATERIAL, texture=0.0))

    def add(self, s: Surface) -> int:
        if s not in self._ids:
            self._ids[s] = len(self.surfaces)
            self.surfaces.append(s)
        return self._ids[s]

    def fill(self, poly: np.ndarray, s: Surface, sun: float | None = None) -> None:
        if len(poly) < 3:
            return
        pts = [np.round(poly * 16.0).astype(np.int32)]  # 4 fractional bits
        cv2.fillPoly(self.surface, pts, self.add(s), lineType=cv2.LINE_8, shift=4)
        if sun is not None:
            cv2.fillPoly(self.sun, pts, float(sun), lineType=cv2.LINE_8, shift=4)


def _surface(cls: int, material: str, **kw) -> Surface:
    kw.setdefault("texture", _TEXTURE.get(material, 0.06))
    return Surface(cls, MATERIAL_IDS[material], **kw)


@dataclass
class _Part:
    """One upright polygon of a thing, in image pixels, with its surface and facing."""

    poly: np.ndarray
    surface: Surface
    facing: float  # direct-sun incidence of the face, 0..1


@dataclass
class _Piece:
    """What a builder returns: upright parts, ground shadows, detection class, foot."""

    parts: list[_Part]
    shadows: list[tuple[np.ndarray, float]]  # ((n, 2) ground polygon (X, Z), sun share inside)
    det_class: int | None = None
    det_material: int | None = None
    foot: tuple[float, float, float] = (0.0, 0.0, 0.0)  # X, Z, radius of the footprint


@dataclass
class _Thing:
    kind: str
    offset: float     # lateral position of its centre from the road centre (m, right positive)
    z: float          # distance ahead (m)
    stream: int
    rng_state: int    # per-thing seed for its looks
    side: int = 1
    running: bool = False
    oncoming: bool = False
    caster: bool = False  # sized so that its shadow crosses the road
    length: float = 0.0   # extent along the road (buildings)
    x: float = 0.0        # lateral world position, set per frame


# --- the layout ------------------------------------------------------------------------------

class DriveLayout:
    """Procedural road world for one seed; `maps(i)` draws frame i.

    `shadow_amount` (0..1, default drawn from the seed) sets how many tall casters
    stand on the sun side of the road and how far their shadows reach across it:
    0 leaves the road in sun but for vehicles' and people's own shadows, 1 puts most of
    it in shade.
    """

    def __init__(self, seed: int, height: int, width: int, shadow_amount: float | None = None,
                 fps: float = 25.0):
        self.seed, self.height, self.width, self.fps = int(seed), int(height), int(width), float(fps)
        rng = np.random.default_rng([self.seed, 7001])
        u = rng.uniform
        self.shadow_amount = float(u(0.0, 0.9) if shadow_amount is None else np.clip(shadow_amount, 0.0, 1.0))
        # camera and road
        self.focal = width * u(0.66, 0.8)
        self.horizon_frac = u(0.36, 0.46)
        self.camera_height_m = u(1.45, 1.8)
        self.speed_mps = u(8.0, 14.0)
        self.lane_m = u(3.0, 3.7)
        self.road_half_m = self.lane_m + u(0.0, 0.6)
        self.curvature = (u(-0.0015, 0.0015), u(0.0, 0.0015), u(300.0, 900.0), u(0.0, 2 * np.pi))
        self.dash = (u(2.5, 4.0), u(8.0, 12.0))  # dash length, period (m)
        self.centre_paint = "paint_yellow" if u() < 0.2 else "paint_white"
        self.centre_dashed = u() < 0.85
        # sides: index 0 = left (-1), 1 = right (+1)
        self.sidewalk_m = [u(1.5, 3.0) if u() < 0.65 else 0.0 for _ in range(2)]
        self.verge_m = [u(1.0, 8.0) for _ in range(2)]
        self.verge_material = [str(rng.choice(["grass", "grass", "dry_grass", "soil"])) for _ in range(2)]
        self.field_material = str(rng.choice(["grass", "dry_grass", "grass"]))
        self.building_density = [u(0.0, 0.7) if u() < 0.6 else 0.0 for _ in range(2)]
        self.tree_density = [u(0.1, 0.7) for _ in range(2)]
        self.people_density = u(0.05, 0.4)
        self.parked_density = u(0.05, 0.35)
        self.works_density = u(0.0, 0.12)
        self.skyline_urban = u() < 0.4
        self.skyline = rng.uniform(0.0, 1.0, 48)
        # sun: mostly from a side, so trees and buildings shade the road
        side_sun = rng.choice([-1.0, 1.0])
        self.sun_azimuth = float(side_sun * u(35.0, 145.0) if u() < 0.85 else u(-180.0, 180.0))
        self.sun_elevation = u(22.0, 62.0)
        self.haze = u(0.0, 0.5)
        self.light_phases = rng.uniform(0.0, 2 * np.pi, 3)
        self._texture_field = self._low_frequency_field(rng)

    # --- per-frame conditions ---------------------------------------------------------
    def conditions(self, frame_index: int, variation: float = 1.0) -> SceneConditions:
        """Sun elevation drifts slowly, intensity dips as thin clouds pass."""
        t = frame_index / self.fps
        p = self.light_phases
        elevation = self.sun_elevation + variation * 1.5 * math.sin(2 * math.pi * t / 240.0 + p[0])
        cloud = 0.5 + 0.3 * math.sin(2 * math.pi * t / 23.0 + p[1]) + 0.2 * math.sin(2 * math.pi * t / 7.1 + p[2])
        return SceneConditions(elevation, self.sun_azimuth, 1.0 - variation * 0.15 * cloud, self.haze)

    def sun_vector(self, elevation_deg: float) -> np.ndarray:
        """Unit vector towards the sun in world (X right, Y up, Z ahead)."""
        e, a = math.radians(elevation_deg), math.radians(self.sun_azimuth)
        return np.array([math.sin(a) * math.cos(e), math.sin(e), math.cos(a) * math.cos(e)])

    # --- road geometry ------------------------------------------------------------------
    def road_centre(self, z, s: float):
        """Lateral position of the road centre at distance z, for the car at s along the road."""
        k0, k1, period, phase = self.curvature
        z = np.asarray(z, float)
        k = k0 + k1 * np.sin(2 * np.pi * (s + 0.5 * z) / period + phase)
        wander = 0.25 * math.sin(2 * math.pi * s / 170.0 + phase)
        return -0.5 * self.lane_m + wander + 0.5 * k * z * z

    def _strip(self, view, s, u0, u1, z0, z1) -> np.ndarray:
        """Image polygon of the ground strip u0..u1 m from the road centre, z0..z1 ahead."""
        z0 = max(z0, Z_NEAR_M)
        if z1 <= z0:
            return np.zeros((0, 2))
        n = 2 + int(10 * math.log(z1 / z0))
        z = np.geomspace(z0, z1, n)
        c = self.road_centre(z, s)
        xz = np.concatenate([np.stack([c + u0, z], 1), np.stack([c + u1, z], 1)[::-1]])
        return view.ground(xz)

    # --- the world ------------------------------------------------------------------------
    def _stream_speed(self, stream: int) -> float:
        return {_STATIC: 0.0, _ONCOMING: -self.speed_mps * 0.9, _LEADING: self.speed_mps + 1.0,
                _WALKERS: 1.3, _CYCLISTS: 4.5}[stream]

    def _things(self, t: float, s: float) -> list[_Thing]:
        things = []
        for stream in (_STATIC, _ONCOMING, _LEADING, _WALKERS, _CYCLISTS):
            shift = self._stream_speed(stream) * t
            lo, hi = SHADOW_RANGE_M[0] + s - shift, DRAW_RANGE_M[1] + s - shift
            for k in range(math.floor(lo / SEGMENT_M), math.floor(hi / SEGMENT_M) + 1):
                for th in self._segment(stream, k):
                    th.z += shift - s
                    if SHADOW_RANGE_M[0] <= th.z + th.length and th.z <= DRAW_RANGE_M[1]:
                        th.x = float(self.road_centre(max(th.z, 0.0), s)) + th.offset
                        things.append(th)
        return things

    def _segment(self, stream: int, k: int) -> list[_Thing]:
        """The things one 10 m segment of a stream holds: x relative to the road centre."""
        rng = np.random.default_rng([self.seed, stream, k + 2**31])
        u = rng.uniform
        z0 = k * SEGMENT_M
        out = []

        def thing(kind, x, z, **kw):
            out.append(_Thing(kind, x, z, stream, int(rng.integers(2**31)), **kw))

        hw = self.road_half_m
        if stream == _STATIC:
            sun_side = 1 if self.sun_azimuth > 0 else -1
            for i, side in enumerate((-1, 1)):
                edge = hw + self.sidewalk_m[i]
                verge = self.verge_m[i]
                # tall things on the sun side shade the road: shadow_amount sets how many
                caster = side == sun_side
                thin = self.shadow_amount if caster else 1.0
                if caster and u() < self.shadow_amount:
                    if u() < self.building_density[i] + 0.2:
                        thing("building", side * (edge + u(0.3, max(0.4, verge))), z0 + u(0, SEGMENT_M),
                              side=side, caster=True, length=u(8.0, 22.0))
                    else:
                        thing("tree", side * (edge + u(0.3, max(0.4, verge))), z0 + u(0, SEGMENT_M),
                              side=side, caster=True)
                elif u() < self.building_density[i] * 0.5 * thin:
                    thing("building", side * (edge + verge + u(1.0, 4.0)), z0 + u(0, SEGMENT_M), side=side,
                          length=u(8.0, 22.0))
                if u() < self.tree_density[i] * (0.4 if caster else 1.0) * thin:
                    reach = verge + (0.5 if self.building_density[i] > 0 else 6.0)  # stay before the buildings
                    thing("tree", side * (edge + u(0.5, reach)), z0 + u(0, SEGMENT_M), side=side)
                if self.sidewalk_m[i] > 0 and k % 3 == 0:
                    thing("pole", side * (edge - 0.4), z0 + 1.0, side=side)
                if u() < self.parked_density * (1.5 if side > 0 else 0.5):
                    thing("car", side * (hw - 1.05), z0 + u(0, SEGMENT_M - 4.5), side=side)
                    if u() < 0.3:
                        thing("car_stop", side * (hw + 0.2 + self.sidewalk_m[i] * 0.5), z0 + u(0, 8), side=side)
                if u() < self.people_density:
                    thing("person", side * (hw + u(0.5, max(0.6, self.sidewalk_m[i] + 1.0))), z0 + u(0, 10),
                          side=side)
                if u() < self.people_density * 0.4:
                    thing("bike", side * (hw + u(0.4, max(0.5, self.sidewalk_m[i]))), z0 + u(0, 8), side=side)
            if u() < self.works_density:
                x = hw - u(0.3, 1.2)
                for j in range(int(rng.integers(3, 6))):
                    thing("cone", x - 0.15 * j, z0 + 3.0 * j)
        elif stream == _ONCOMING and u() < 0.3:
            thing("car", -self.lane_m * 0.5 + u(-0.3, 0.3), z0 + u(0, 6), running=True, oncoming=True)
        elif stream == _LEADING and u() < 0.05:
            thing("car", self.lane_m * 0.5 + u(-0.3, 0.3), z0 + u(0, 6), running=True)
        elif stream == _WALKERS:
            for side, i in ((-1, 0), (1, 1)):
                if self.sidewalk_m[i] > 0 and u() < self.people_density * 0.5:
                    thing("person", side * (hw + u(0.5, self.sidewalk_m[i])), z0 + u(0, 10), side=side)
        elif stream == _CYCLISTS and u() < 0.04:
            thing("cyclist", hw - u(0.5, 0.9), z0 + u(0, 10), side=1)
        return out

    # --- frame rendering -------------------------------------------------------------------
    def maps(self, frame_index: int, illumination_variation: float = 1.0) -> LayoutMaps:
        h, w = self.height, self.width
        t = frame_index / self.fps
        s = self.speed_mps * t
        cond = self.conditions(frame_index, illumination_variation)
        jitter = np.random.default_rng([self.seed, 7002, frame_index])
        horizon = h * self.horizon_frac + jitter.normal(0.0, 0.0015 * h)  # body pitch
        view = _View(self.focal, w / 2.0, horizon, self.camera_height_m)
        canvas = _Canvas(h, w)
        self._draw_ground(canvas, view, s)
        # buildings stand behind everything else beside the road: draw them first
        things = sorted(self._things(t, s), key=lambda th: (th.kind != "building", -th.z))
        sun_dir = self.sun_vector(cond.sun_elevation_deg)
        with np.errstate(divide="ignore", invalid="ignore"):  # parts of things behind the camera go unused
            built = [(th, self._build(th, view, sun_dir, t)) for th in things]
        low_sun, canvas.sun = self._ground_sun(view, built, sun_dir)
        objects = self._draw_upright(canvas, view, built, low_sun, sun_dir)
        surfaces, objects = self._finish_objects(canvas, objects)
        texture = self._texture(canvas, jitter, horizon)
        return LayoutMaps(canvas.surface, canvas.sun, texture, surfaces, objects, float(horizon), cond)

    def _draw_ground(self, canvas: _Canvas, view: _View, s: float) -> None:
        h, w = canvas.surface.shape
        hz = view.horizon
        canvas.fill(np.array([[-1, hz], [w + 1, hz], [w + 1, h + 1], [-1, h + 1]], float),
                    _surface(VEGETATION, self.field_material))
        # distant tree line or skyline just above the horizon
        xs = np.linspace(-1, w + 1, len(self.skyline))
        tops = hz - (0.005 + 0.04 * self.skyline ** 2) * h
        band = np.concatenate([np.stack([xs, tops], 1), [[w + 1, hz + 2], [-1, hz + 2]]])
        canvas.fill(band, _surface(OTHER, "plaster", sky_view=0.5) if self.skyline_urban
                    else _surface(VEGETATION, "foliage_conifer"))
        hw = self.road_half_m
        for i, side in enumerate((-1, 1)):
            sw, vg = self.sidewalk_m[i], self.verge_m[i]
            canvas.fill(self._strip(view, s, side * (hw + sw), side * (hw + sw + vg), 0, ROAD_FAR_M),
                        _surface(VEGETATION if self.verge_material[i] != "soil" else OTHER, self.verge_material[i]))
            if sw > 0:
                canvas.fill(self._strip(view, s, side * hw, side * (hw + sw), 0, ROAD_FAR_M),
                            _surface(OTHER, "concrete"))
                canvas.fill(self._strip(view, s, side * hw, side * (hw + 0.25), 0, ROAD_FAR_M),
                            _surface(OTHER, "kerb_concrete"))
        canvas.fill(self._strip(view, s, -hw, hw, 0, ROAD_FAR_M), _surface(ROAD, "asphalt"))
        # worn patches, zebra crossings, lines
        first, last = math.floor(s / SEGMENT_M), math.floor((s + 150.0) / SEGMENT_M)
        paint = _surface(ROAD_MARKS, "paint_white")
        for k in range(first, last + 1):
            rng = np.random.default_rng([self.seed, 7003, k + 2**31])
            z = k * SEGMENT_M - s
            if rng.uniform() < 0.35:
                u0 = rng.uniform(-hw, hw - 1.0)
                z0 = z + rng.uniform(0, 6)
                canvas.fill(self._strip(view, s, u0, u0 + rng.uniform(0.5, 2.5), z0, z0 + rng.uniform(2, 8)),
                            _surface(ROAD, "asphalt_worn"))
            if rng.uniform() < 0.03:
                for u0 in np.arange(-hw + 0.3, hw - 0.5, 1.0):
                    canvas.fill(self._strip(view, s, u0, u0 + 0.5, z, z + 3.5), paint)
        for side in (-1, 1):
            canvas.fill(self._strip(view, s, side * (hw - 0.3), side * (hw - 0.15), 0, 250.0), paint)
        centre = _surface(ROAD_MARKS, self.centre_paint)
        length, period = self.dash
        if not self.centre_dashed:
            canvas.fill(self._strip(view, s, -0.075, 0.075, 0, 250.0), centre)
            return
        for k in range(math.floor(s / period) - 1, math.floor((s + 200.0) / period) + 1):
            z0 = k * period - s
            canvas.fill(self._strip(view, s, -0.075, 0.075, z0, z0 + length), centre)

    # --- things -----------------------------------------------------------------------------
    def _build(self, th: _Thing, view: _View, sun_dir: np.ndarray, t: float) -> list[_Piece]:
        rng = np.random.default_rng(th.rng_state)
        built = getattr(self, "_" + th.kind)(th, view, rng, sun_dir, t)
        return built if isinstance(built, list) else [built]

    def _caster_height(self, th: _Thing, sun_dir, margin: float) -> float:
        """Height whose shadow reaches `margin` x the road width past the road centre."""
        reach = abs(th.offset) + self.road_half_m * margin
        return min(25.0, reach * sun_dir[1] / max(abs(sun_dir[0]), 0.05))

    def _shadow_offset(self, sun_dir: np.ndarray, height_m: float) -> np.ndarray:
        """Ground (dX, dZ) of the shadow of a point `height_m` above the ground."""
        horiz = math.hypot(sun_dir[0], sun_dir[2])
        return -np.array([sun_dir[0], sun_dir[2]]) / max(sun_dir[1], 0.05) * height_m if horiz else np.zeros(2)

    def _box_shadow(self, sun_dir, x0, x1, z0, z1, height):
        base = np.array([[x0, z0], [x1, z0], [x1, z1], [x0, z1]])
        return _convex_hull(np.concatenate([base, base + self._shadow_offset(sun_dir, height)]))

    @staticmethod
    def _facing(normal, sun_dir) -> float:
        """Direct irradiance on a face relative to the ground's, clipped to 0..1."""
        return float(np.clip(np.dot(normal, sun_dir) / max(sun_dir[1], 0.1), 0.0, 1.0))

    def _box_parts(self, view, sun_dir, x0, x1, y0, y1, z0, z1, surfaces):
        """Visible faces of an axis-aligned box; surfaces: dict face -> Surface."""
        parts = []
        P = view.project
        if x1 < 0 and "side" in surfaces:    # right face seen from the left
            parts.append(_Part(P([x1, x1, x1, x1], [y0, y1, y1, y0], [z0, z0, z1, z1]), surfaces["side"],
                               self._facing((1, 0, 0), sun_dir)))
        if x0 > 0 and "side" in surfaces:
            parts.append(_Part(P([x0, x0, x0, x0], [y0, y1, y1, y0], [z0, z0, z1, z1]), surfaces["side"],
                               self._facing((-1, 0, 0), sun_dir)))
        if y1 < view.height_m and "top" in surfaces:
            parts.append(_Part(P([x0, x1, x1, x0], [y1, y1, y1, y1], [z0, z0, z1, z1]), surfaces["top"], 1.0))
        parts.append(_Part(P([x0, x1, x1, x0], [y0, y0, y1, y1], [z0, z0, z0, z0]), surfaces["front"],
                           self._facing((0, 0, -1), sun_dir)))
        return parts

    def _tree(self, th, view, rng, sun_dir, t):
        conifer = rng.uniform() < 0.3
        foliage = _surface(VEGETATION, "foliage_conifer" if conifer else "foliage_deciduous")
        trunk_h, crown_r = rng.uniform(1.5, 3.5), rng.uniform(1.8, 3.8)
        if th.caster:
            crown_r = rng.uniform(3.0, 4.5)
            trunk_h = max(trunk_h, self._caster_height(th, sun_dir, 0.6) - crown_r)
        crown_y = trunk_h + crown_r
        x, z = th.x, th.z
        trunk_w = 0.25 + 0.05 * crown_r
        parts = [_Part(view.project([x - trunk_w / 2, x + trunk_w / 2, x + trunk_w / 2, x - trunk_w / 2],
                                    [0, 0, trunk_h + 0.5, trunk_h + 0.5], z), _surface(VEGETATION, "bark"), 0.7)]
        if conifer:
            pts = np.array([[x - crown_r, trunk_h * 0.6], [x, crown_y + crown_r * 1.6], [x + crown_r, trunk_h * 0.6]])
            parts.append(_Part(view.project(pts[:, 0], pts[:, 1], z), foliage, 0.9))
        else:
            for dx, dy, r in ((0, 0, 1.0), (-0.5, -0.3, 0.7), (0.5, -0.2, 0.75), (0.1, 0.5, 0.7)):
                e = _ellipse_points(x + dx * crown_r, crown_y + dy * crown_r, r * crown_r, r * crown_r * 0.9)
                parts.append(_Part(view.project(e[:, 0], e[:, 1], z), foliage, 0.9))
        off = self._shadow_offset(sun_dir, crown_y)
        elong = 1.0 / max(sun_dir[1], 0.2)
        a = math.atan2(off[1], off[0]) if np.any(off) else 0.0
        ang = np.linspace(0, 2 * np.pi, 20, endpoint=False)
        ex, ey = crown_r * elong * np.cos(ang), crown_r * np.sin(ang)
        crown_shadow = np.stack([x + off[0] + ex * math.cos(a) - ey * math.sin(a),
                                 z + off[1] + ex * math.sin(a) + ey * math.cos(a)], 1)
        trunk_end = np.array([x, z]) + self._shadow_offset(sun_dir, trunk_h)
        trunk_shadow = _convex_hull(np.array([[x - trunk_w / 2, z], [x + trunk_w / 2, z],
                                              [trunk_end[0] - trunk_w / 2, trunk_end[1]],
                                              [trunk_end[0] + trunk_w / 2, trunk_end[1]]]))
        return _Piece(parts, [(crown_shadow, 0.12), (trunk_shadow, 0.0)], foot=(x, z, trunk_w))

    def _building(self, th, view, rng, sun_dir, t):
        material = str(rng.choice(["brick", "plaster", "concrete"]))
        height = rng.uniform(6.0, 16.0)
        depth = rng.uniform(8.0, 14.0)
        x_near, x_far = th.x, th.x + th.side * depth
        if th.caster:
            height = max(height, self._caster_height(th, sun_dir, 0.8))
        x0, x1 = min(x_near, x_far), max(x_near, x_far)
        z0, z1 = th.z, th.z + th.length
        shadows = [(self._box_shadow(sun_dir, x0, x1, z0, z1, height), 0.0)]
        z0 = max(z0, DRAW_RANGE_M[0])  # the part already passed is out of view
        if z1 <= z0:
            return _Piece([], shadows)
        wall = _surface(OTHER, material, sky_view=0.5)
        parts = self._box_parts(view, sun_dir, x0, x1, 0.0, height, z0, z1, {"front": wall, "side": wall})
        glass = _surface(OTHER, "glass", sky_view=0.5)
        facade_x = x1 if th.side < 0 else x0
        facing = self._facing((-th.side, 0, 0), sun_dir)
        if facade_x * th.side > 0:  # the facade faces the camera
            for floor_y in np.arange(1.0, height - 2.0, 3.0):
                for wz in np.arange(z0 + 1.5, z1 - 1.5, 3.2):
                    parts.append(_Part(view.project(facade_x, [floor_y, floor_y + 1.5, floor_y + 1.5, floor_y],
                                                    [wz, wz, wz + 1.3, wz + 1.3]), glass, facing))
        return _Piece(parts, shadows)

    def _pole(self, th, view, rng, sun_dir, t):
        x, z, hgt = th.x, th.z, 7.0
        metal = _surface(OTHER, "metal_galvanised", sky_view=0.5)
        parts = [_Part(view.project([x - 0.08, x + 0.08, x + 0.08, x - 0.08], [0, 0, hgt, hgt], z), metal, 0.6),
                 _Part(view.project([x, x - th.side * 1.8, x - th.side * 1.8, x], [hgt, hgt, hgt - 0.15, hgt - 0.15],
                                    z), metal, 0.6)]
        end = np.array([x, z]) + self._shadow_offset(sun_dir, hgt)
        shadow = _convex_hull(np.array([[x - 0.08, z], [x + 0.08, z], [end[0] - 0.08, end[1]],
                                        [end[0] + 0.08, end[1]]]))
        return _Piece(parts, [(shadow, 0.0)], foot=(x, z, 0.1))

    def _car(self, th, view, rng, sun_dir, t):
        paint_name = str(rng.choice(_CAR_PAINTS, p=_CAR_PAINT_WEIGHTS))
        hot = AMBIENT_K + 40.0 if th.running else None
        warm = AMBIENT_K + 22.0 if th.running else None
        x, z = th.x, th.z
        half, length = rng.uniform(0.85, 0.95), rng.uniform(4.0, 4.7)
        inst = dict(sky_view=0.5)
        paint = _surface(OTHER, paint_name, **inst)
        # the bonnet is at the front: warm for oncoming (their front faces us)
        body_front = _surface(OTHER, paint_name, temperature_k=hot if th.oncoming else None, **inst)
        top = _surface(OTHER, paint_name, sky_view=1.0, temperature_k=hot if th.oncoming else None)
        glass = _surface(OTHER, "glass", **inst)
        tyre = _surface(OTHER, "rubber", temperature_k=warm, **inst)
        parts = []
        side_x = x + half if x + half < 0 else (x - half if x - half > 0 else None)
        for wz in (z + 0.6, z + length - 1.3) if side_x is not None else ():  # wheels on the visible side
            parts.append(_Part(view.project(side_x, [0, 0.62, 0.62, 0], [wz, wz, wz + 0.7, wz + 0.7]), tyre, 0.3))
        body = self._box_parts(view, sun_dir, x - half, x + half, 0.3, 1.0, z, z + length,
                               {"front": body_front, "side": paint, "top": top})
        cabin = self._box_parts(view, sun_dir, x - half + 0.12, x + half - 0.12, 1.0, rng.uniform(1.4, 1.55),
                                z + 0.9, z + length - 1.2, {"front": glass, "side": glass, "top": paint})
        parts = body[:-1] + parts + body[-1:] + cabin
        P = view.project
        for wx in (x - half + 0.05, x + half - 0.3):  # wheels under the bumper
            parts.append(_Part(P([wx, wx + 0.25, wx + 0.25, wx], [0, 0, 0.32, 0.32], z + 0.5), tyre, 0.3))
        lamp = _surface(OTHER, "paint_white" if th.oncoming else "car_paint_red", **inst)
        for lx in (x - half + 0.08, x + half - 0.33):
            parts.append(_Part(P([lx, lx + 0.25, lx + 0.25, lx], [0.7, 0.7, 0.85, 0.85], z - 0.01), lamp, 0.5))
        plate = _surface(OTHER, "paint_white", **inst)
        parts.append(_Part(P([x - 0.26, x + 0.26, x + 0.26, x - 0.26], [0.4, 0.4, 0.52, 0.52], z - 0.01), plate, 0.5))
        if th.running and not th.oncoming:  # exhaust
            pipe = _surface(OTHER, "metal_galvanised", temperature_k=AMBIENT_K + 70.0, **inst)
            parts.append(_Part(P([x + 0.4, x + 0.52, x + 0.52, x + 0.4], [0.22, 0.22, 0.3, 0.3], z - 0.01), pipe, 0.3))
        shadow = self._box_shadow(sun_dir, x - half, x + half, z, z + length, 1.45)
        return _Piece(parts, [(shadow, 0.0)], CAR, MATERIAL_IDS[paint_name], (x, z + length / 2, length / 2))

    def _person(self, th, view, rng, sun_dir, t, riding=False):
        hgt = rng.uniform(1.55, 1.9)
        shirt = _surface(OTHER, str(rng.choice(_SHIRTS)), sky_view=0.6)
        trousers = _surface(OTHER, str(rng.choice(_TROUSERS)), sky_view=0.6)
        skin = _surface(OTHER, "skin", sky_view=0.6)
        hair = _surface(OTHER, "cotton_dark", sky_view=0.8)
        x, z = th.x, th.z
        sway = 0.04 * math.sin(2 * math.pi * 1.8 * t + th.rng_state % 7) if th.stream == _WALKERS else 0.0
        hip, shoulder, head_r = 0.53 * hgt, 0.82 * hgt, 0.065 * hgt
        torso_w = 0.19 * hgt
        P = view.project
        leg_bottom = 0.35 * hgt if riding else 0.0
        parts = []
        for sgn in (-1, 1):
            lx = x + sgn * (0.055 * hgt + sway * sgn)
            parts.append(_Part(P([lx - 0.06, lx + 0.06, lx + 0.05, lx - 0.05],
                                 [leg_bottom, leg_bottom, hip + 0.02, hip + 0.02], z), trousers, 0.6))
            ax = x + sgn * (torso_w / 2 + 0.04)
            parts.append(_Part(P([ax - 0.04, ax + 0.04, ax + 0.04, ax - 0.04],
                                 [hip - 0.05, hip - 0.05, shoulder, shoulder], z), shirt, 0.6))
            parts.append(_Part(P(*_ellipse_points(ax, hip - 0.07, 0.04, 0.05, 8).T, z), skin, 0.6))
        parts.append(_Part(P([x - torso_w / 2, x + torso_w / 2, x + torso_w / 2, x - torso_w / 2],
                             [hip, hip, shoulder + 0.02, shoulder + 0.02], z), shirt, 0.6))
        head = _ellipse_points(x, shoulder + 0.03 + head_r * 1.1, head_r * 0.85, head_r * 1.1, 14)
        parts.append(_Part(P(head[:, 0], head[:, 1], z), skin, 0.6))
        cap = _ellipse_points(x, shoulder + 0.03 + head_r * 1.55, head_r * 0.88, head_r * 0.7, 12)
        parts.append(_Part(P(cap[:, 0], cap[:, 1], z), hair, 0.8))
        body = _ellipse_points(x, z, 0.25, 0.18, 12)
        shadow = _convex_hull(np.concatenate([body, body + self._shadow_offset(sun_dir, hgt)]))
        return _Piece(parts, [(shadow, 0.0)], PERSON, MATERIAL_IDS["skin"], (x, z, 0.3))

    def _bike(self, th, view, rng, sun_dir, t, rear_view=False):
        frame_name = str(rng.choice(_CAR_PAINTS))
        frame = _surface(OTHER, frame_name, sky_view=0.6)
        tyre = _surface(OTHER, "rubber", sky_view=0.6)
        x, z = th.x, th.z
        P = view.project
        parts = []
        if rear_view:  # wheel edge-on, saddle and handlebar
            parts.append(_Part(P([x - 0.03, x + 0.03, x + 0.03, x - 0.03], [0, 0, 0.68, 0.68], z), tyre, 0.4))
            parts.append(_Part(P([x - 0.025, x + 0.025, x + 0.025, x - 0.025], [0.6, 0.6, 0.95, 0.95], z), frame, 0.4))
            parts.append(_Part(P([x - 0.3, x + 0.3, x + 0.3, x - 0.3], [0.98, 0.98, 1.03, 1.03], z + 0.9), frame, 0.4))
        else:  # side view in the plane X = x, wheels at z and z + 1.05
            for wz in (z + 0.34, z + 1.39):
                ring = _ellipse_points(wz, 0.34, 0.34, 0.34, 18)
                inner = _ellipse_points(wz, 0.34, 0.28, 0.28, 18)
                parts.append(_Part(P(x, ring[:, 1], ring[:, 0]), tyre, 0.5))
                parts.append(_Part(P(x, inner[:, 1], inner[:, 0]), frame, 0.5))  # spokes blur
            for (za, ya), (zb, yb) in (((z + 0.34, 0.34), (z + 0.8, 0.34)), ((z + 0.8, 0.34), (z + 0.7, 0.85)),
                                       ((z + 0.7, 0.85), (z + 1.3, 0.85)), ((z + 0.8, 0.34), (z + 1.3, 0.85)),
                                       ((z + 1.39, 0.34), (z + 1.3, 1.0))):
                parts.append(_Part(P(x, [ya - 0.03, ya + 0.03, yb + 0.03, yb - 0.03], [za, za, zb, zb]), frame, 0.5))
        return _Piece(parts, [], BIKE, MATERIAL_IDS[frame_name], (x, z + 0.8, 0.9))

    def _cyclist(self, th, view, rng, sun_dir, t):
        """A bike seen from behind with its rider just in front of the rear wheel."""
        bike = self._bike(th, view, rng, sun_dir, t, rear_view=True)
        rider = replace(th, z=th.z - 0.05, stream=_STATIC)
        return [bike, self._person(rider, view, rng, sun_dir, t, riding=True)]

    def _cone(self, th, view, rng, sun_dir, t):
        x, z = th.x, th.z
        P = view.project
        orange, white = _surface(OTHER, "cone_orange", sky_view=0.6), _surface(OTHER, "paint_white", sky_view=0.6)
        parts = [_Part(P([x - 0.2, x + 0.2, x + 0.2, x - 0.2], [0, 0, 0.04, 0.04], z), _surface(OTHER, "rubber"), 0.5),
                 _Part(P([x - 0.15, x + 0.15, x + 0.03, x - 0.03], [0.04, 0.04, 0.7, 0.7], z), orange, 0.6),
                 _Part(P([x - 0.1, x + 0.1, x + 0.07, x - 0.07], [0.3, 0.3, 0.45, 0.45], z), white, 0.6)]
        return _Piece(parts, [], COLOR_CONE, MATERIAL_IDS["cone_orange"], (x, z, 0.2))

    def _car_stop(self, th, view, rng, sun_dir, t):
        block = _surface(OTHER, "car_stop_concrete", sky_view=0.7)
        parts = self._box_parts(view, sun_dir, th.x - 0.8, th.x + 0.8, 0.0, 0.13, th.z, th.z + 0.2,
                                {"front": block, "top": block, "side": block})
        stripe = _surface(OTHER, "paint_yellow", sky_view=0.7)
        for sx in (th.x - 0.55, th.x + 0.25):
            parts.append(_Part(view.project([sx, sx + 0.3, sx + 0.3, sx], [0.01, 0.01, 0.12, 0.12], th.z - 0.005),
                               stripe, parts[-1].facing))
        return _Piece(parts, [], CAR_STOP, MATERIAL_IDS["car_stop_concrete"], (th.x, th.z + 0.1, 0.8))

    # --- sun, objects, texture ---------------------------------------------------------------
    def _ground_sun(self, view: _View, built, sun_dir):
        """(1/4-resolution, full-resolution) soft cast-shadow maps of the ground."""
        h, w = self.height, self.width
        sc = SUN_MAP_SCALE
        low = np.full((-(-h // sc), -(-w // sc)), 1.0 if sun_dir[1] > 0.02 else 0.0, np.float32)
        for _, pieces in built:
            for piece in pieces:
                for poly, value in piece.shadows:
                    poly = _clip_near(poly)
                    if len(poly) >= 3:
                        pts = np.round(view.ground(poly) / sc * 16.0).astype(np.int32)
                        cv2.fillPoly(low, [pts], float(value), lineType=cv2.LINE_8, shift=4)
        low = np.clip(cv2.GaussianBlur(low, (0, 0), 1.2), 0.0, 1.0)  # penumbra
        return low, cv2.resize(low, (w, h), interpolation=cv2.INTER_LINEAR)

    def _sun_at_foot(self, view, low_sun, sun_dir, foot) -> float:
        """Ground sun just outside an object's footprint towards the sun (its own shadow excluded)."""
        x, z, radius = foot
        horiz = np.array([sun_dir[0], sun_dir[2]])
        norm = float(np.hypot(*horiz))
        if norm > 1e-6:
            x, z = np.array([x, z]) + horiz / norm * (radius + 0.5)
        px = view.project(x, 0.0, max(z, Z_NEAR_M)) / SUN_MAP_SCALE
        r = int(np.clip(px[1], 0, low_sun.shape[0] - 1))
        c = int(np.clip(px[0], 0, low_sun.shape[1] - 1))
        return float(low_sun[r, c])

    def _draw_upright(self, canvas: _Canvas, view: _View, built, low_sun, sun_dir):
        """Draw things far to near; returns detection candidates (class, material, z, instance, lo, hi)."""
        objects = []
        h, w = canvas.surface.shape
        for th, pieces in built:
            if th.z + th.length < DRAW_RANGE_M[0] or th.z > DRAW_RANGE_M[1]:
                continue
            for piece in pieces:
                if not piece.parts:
                    continue
                pts = np.concatenate([p.poly for p in piece.parts])
                lo, hi = np.floor(pts.min(0)).astype(int), np.ceil(pts.max(0)).astype(int)
                if hi[0] < 0 or hi[1] < 0 or lo[0] >= w or lo[1] >= h:
                    continue
                instance = 0
                if piece.det_class is not None:
                    instance = len(objects) + 1
                    objects.append((piece.det_class, piece.det_material, th.z, instance, lo, hi))
                ground_sun = self._sun_at_foot(view, low_sun, sun_dir, piece.foot)
                for part in piece.parts:
                    surface = replace(part.surface, instance=instance) if instance else part.surface
                    canvas.fill(part.poly, surface, sun=ground_sun * part.facing)
        return objects

    def _finish_objects(self, canvas: _Canvas, candidates):
        """Tight boxes of visible pixels; objects with too few pixels are dropped and renumbered."""
        h, w = canvas.surface.shape
        inst_lut = np.array([s.instance for s in canvas.surfaces], np.int32)
        renumber = np.zeros(len(candidates) + 1, np.int32)
        objects = []
        for cls, mat, dist, inst, lo, hi in candidates:
            x0, y0 = max(lo[0] - 1, 0), max(lo[1] - 1, 0)
            x1, y1 = min(hi[0] + 2, w), min(hi[1] + 2, h)
            mask = inst_lut[canvas.surface[y0:y1, x0:x1]] == inst
            n = int(mask.sum())
            if n < MIN_OBJECT_PIXELS:
                continue
            rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
            renumber[inst] = len(objects) + 1
            objects.append(SceneObject(cls, (x0 + int(cols[0]), y0 + int(rows[0]), x0 + int(cols[-1]) + 1,
                                             y0 + int(rows[-1]) + 1), mat, float(dist), len(objects) + 1, n))
        surfaces = tuple(replace(s, instance=int(renumber[s.instance])) if s.instance else s
                         for s in canvas.surfaces)
        return surfaces, tuple(objects)

    def _low_frequency_field(self, rng) -> np.ndarray:
        """Zero-mean, unit-std smooth field at 1/8 resolution, fixed per seed."""
        h, w = -(-self.height // 8), -(-self.width // 8)
        coarse = rng.standard_normal((h // 8 + 2, w // 8 + 2)).astype(np.float32)
        field = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
        field += 0.5 * cv2.resize(rng.standard_normal((h // 2 + 1, w // 2 + 1)).astype(np.float32), (w, h),
                                  interpolation=cv2.INTER_LINEAR)
        return (field - field.mean()) / field.std()

    def _texture(self, canvas: _Canvas, rng, horizon: float) -> np.ndarray:
        h, w = canvas.surface.shape
        grain = rng.standard_normal((h // 2 + 1, w // 2 + 1), dtype=np.float32)
        noise = cv2.resize(self._texture_field, (w, h), interpolation=cv2.INTER_LINEAR)
        noise += 0.6 * cv2.resize(grain, (w, h), interpolation=cv2.INTER_LINEAR)
        amp = np.array([s.texture for s in canvas.surfaces], np.float32)[canvas.surface]
        texture = np.maximum(1.0 + amp * noise, 0.2, dtype=np.float32)
        top = int(np.clip(math.ceil(horizon), 0, h))
        rows = np.arange(top, dtype=np.float32)[:, None]
        glow = 1.0 + 0.8 * np.exp(-(horizon - rows) / (0.12 * h))  # brighter towards the horizon
        sky = canvas.surface[:top] == 0
        texture[:top] = np.where(sky, glow, texture[:top])
        return texture
