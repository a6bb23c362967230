import sys

from offline_tuning.cli import main

sys.exit(main())
