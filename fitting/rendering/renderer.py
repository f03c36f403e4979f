"""Differentiable rasterisation: one interface, a CPU and an nvdiffrast backend.

``Renderer(device)`` gives :meth:`~Renderer.rasterize`, :meth:`~Renderer.interpolate`,
:meth:`~Renderer.texture` and :meth:`~Renderer.antialias`, batched over B
meshes sharing one triangle list. Inputs are camera-space vertices in mm
(+x right, +y up, looking down -z; :mod:`sfs.projection` converts to pixels).

CPU backend (``"cpu"``): which triangle covers which pixel is decided by an
Open3D ``RaycastingScene`` (rays from the camera centre through the pixel
centres, one scene per batch element per call). The barycentrics of the pixel
centre are then recomputed in torch from the projected vertices of the hit
triangle (screen-space edge functions, made perspective-correct with 1/depth),
so gradients reach vertex positions and vertex attributes exactly as through
nvdiffrast's ``interpolate``. Not differentiated: visibility and coverage
(which triangle a pixel sees, the silhouette); there is no antialiasing
either, so silhouette gradients are zero (``antialias`` is a no-op).

nvdiffrast backend (``"cuda"``): ``RasterizeCudaContext`` with clip
coordinates from :func:`sfs.projection.camera_to_ndc_clip` (no image flip),
nvdiffrast's ``interpolate``/``texture``/``antialias``.

Both return the same :class:`Fragments` layout, so the callers never branch.
"""
from __future__ import annotations

import logging
import sys
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from sfs.projection import camera_to_ndc_clip, camera_to_pixel, pixel_to_camera

log = logging.getLogger(__name__)

#: Open3D's "no hit" primitive id.
_INVALID = np.uint32(0xFFFFFFFF)


class Fragments:
    """What a rasterisation produced, per pixel of a (B, H, W) image.

    - ``tri_id``: (B, H, W) int64 triangle index, -1 for background;
    - ``bary``: (B, H, W, 3) perspective-correct barycentrics of the pixel
      centre in the triangle (zeros for background);
    - ``depth``: (B, H, W) mm along -z (0 for background);
    - ``mask``: (B, H, W) bool, covered pixels.

    The CPU backend keeps the covered pixels as a list (``pix``: flat indices
    into B*H*W, ``pix_tri``, ``pix_bary`` (N, 3), ``pix_depth`` (N,)) and
    builds the dense ``bary``/``depth`` only when asked: allocating full-size
    images is a large part of the CPU cost. nvdiffrast's raster outputs
    (``rast``, ``rast_db``, ``clip``) are kept for ``interpolate``/``antialias``.
    """

    def __init__(self, tri_id, tris, bary=None, depth=None, pix=None, pix_tri=None, pix_bary=None,
                 pix_depth=None, rast=None, rast_db=None, clip=None):
        self.tri_id = tri_id
        self.mask = tri_id >= 0
        self.tris = tris
        self._bary, self._depth = bary, depth
        self.pix, self.pix_tri, self.pix_bary, self.pix_depth = pix, pix_tri, pix_bary, pix_depth
        self.rast, self.rast_db, self.clip = rast, rast_db, clip

    @property
    def shape(self):
        return tuple(self.tri_id.shape)

    @property
    def pixels(self) -> torch.Tensor:
        """(N,) flat indices into B*H*W of the covered pixels, ascending: the order
        of packed values (``Renderer.interpolate(..., packed=True)``)."""
        if self.pix is None:
            self.pix = torch.nonzero(self.mask.reshape(-1)).squeeze(1)
        return self.pix

    def gather(self, image: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) -> (N, C) values at the covered pixels (packed)."""
        return image.reshape(-1, image.shape[-1]).index_select(0, self.pixels)

    def scatter(self, values: torch.Tensor) -> torch.Tensor:
        """(N, C) packed per-covered-pixel values -> (B, H, W, C), zeros elsewhere."""
        b, h, w = self.tri_id.shape
        out = values.new_zeros(b * h * w, values.shape[-1]).index_put((self.pixels,), values)
        return out.reshape(b, h, w, -1)

    @property
    def bary(self) -> torch.Tensor:
        if self._bary is None:
            self._bary = self.scatter(self.pix_bary)
        return self._bary

    @bary.setter
    def bary(self, value):
        self._bary = value

    @property
    def depth(self) -> torch.Tensor:
        if self._depth is None:
            self._depth = self.scatter(self.pix_depth[:, None])[..., 0]
        return self._depth

    @depth.setter
    def depth(self, value):
        self._depth = value


_PLOTLY_MODULE = "open3d.visualization.draw_plotly"
_PLOTLY_NAMES = ("get_plotly_fig", "draw_plotly", "draw_plotly_server")


def import_open3d():
    """``import open3d``, without importing plotly and Dash until someone draws with them.

    ``open3d.visualization`` imports its Plotly drawing helpers, which import Dash: measured 1.1 of
    open3d's 1.8 s import on the 2-core machine, paid by every fit for functions we never call. While
    open3d imports, that module is a stand-in whose functions import the real one on first call and
    hand over to it, so a user of ``open3d.visualization.draw_plotly`` in the same process sees no
    difference but the delay.
    """
    if "open3d" in sys.modules:
        return sys.modules["open3d"]
    import importlib
    import types

    def forward(name):
        def call(*args, **kwargs):
            if sys.modules.get(_PLOTLY_MODULE) is stand_in:
                del sys.modules[_PLOTLY_MODULE]
            real = importlib.import_module(_PLOTLY_MODULE)
            return getattr(real, name)(*args, **kwargs)
        call.__name__ = name
        return call

    stand_in = types.ModuleType(_PLOTLY_MODULE, "stand-in: imports open3d's plotly helpers on first use")
    for name in _PLOTLY_NAMES:
        setattr(stand_in, name, forward(name))
    sys.modules.setdefault(_PLOTLY_MODULE, stand_in)
    try:
        import open3d
    finally:
        if sys.modules.get(_PLOTLY_MODULE) is stand_in:   # later imports of it find the real module
            del sys.modules[_PLOTLY_MODULE]
    return open3d


class RendererUnavailable(RuntimeError):
    """The requested backend cannot run here (one line: why, and what to do)."""


def _nvdiffrast_problem() -> Optional[str]:
    """Why the CUDA backend cannot run here, in one line (None: it can).

    Loads nvdiffrast's CUDA plugin, so the first call on a machine compiles it (about 30 s on the
    16-core H200 machine; cached in torch's extensions folder after)."""
    if not torch.cuda.is_available():
        return f"this torch ({torch.__version__}) sees no CUDA GPU; use --device cpu or auto"
    try:
        import nvdiffrast.torch as dr
    except Exception as exc:  # ImportError, or anything its import raises
        why = str(exc).splitlines()[0] if str(exc) else repr(exc)
        return f"needs nvdiffrast (pip install -e '.[cuda]', NVIDIA's non-commercial licence): {why}"
    try:
        _cuda_raster_context(dr)
    except Exception as exc:  # the plugin's compiler or linker failed, or its module did not load
        why = str(exc).splitlines()[0] if str(exc) else repr(exc)
        return (f"nvdiffrast's CUDA plugin did not build or load (it needs nvcc and ninja, and compiles on "
                f"first use): {why}; use --device cpu")
    return None


