"""`python -m latentstore`: the command line, the same as the `latentstore` script."""
from .commands.cli import main

if __name__ == "__main__":
    main()
