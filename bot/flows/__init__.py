"""The dialogue's flows, one module each (intake, status, hand-off, satisfaction survey), all
working on a `Turn`: one customer event inside one store transaction."""
