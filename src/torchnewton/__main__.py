import sys

from torchnewton.bench.cli import main

sys.exit(main())
