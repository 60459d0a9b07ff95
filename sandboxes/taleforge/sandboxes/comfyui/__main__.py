"""`python -m taleforge.sandboxes.comfyui`: serve the ComfyUI sandbox in the foreground."""

import sys

from taleforge.sandboxes.comfyui.cli import main

sys.exit(main())
