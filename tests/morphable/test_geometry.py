"""morphable.geometry: values carried over a surface from the vertices that have them."""
import torch

from morphable.geometry import carry_over_surface, mesh_edges


def _grid(n: int = 41, spacing_mm: float = 1.0):
    """An n x n vertex grid in the z = 0 plane, ``spacing_mm`` apart, two triangles per cell."""
    ys, xs = torch.meshgrid(torch.arange(n, dtype=torch.float64), torch.arange(n, dtype=torch.float64), indexing="ij")
    verts = torch.stack([xs.flatten(), ys.flatten(), torch.zeros(n * n, dtype=torch.float64)], -1) * spacing_mm
    i = torch.arange(n - 1)
    corner = (i[:, None] * n + i[None, :]).flatten()
    tris = torch.cat([torch.stack([corner, corner + 1, corner + n + 1], 1),
                      torch.stack([corner, corner + n + 1, corner + n], 1)])
    return verts[None], tris, xs.flatten()


def test_mesh_edges_lists_each_edge_once():
    tris = torch.tensor([[0, 1, 2], [2, 1, 3]])
    assert mesh_edges(tris).tolist() == [[0, 1], [0, 2], [1, 2], [1, 3], [2, 3]]


def test_carry_continues_the_edge_values_and_fades_them_out_over_the_reach():
    verts, tris, x = _grid()
    known = (x <= 10)[None]
    values = torch.where(known, 2.0 + 0.01 * verts[..., 1], torch.full_like(x[None], 99.0))  # 99: never read
    out = carry_over_surface(values, known, verts, tris, reach_mm=20.0)
    torch.testing.assert_close(out[known], values[known])
    row = out[0].view(41, 41)[20]  # along x, at y = 20 mm: known up to x = 10
    assert abs(float(row[11]) - float(row[10])) < 0.05 * float(row[10])  # no step at the edge
    assert (row[10:31].diff() <= 1e-12).all()  # fading monotonically
    assert 0.3 * float(row[10]) < float(row[20]) < 0.7 * float(row[10])  # half way: about half
    assert (row[31:] == 0).all()  # past the reach nothing moves
    assert float(out.max()) < 3.0  # the unknown vertices' own values were never used


def test_carry_leaves_a_part_the_known_vertices_do_not_reach_at_zero():
    verts, tris, x = _grid(11)
    other = verts + torch.tensor([100.0, 0.0, 0.0], dtype=torch.float64)  # a second, unconnected grid
    both = torch.cat([verts, other], 1)
    tris2 = torch.cat([tris, tris + verts.shape[1]])
    known = torch.cat([torch.ones(121, dtype=torch.bool), torch.zeros(121, dtype=torch.bool)])[None]
    out = carry_over_surface(torch.full((1, 242), 5.0, dtype=torch.float64), known, both, tris2, reach_mm=50.0)
    assert (out[0, :121] == 5.0).all() and (out[0, 121:] == 0).all()


def test_mesh_edges_are_each_undirected_edge_once_in_lexicographic_order():
    tris = torch.randint(0, 50, (200, 3), generator=torch.Generator().manual_seed(0))
    e = torch.cat([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]])
    expected = torch.unique(torch.sort(e, dim=1).values, dim=0)  # the rows' own unique
    assert torch.equal(mesh_edges(tris), expected)
    assert torch.equal(mesh_edges(torch.tensor([[0, 1, 2]])), torch.tensor([[0, 1], [0, 2], [1, 2]]))
