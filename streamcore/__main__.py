import sys

from streamcore.cli import main

sys.exit(main())
