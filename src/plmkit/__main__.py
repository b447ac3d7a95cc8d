"""``python -m plmkit ...`` is the same as ``plm ...`` (and works under torchrun)."""

import sys

from plmkit.cli.main import main

sys.exit(main())
