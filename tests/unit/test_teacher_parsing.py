"""Teacher output parsing: valid outputs, every failure code, value spans."""

import json

import pytest

from lantern_batch.schema import DIMENSIONS
from lantern_batch.teacher.parsing import ParseError, parse_output, string_value_span

GOOD = {"fit_label": "Medium", "dimension_scores": {d: 2 for d in DIMENSIONS}, "explanation": "Has Python, lacks Go."}


def test_parses_a_valid_output():
    p = parse_output(json.dumps(GOOD))
    assert p.fit_label == "Medium" and p.explanation == "Has Python, lacks Go."
    assert p.dimension_scores == {d: 2.0 for d in DIMENSIONS}


def test_accepts_object_wrapped_in_prose_and_fences():
    p = parse_output("Sure! ```json\n" + json.dumps({**GOOD, "fit_label": "high"}) + "\n```")
    assert p.fit_label == "High"


@pytest.mark.parametrize("text,finish,reason", [
    ('{"fit_label": "High", "dimension', "length", "truncated"),
    ("no json here", None, "invalid_json"),
    ("[1, 2]", None, "not_an_object"),
    (json.dumps({k: v for k, v in GOOD.items() if k != "explanation"}), None, "missing_key:explanation"),
    (json.dumps({**GOOD, "fit_label": "Great"}), None, "bad_label"),
    (json.dumps({**GOOD, "dimension_scores": {**GOOD["dimension_scores"], "skills": 7}}), None, "bad_score:skills"),
    (json.dumps({**GOOD, "dimension_scores": {**GOOD["dimension_scores"], "domain": True}}), None, "bad_score:domain"),
    (json.dumps({**GOOD, "dimension_scores": "high"}), None, "bad_dimension_scores"),
    (json.dumps({**GOOD, "explanation": "  "}), None, "empty_explanation"),
])
def test_failure_codes(text, finish, reason):
    with pytest.raises(ParseError) as exc:
        parse_output(text, finish_reason=finish)
    assert exc.value.reason == reason
    assert "Python" not in str(exc.value)  # never the output text


def test_explanation_length_limit():
    with pytest.raises(ParseError, match="explanation_too_long"):
        parse_output(json.dumps({**GOOD, "explanation": "x" * 41}), max_explanation_chars=40)


def test_string_value_span_handles_escapes_and_truncation():
    text = '{"fit_label":"High","dimension_scores":{},"explanation":"He said \\"hi\\" there"}'
    s, e = string_value_span(text, "fit_label")
    assert text[s:e] == "High"
    s, e = string_value_span(text, "explanation")
    assert text[s:e] == 'He said \\"hi\\" there'
    s, e = string_value_span('{"explanation": "cut off', "explanation")
    assert e == len('{"explanation": "cut off')
    assert string_value_span("{}", "fit_label") is None
