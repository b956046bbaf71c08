import sys

from longvid.cli import main

sys.exit(main())
