import sys

from .spawner import main

sys.exit(main(sys.argv[1:]))
