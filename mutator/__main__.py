from mutator.cli import main

raise SystemExit(main())