def _cuda_raster_context(dr):
    """``dr.RasterizeCudaContext()``, with nvdiffrast's JIT-built plugin made importable first.

    nvdiffrast 0.3.3 compiles its plugin with ``torch.utils.cpp_extension.load`` and then imports it by
    name; torch's ``load`` executes the built module without registering it or putting its folder on
    ``sys.path`` (torch 2.11 on the H200 machine: "No module named 'nvdiffrast_plugin_...'" right after a
    successful build), so that import fails. The folder goes on ``sys.path`` before the first load."""
    import nvdiffrast
    from torch.utils import cpp_extension
    name = dr.ops.sanitize_name(f"nvdiffrast_plugin_{nvdiffrast.__version__}_torch{torch.__version__}")
    folder = cpp_extension._get_build_directory(name, False)  # the folder nvdiffrast's load builds into
    if folder not in sys.path:
        sys.path.append(folder)
    return dr.RasterizeCudaContext()


def _nvdiffrast_available() -> bool:
    return _nvdiffrast_problem() is None


def uv_to_grid(uv: torch.Tensor) -> torch.Tensor:
    """(..., 2) texture coordinates (OBJ convention: v = 0 is the bottom row of the
    image) -> ``grid_sample`` coordinates (x = -1 left edge, y = -1 top edge)."""
    return torch.stack([uv[..., 0] * 2 - 1, 1 - uv[..., 1] * 2], -1)


