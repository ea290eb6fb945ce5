"""``python -m trainwell`` (and ``torchrun -m trainwell``)."""

import sys

from torch.distributed.elastic.multiprocessing.errors import record

from trainwell.cli import main

# ``record`` writes an uncaught exception to the file torchrun names (TORCHELASTIC_ERROR_FILE), so the
# torchrun summary shows the failing rank's traceback; without torchrun it only enables faulthandler.
sys.exit(record(main)())
