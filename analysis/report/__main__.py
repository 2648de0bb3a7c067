"""``python -m analysis.report``: see ``analysis.report.cli``."""

from analysis.report.cli import main

raise SystemExit(main())
