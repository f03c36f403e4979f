"""Rendering: the rasteriser (CPU ray casting or nvdiffrast), meshes shaded under SH light, and the
pictures a result shows (overlay, report sheet)."""
