"""``python -m ctd.ctdctl.main``."""

from ctd.ctdctl.main.main import main

raise SystemExit(main())
