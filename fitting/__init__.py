"""facefit: one photograph of a face to a detailed, textured 3D face.

Stages (METHOD.md): coarse (3DMM least squares) -> medium (Laplacian
deformation) -> fine (shape from shading). This package ties the others
together: camera, renderer, stages, API and CLI.
"""
__version__ = "0.1.0"
