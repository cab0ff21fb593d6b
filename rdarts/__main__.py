import sys

from rdarts.cli import main

sys.exit(main())
