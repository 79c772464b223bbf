"""``python -m agent``: the device agent's command line (see :mod:`agent.cli`)."""

import sys

from agent.cli import main

sys.exit(main())
