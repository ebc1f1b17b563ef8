"""Examples of engines built on engine-runtime (serve them with `engine-server examples.MODULE:registry`)."""
