"""``python -m photonkick.server`` runs the photonkick command."""

import sys

from photonkick.server.cli import main

sys.exit(main())
