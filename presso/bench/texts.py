"""Real request texts for benchmarks: CoNLL-2003 test sentences, read in place from the data package."""

from __future__ import annotations


def test_sentences(limit: int | None = None) -> list[str]:
    """Test-split sentences as plain text (tokens joined by spaces), file order."""
    from presso.compress.datasets import conll2003_paths, read_conll

    return [" ".join(ex.tokens) for ex in read_conll(conll2003_paths()["test"])[:limit]]
