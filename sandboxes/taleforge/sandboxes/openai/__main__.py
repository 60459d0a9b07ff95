from taleforge.sandboxes.openai.cli import main

raise SystemExit(main())
