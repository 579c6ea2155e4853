from mutator.commands.cli import main

raise SystemExit(main())
