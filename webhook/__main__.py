"""`python -m webhook` runs the podpatterns command line."""

from webhook.cli.commands import main

raise SystemExit(main())
