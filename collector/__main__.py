import sys

from collector.service.cli import main

sys.exit(main())
