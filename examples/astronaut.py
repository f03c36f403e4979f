"""Write scikit-image's astronaut (public domain, NASA) as a PNG to fit: ``python examples/astronaut.py [PATH]``."""
import sys
from pathlib import Path

from PIL import Image
from skimage import data

path = Path(sys.argv[1] if len(sys.argv) > 1 else "astronaut.png")
Image.fromarray(data.astronaut()).save(path)
print(path)
