import sys

from offline_pretrain.cli import main

sys.exit(main())
