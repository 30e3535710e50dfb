"""One module per tool family; each exposes ``sessions()``: its benign tasks and its attacks."""
