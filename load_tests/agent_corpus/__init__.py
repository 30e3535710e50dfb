"""A labelled corpus of agent sessions (benign tasks and prompt-injection attacks) across mail,
calendar, drive, chat, CRM, web fetch, payments, code hosting and travel tools, and the harness
that replays it through a real gateway with a scripted approver (``python -m
load_tests.agent_corpus``; see load_tests/README.md)."""
