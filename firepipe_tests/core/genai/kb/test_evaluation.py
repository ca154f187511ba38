"""recall@k and the packaged question set."""

import pytest

from firepipe.core.genai.kb.evaluation import load_questions, percentile_ms, recall_at_k


def test_recall_counts_a_hit_within_the_first_k() -> None:
    ranked = [["a.md", "b.md", "c.md"], ["c.md", "c.md", "a.md"], ["b.md"]]
    expected = ["b.md", "a.md", "c.md"]
    assert recall_at_k(ranked, expected, 1) == 0.0
    assert recall_at_k(ranked, expected, 2) == pytest.approx(1 / 3)
    assert recall_at_k(ranked, expected, 3) == pytest.approx(2 / 3)


def test_recall_needs_one_ranking_per_question() -> None:
    with pytest.raises(ValueError, match="2 rankings for 1 questions"):
        recall_at_k([["a"], ["b"]], ["a"], 5)
    with pytest.raises(ValueError, match="no questions"):
        recall_at_k([], [], 5)


def test_question_set_is_large_and_varied() -> None:
    questions = load_questions()
    assert len(questions) >= 30
    assert len({q.question for q in questions}) == len(questions)
    assert len({q.source for q in questions}) >= 10


def test_percentile_in_milliseconds() -> None:
    assert percentile_ms([0.001, 0.002, 0.003], 50) == pytest.approx(2.0)
