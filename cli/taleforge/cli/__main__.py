from taleforge.cli.main import main

raise SystemExit(main())
