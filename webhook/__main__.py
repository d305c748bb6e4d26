"""`python -m webhook` runs the podpatterns command line."""

from webhook.cli import main

raise SystemExit(main())
