"""facefit: one photograph of a face to a detailed, textured 3D face.

Stages (METHOD.md): coarse (3DMM least squares) -> medium (Laplacian
deformation) -> fine (shape from shading). This package ties the others
together: camera, renderer, stages, API and CLI.

    from fitting import FaceFitter
    result = FaceFitter().fit("photo.jpg")
"""
__version__ = "0.1.0"

# The API pulls in torch, MediaPipe and the model loader; importing a light
# submodule (fitting.camera, fitting.bench) should not, so these load on first use.
_API_NAMES = ("FaceFitter", "FitResult", "FitError")
__all__ = list(_API_NAMES)


def __getattr__(name):
    if name in _API_NAMES:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_API_NAMES))
