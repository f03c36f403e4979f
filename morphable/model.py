"""The morphable model as a plain data object, evaluated in torch.

Units: millimetres everywhere in the toolkit. Loaders convert on load (the ICT
model ships in centimetres; see :mod:`morphable.ict`).

Model frame: right-handed, +x toward the subject's left (image right when
seen from the front), +y up, +z out of the face toward a frontal viewer.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Dict, List, Optional

import torch

MM_PER_CM = 10.0


@dataclass
class MorphableModel:
    """A linear face model ``S = mean + id_basis . a_id + exp_basis . a_exp`` (METHOD.md eq. 1).

    Shapes (V vertices, F triangles, T UV coordinates):

    - ``mean``: (V, 3) float32, mm.
    - ``id_basis``: (n_id, V, 3) mm per unit coefficient. For ICT the identity
      coefficients are standard-normal (each basis vector is one standard
      deviation), so ``||a_id||^2`` is the prior.
    - ``exp_basis``: (n_exp, V, 3) mm per unit activation; expression
      activations are blendshape weights in [0, 1].
    - ``triangles``: (F, 3) int64 vertex indices, counter-clockwise seen from
      outside the face.
    - ``uvs``: (T, 2) float32, v up (OBJ convention), u in [0, ``uv_tiles``]
      (UDIM tiles side by side: ICT puts the face on two); ``uv_triangles``:
      (F, 3) int64 into ``uvs``, one row per triangle.
    - ``albedo_mean`` (V, 3) in [0, 1] and ``albedo_basis`` (n_alb, V, 3):
      optional; ICT Light ships none.
    - ``landmark_sets``: name -> (K,) int64 vertex indices (for example
      ``"multipie68"``).
    - ``vertex_sets``: name -> (K,) int64 vertex indices of other named sets
      (for example ``"rigid"``).
    - ``vertex_labels``: (V,) int64 region label per vertex, indexing
      ``label_names``.
    - ``name``: what the model is called (written into every result);
      ``license_name`` / ``license_text``: the file name and text of the notice
      that must travel with meshes derived from it.
    """

    mean: torch.Tensor
    id_basis: torch.Tensor
    exp_basis: torch.Tensor
    triangles: torch.Tensor
    uvs: torch.Tensor
    uv_triangles: torch.Tensor
    exp_names: List[str]
    landmark_sets: Dict[str, torch.Tensor] = field(default_factory=dict)
    vertex_sets: Dict[str, torch.Tensor] = field(default_factory=dict)
    vertex_labels: Optional[torch.Tensor] = None
    label_names: List[str] = field(default_factory=list)
    albedo_mean: Optional[torch.Tensor] = None
    albedo_basis: Optional[torch.Tensor] = None
    source: str = ""
    units: str = "mm"
    name: str = ""
    license_name: str = ""
    license_text: str = ""

    @property
    def n_vertices(self) -> int:
        return int(self.mean.shape[0])

    @property
    def n_triangles(self) -> int:
        return int(self.triangles.shape[0])

    @property
    def n_id(self) -> int:
        return int(self.id_basis.shape[0])

    @property
    def n_exp(self) -> int:
        return int(self.exp_basis.shape[0])

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def forward(self, id_coeffs: Optional[torch.Tensor] = None,
                exp_coeffs: Optional[torch.Tensor] = None,
                batch_size: Optional[int] = None) -> torch.Tensor:
        """Evaluate eq. 1 for a batch.

        ``id_coeffs`` (B, k_id) with k_id <= n_id (the first k_id modes) and
        ``exp_coeffs`` (B, n_exp); either may be None (zeros). Returns
        (B, V, 3) vertices in mm, model frame. Differentiable in both.
        """
        ref = id_coeffs if id_coeffs is not None else exp_coeffs
        if ref is None:
            b = batch_size or 1
            return self.mean.unsqueeze(0).expand(b, -1, -1).clone()
        b = ref.shape[0]
        out = self.mean.unsqueeze(0).expand(b, -1, -1)
        if id_coeffs is not None:
            k = id_coeffs.shape[-1]
            if k > self.n_id:
                raise ValueError(f"{k} identity coefficients given, model has {self.n_id}")
            out = out + torch.einsum("bk,kvc->bvc", id_coeffs.to(self.mean), self.id_basis[:k])
        if exp_coeffs is not None:
            if exp_coeffs.shape[-1] != self.n_exp:
                raise ValueError(f"{exp_coeffs.shape[-1]} expression coefficients given, model has {self.n_exp}")
            out = out + torch.einsum("bk,kvc->bvc", exp_coeffs.to(self.mean), self.exp_basis)
        return out

    __call__ = forward

    @property
    def uv_tiles(self) -> int:
        """How many unit UV tiles the layout spans along u (1 for a plain [0, 1] layout)."""
        return max(1, math.ceil(float(self.uvs[:, 0].max())))

    def uv_atlas(self) -> torch.Tensor:
        """(T, 2) the UVs with u divided by :attr:`uv_tiles`: one [0, 1] atlas for a single texture
        image of ``uv_tiles`` tiles side by side."""
        return self.uvs / torch.tensor([float(self.uv_tiles), 1.0], device=self.uvs.device)

    def to(self, device=None, dtype=None) -> "MorphableModel":
        """A copy with every tensor moved (index tensors keep their dtype)."""
        def mv(t):
            if t is None:
                return None
            if t.is_floating_point():
                return t.to(device=device, dtype=dtype or t.dtype)
            return t.to(device=device)
        return replace(
            self,
            mean=mv(self.mean), id_basis=mv(self.id_basis), exp_basis=mv(self.exp_basis),
            triangles=mv(self.triangles), uvs=mv(self.uvs), uv_triangles=mv(self.uv_triangles),
            landmark_sets={k: mv(v) for k, v in self.landmark_sets.items()},
            vertex_sets={k: mv(v) for k, v in self.vertex_sets.items()},
            vertex_labels=mv(self.vertex_labels),
            albedo_mean=mv(self.albedo_mean), albedo_basis=mv(self.albedo_basis),
        )

    def vertices_with_label(self, name: str) -> torch.Tensor:
        """(K,) indices of the vertices whose region label is ``name``."""
        if self.vertex_labels is None or name not in self.label_names:
            raise KeyError(f"no region label {name!r}; have {self.label_names}")
        return torch.nonzero(self.vertex_labels == self.label_names.index(name)).squeeze(1)

    def summary(self) -> Dict[str, object]:
        return {
            "name": self.name,
            "source": self.source,
            "units": self.units,
            "vertices": self.n_vertices,
            "triangles": self.n_triangles,
            "uv_coordinates": int(self.uvs.shape[0]),
            "identity_modes": self.n_id,
            "expression_modes": self.n_exp,
            "landmark_sets": {k: int(v.numel()) for k, v in self.landmark_sets.items()},
            "vertex_sets": {k: int(v.numel()) for k, v in self.vertex_sets.items()},
            "regions": list(self.label_names),
            "albedo": self.albedo_mean is not None,
        }
