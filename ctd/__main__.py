from ctd.cli import main

raise SystemExit(main())
