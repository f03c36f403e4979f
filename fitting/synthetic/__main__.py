import sys

from .faces import main

sys.exit(main())
