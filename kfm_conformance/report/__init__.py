"""Reports: the data model and its writers (JSON, Markdown; JUnit comes from pytest)."""
