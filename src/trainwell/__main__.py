"""``python -m trainwell`` (and ``torchrun -m trainwell``)."""

import sys

from trainwell.cli import main

sys.exit(main())
