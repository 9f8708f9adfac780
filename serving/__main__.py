"""``python -m musicrec.serving``: run the local model server (see ``flags``)."""
import sys

from musicrec.serving.flags import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
