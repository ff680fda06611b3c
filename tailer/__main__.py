"""python -m tailer"""

import sys

from tailer.cli import main

sys.exit(main())
