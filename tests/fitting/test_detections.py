"""Face crops (fitting.detections.crop_face): where the crop runs past the photo's edge."""
from __future__ import annotations

import numpy as np

from fitting.detections import crop_face
from landmarks import REGION_NAMES, FaceMeshDetector, load_image


def test_crop_past_the_photo_edge_is_background(good_photos):
    img = load_image(good_photos[0])
    with FaceMeshDetector() as det:
        face = det.detect_one(img)
    whole = crop_face(img.pixels, face, 256)
    chin_row = int(face.points[:, 1].max())  # the photo cut a little above the chin
    cut_at = chin_row - int(0.08 * (face.points[:, 1].max() - face.points[:, 1].min()))
    cut = crop_face(img.pixels[:cut_at], face, 256)  # the same face, the same crop box

    assert whole.inside.all()  # a face well inside its photo: every crop pixel is real
    np.testing.assert_array_equal(whole.region_labels, crop_face(img.pixels, face, 256).region_labels)
    # crop rows below the photo's last row are outside; rows above it inside
    v_cut = (cut_at - cut.y0) * cut.scale  # the photo's bottom edge in crop pixels
    assert not cut.inside[int(np.ceil(v_cut)) + 1:].any()
    assert cut.inside[:int(v_cut) - 1].all()
    background = REGION_NAMES.index("background")
    assert (cut.region_labels[~cut.inside] == background).all()
    np.testing.assert_array_equal(cut.region_labels[cut.inside], whole.region_labels[cut.inside])
    # the face regions that the photo no longer shows are gone (the chin's skin, at least)
    assert (whole.region_labels[~cut.inside] != background).sum() > 100
