"""Writing results: mesh and picture files (``files``) and a whole result folder (``folder``)."""
