"""A few-second run of the proxy benchmark, so the harness itself cannot rot (run by CI; no peers)."""

from load_tests.bench_proxy import main

if __name__ == "__main__":
    raise SystemExit(main(["--duration", "2", "--connections", "4"]))
