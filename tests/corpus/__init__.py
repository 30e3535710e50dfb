"""The labelled agent-session corpus and its replay harness (load_tests/agent_corpus)."""
