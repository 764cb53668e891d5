from bertwwm.cli import main

raise SystemExit(main())
