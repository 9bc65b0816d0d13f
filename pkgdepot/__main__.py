from pkgdepot.cli import main

raise SystemExit(main())
