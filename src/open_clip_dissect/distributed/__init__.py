"""Several processes: the history store sharded across ranks and the global-scope exchange."""
