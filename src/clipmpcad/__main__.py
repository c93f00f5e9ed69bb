"""`python -m clipmpcad` hands over to the command line."""

from .cli import main

raise SystemExit(main())
