import sys

from plmkit.cli.main import main

sys.exit(main())
