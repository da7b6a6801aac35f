"""coderoom benchmark harness (see bench/README.md)."""
