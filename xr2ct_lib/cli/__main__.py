"""``python -m xr2ct_lib.cli`` (and ``accelerate launch -m xr2ct_lib.cli``) runs ``xr2ct``."""

import sys

from xr2ct_lib.cli import main

sys.exit(main())
