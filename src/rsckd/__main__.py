import sys

from rsckd.cli import main

sys.exit(main())
