"""The test suite, importable as a package (``tests.factories`` holds the tiny-model builders)."""
