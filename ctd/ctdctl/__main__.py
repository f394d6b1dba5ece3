"""``python -m ctd.ctdctl``."""

from ctd.ctdctl.main import main

raise SystemExit(main())
