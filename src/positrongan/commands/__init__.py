"""One module per CLI stage: ``add_arguments(parser)`` and ``run(args, cfg)`` (see positrongan.cli)."""
