from orfs.cli import main

raise SystemExit(main())