def uv_to_texel(uv: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(..., 2) texture coordinates -> (..., 2) pixel coordinates (u right, v down)
    of a (height, width) texture image; the inverse direction of :func:`uv_to_grid`."""
    return torch.stack([uv[..., 0] * width, (1 - uv[..., 1]) * height], -1)


class Renderer:
    """Rasteriser with a CPU (Open3D + torch) and a CUDA (nvdiffrast) backend.

    ``device``: ``"auto"`` (nvdiffrast when CUDA and ``nvdiffrast.torch`` work,
    else CPU), ``"cpu"`` or ``"cuda"``. ``backend`` is ``"cpu"`` or ``"nvdiffrast"``.
    ``threads``: Open3D ray-casting threads (0 = torch's intra-op thread count, so that one setting,
    ``torch.set_num_threads``, governs a process: a worker given one core keeps to it).
    """

    def __init__(self, device: str = "auto", threads: int = 0):
        if device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', not {device!r}")
        if device == "auto":
            device = "cuda" if _nvdiffrast_available() else "cpu"
        if device == "cuda":
            problem = _nvdiffrast_problem()
            if problem:
                raise RendererUnavailable(f"device 'cuda': {problem}")
            import nvdiffrast.torch as dr  # lazy: optional dependency, CUDA only
            self._dr = dr
            self._ctx = _cuda_raster_context(dr)
            self.backend = "nvdiffrast"
            self.device = torch.device("cuda")
        else:
            self._o3d = import_open3d()
            self.backend = "cpu"
            self.device = torch.device("cpu")
        self.threads = threads
        log.info("renderer backend: %s", self.backend)

    # ------------------------------------------------------------------ rasterize
    def rasterize(self, verts_cam: torch.Tensor, tris: torch.Tensor, intrinsics: torch.Tensor,
                  height: int, width: int) -> Fragments:
        """Rasterise B meshes.

        ``verts_cam`` (B, V, 3) camera-space mm (visible points have z < 0),
        ``tris`` (F, 3) int, ``intrinsics`` (B, 4) fx, fy, cx, cy in pixels.
        Returns :class:`Fragments` of shape (B, height, width). Triangles are
        not culled by orientation; the nearest surface wins.
        """
        if verts_cam.dim() != 3 or intrinsics.shape != (verts_cam.shape[0], 4):
            raise ValueError(f"expected verts (B, V, 3) and intrinsics (B, 4), got {tuple(verts_cam.shape)} "
                             f"and {tuple(intrinsics.shape)}")
        tris = tris.to(device=verts_cam.device, dtype=torch.int64)
        intrinsics = intrinsics.to(verts_cam)
        if self.backend == "nvdiffrast":
            clip = camera_to_ndc_clip(verts_cam, intrinsics, height, width)
            return self._rasterize_clip(clip, verts_cam, tris, height, width)
        screen = camera_to_pixel(verts_cam, intrinsics)  # (B, V, 3) u, v, depth (differentiable)
        k = intrinsics.detach()

        def rays_for(i, rows, cols):
            # camera-space direction through each pixel centre, at depth 1, from the camera's origin
            uv = torch.from_numpy(np.stack([cols + 0.5, rows + 0.5], -1)).to(k)[None]
            d = pixel_to_camera(uv, torch.ones_like(uv[..., 0]), k[i:i + 1])[0]
            rays = np.zeros((rows.size, 6), np.float32)
            rays[:, 3:] = d.cpu().numpy()
            return rays

        return self._rasterize_cpu(verts_cam.detach(), screen, tris, height, width, rays_for)

    def rasterize_pixels(self, points: torch.Tensor, tris: torch.Tensor, height: int, width: int,
                         priority: Optional[torch.Tensor] = None) -> Fragments:
        """Rasterise flat 2-D meshes given directly in pixel coordinates.

        ``points`` (B, V, 2) ``(u, v)`` pixels (u right, v down). Used to bake
        attributes into a texture (pass :func:`uv_to_texel` of the UVs).
        Barycentrics are affine (no perspective); ``depth`` is 1 where covered.
        Where triangles overlap, the one with the larger interpolated
        ``priority`` (B, V) wins (for example the model-frame z, so that the
        front layer of overlapping UV shells is baked); without it the winner
        is unspecified.
        """
        tris = tris.to(device=points.device, dtype=torch.int64)
        ones = torch.ones_like(points[..., :1])
        prio = torch.zeros_like(ones) if priority is None else priority[..., None].to(points).detach()
        if self.backend == "nvdiffrast":
            ndc = torch.stack([points[..., 0] * 2 / width - 1, points[..., 1] * 2 / height - 1], -1)
            # nvdiffrast keeps the smallest z: map the priority into (-1, 1), larger = nearer
            z = -prio / (prio.abs().max() + 1.0)
            clip = torch.cat([ndc, z, ones], -1)
            frags = self._rasterize_clip(clip, None, tris, height, width)
            frags.depth = frags.mask.to(points.dtype)
            return frags
        screen = torch.cat([points, ones], -1)
        # the mesh at height z = priority, seen from above: the first hit has the largest priority
        flat = torch.cat([points.detach(), prio], -1)
        top = float(prio.max()) + 1.0

        def rays_for(i, rows, cols):
            # straight down onto the plane through each pixel centre (filled column by column: an atlas
            # casts millions of rays, and each temporary array cost as much as the ray casting itself)
            rays = np.zeros((rows.size, 6), np.float32)
            rays[:, 0] = cols
            rays[:, 0] += 0.5
            rays[:, 1] = rows
            rays[:, 1] += 0.5
            rays[:, 2] = top
            rays[:, 5] = -1.0
            return rays

        return self._rasterize_cpu(flat, screen, tris, height, width, rays_for)

    # ------------------------------------------------------------------ CPU backend
    def _rasterize_cpu(self, scene_verts, screen, tris, height, width, rays_for) -> Fragments:
        o3d = self._o3d
        b = screen.shape[0]
        hw = height * width
        tris_np = tris.cpu().numpy().astype(np.uint32)
        pix_list, tri_list = [], []
        sd = screen.detach()
        for i in range(b):  # one ray-casting scene per batch element
            front = sd[i, :, 2] > 0
            if not bool(front.any()):
                continue
            # only cast rays inside the projected bounding box of the vertices in front
            uv = sd[i, front, :2]
            c0 = int(max(0, np.floor(float(uv[:, 0].min()))))
            c1 = int(min(width, np.ceil(float(uv[:, 0].max())) + 1))
            r0 = int(max(0, np.floor(float(uv[:, 1].min()))))
            r1 = int(min(height, np.ceil(float(uv[:, 1].max())) + 1))
            if c0 >= c1 or r0 >= r1:
                continue
            rows = np.repeat(np.arange(r0, r1, dtype=np.int64), c1 - c0)
            cols = np.tile(np.arange(c0, c1, dtype=np.int64), r1 - r0)
            scene = o3d.t.geometry.RaycastingScene()
            scene.add_triangles(o3d.core.Tensor.from_numpy(np.ascontiguousarray(
                scene_verts[i].cpu().numpy(), dtype=np.float32)), o3d.core.Tensor.from_numpy(tris_np))
            rays = rays_for(i, rows, cols)  # (N, 6) float32: origin, direction
            hit = scene.cast_rays(o3d.core.Tensor.from_numpy(rays), nthreads=self.threads or torch.get_num_threads())
            prim = hit["primitive_ids"].numpy()
            ok = prim != _INVALID
            pix_list.append(torch.from_numpy(i * hw + rows[ok] * width + cols[ok]))
            tri_list.append(torch.from_numpy(prim[ok].astype(np.int64)))
        dev = screen.device
        pix = torch.cat(pix_list).to(dev) if pix_list else torch.zeros(0, dtype=torch.int64, device=dev)
        tri = torch.cat(tri_list).to(dev) if tri_list else torch.zeros(0, dtype=torch.int64, device=dev)

        # Barycentrics of the pixel centres, in torch so that they carry gradients.
        bidx = pix // hw
        rem = pix % hw
        p = torch.stack([(rem % width).to(screen.dtype) + 0.5, (rem // width).to(screen.dtype) + 0.5], -1)
        nv = screen.shape[1]
        flat_ids = (bidx[:, None] * nv + tris[tri]).reshape(-1)
        corners = screen.reshape(-1, 3).index_select(0, flat_ids).reshape(-1, 3, 3)  # (N, 3, 3) u, v, depth
        a, bb, c = corners[:, 0, :2], corners[:, 1, :2], corners[:, 2, :2]

        def cross(e, f):
            return e[:, 0] * f[:, 1] - e[:, 1] * f[:, 0]

        area = cross(bb - a, c - a)
        # edge-on triangles are never hit by a ray through their interior, but guard the division
        area = torch.where(area.abs() < 1e-12, torch.full_like(area, 1e-12), area)
        l0 = cross(bb - p, c - p) / area
        l1 = cross(c - p, a - p) / area
        l2 = 1 - l0 - l1
        lin = torch.stack([l0, l1, l2], -1)  # screen-space (affine) barycentrics
        w = lin / corners[..., 2]  # perspective correction: 1/depth is affine in screen space
        s = w.sum(-1, keepdim=True)
        bary = w / s
        depth = 1.0 / s[:, 0]

        tri_id = torch.full((b * hw,), -1, dtype=torch.int64, device=dev).index_put((pix,), tri)
        return Fragments(tri_id.reshape(b, height, width), tris, pix=pix, pix_tri=tri, pix_bary=bary,
                         pix_depth=depth)

    # ------------------------------------------------------------------ nvdiffrast backend
    def _rasterize_clip(self, clip, verts_cam, tris, height, width) -> Fragments:
        dr = self._dr
        tri32 = tris.to(torch.int32).contiguous()
        clip = clip.float().contiguous()
        rast, rast_db = dr.rasterize(self._ctx, clip, tri32, resolution=[height, width])
        tri_id = rast[..., 3].long() - 1  # nvdiffrast stores id + 1, 0 = background
        mask = tri_id >= 0
        # nvdiffrast interpolates a = r.x a0 + r.y a1 + (1 - r.x - r.y) a2
        u, v = rast[..., 0], rast[..., 1]
        bary = torch.stack([u, v, 1 - u - v], -1) * mask[..., None]
        if verts_cam is not None:
            d = (-verts_cam[..., 2:3]).float().contiguous()  # depth = -z (see sfs.projection)
            depth = dr.interpolate(d, rast, tri32)[0][..., 0] * mask
        else:
            depth = mask.float()
        return Fragments(tri_id, tris, bary=bary, depth=depth, rast=rast, rast_db=rast_db, clip=clip)

    # ------------------------------------------------------------------ interpolate
    def interpolate(self, attr: torch.Tensor, frags: Fragments, tris: Optional[torch.Tensor] = None,
                    packed: bool = False) -> torch.Tensor:
        """Interpolate vertex attributes at the pixel centres.

        ``attr``: (B, V, C) or (V, C) (shared by the batch). ``tris``: (F, 3)
        attribute triangles, one row per rasterised triangle (for example the
        model's ``uv_triangles`` with ``attr = uvs``); default: the rasterised
        triangles. Returns (B, H, W, C), zeros on background pixels, or with
        ``packed=True`` (N, C) at the covered pixels only (``frags.pixels``
        order; ``frags.scatter`` makes an image of them): per-pixel work such
        as shading then skips the background, which is most of a CPU frame.
        Differentiable w.r.t. ``attr`` and (through the barycentrics) the vertices.
        """
        b, h, w = frags.tri_id.shape
        tris = frags.tris if tris is None else tris.to(device=frags.tri_id.device, dtype=torch.int64)
        if self.backend == "nvdiffrast":
            a = attr if attr.dim() == 3 else attr[None]
            a = a.expand(b, -1, -1).float().contiguous()
            out = self._dr.interpolate(a, frags.rast, tris.to(torch.int32).contiguous())[0]
            return frags.gather(out) if packed else out
        corner_ids = tris[frags.pix_tri]  # (N, 3)
        c = attr.shape[-1]
        if attr.dim() == 3:
            corner_ids = (frags.pix // (h * w))[:, None] * attr.shape[1] + corner_ids
        corners = attr.reshape(-1, c).index_select(0, corner_ids.reshape(-1)).reshape(-1, 3, c)
        vals = (frags.pix_bary.to(corners.dtype)[..., None] * corners).sum(1)
        return vals if packed else frags.scatter(vals)

    # ------------------------------------------------------------------ texture
    def texture(self, tex: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
        """Bilinear texture lookup.

        ``tex`` (B, Ht, Wt, C) image rows top to bottom; ``uv`` (B, H, W, 2) in
        [0, 1] with the OBJ convention (v = 0 is the bottom row of the image).
        Texel centres sit at ((i + 0.5) / Wt, ...); lookups outside clamp to
        the border. Returns (B, H, W, C).
        """
        if self.backend == "nvdiffrast":
            # nvdiffrast's v = 0 is the first row in memory (our top row): flip v
            uvn = torch.stack([uv[..., 0], 1 - uv[..., 1]], -1).float().contiguous()
            return self._dr.texture(tex.float().contiguous(), uvn, filter_mode="linear", boundary_mode="clamp")
        out = F.grid_sample(tex.permute(0, 3, 1, 2), uv_to_grid(uv).to(tex), mode="bilinear",
                            padding_mode="border", align_corners=False)
        return out.permute(0, 2, 3, 1)

    # ------------------------------------------------------------------ antialias
    def antialias(self, color: torch.Tensor, frags: Fragments) -> torch.Tensor:
        """Silhouette antialiasing (nvdiffrast; gives silhouette gradients).

        On the CPU backend this is a documented no-op that returns ``color``.
        """
        if self.backend == "nvdiffrast":
            return self._dr.antialias(color.float().contiguous(), frags.rast, frags.clip,
                                      frags.tris.to(torch.int32).contiguous())
        return color
