"""Image-space shape from shading: pure, batched torch on (B, ...) image tensors; no mesh, no model."""
