"""Image -> face landmarks (MediaPipe Face Mesh, 478 points) and semantic region masks. Knows no 3D model."""
