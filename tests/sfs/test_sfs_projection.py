import torch

from sfs.projection import camera_to_pixel, pixel_grid, pixel_to_camera, sample_at_pixels


def test_sample_at_pixel_centres_reads_those_pixels():
    image = torch.rand(2, 5, 7, 3)
    centres = pixel_grid(5, 7).reshape(1, -1, 2).expand(2, -1, -1)
    np_read = sample_at_pixels(image, centres).reshape(2, 5, 7, 3)
    torch.testing.assert_close(np_read, image)
    # halfway between two pixel centres: their mean
    mid = torch.tensor([[[1.0, 0.5]]])  # between columns 0 and 1 of row 0
    torch.testing.assert_close(sample_at_pixels(image[:1], mid)[0, 0], image[0, 0, :2].mean(0))


def test_projection_round_trip():
    k = torch.tensor([[500.0, 520.0, 64.0, 60.0]])
    pts = torch.tensor([[[10.0, -5.0, -400.0], [-30.0, 20.0, -650.0]]])
    uvd = camera_to_pixel(pts, k)
    assert (uvd[..., 2] > 0).all()
    assert uvd[0, 0, 0] > 64 and uvd[0, 0, 1] > 60  # +x right -> u right, -y -> v down
    torch.testing.assert_close(pixel_to_camera(uvd[..., :2], uvd[..., 2], k), pts)
