import sys

from implicit_slots.cli import main

sys.exit(main())
