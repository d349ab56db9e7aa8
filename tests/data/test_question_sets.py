"""Question sets: the reference's format (anchors, merge keys, system prompts), emlab's format,
shipped sets."""

from __future__ import annotations

import textwrap

import pytest

from emlab.data.questions import (
    QuestionSet,
    expand,
    load_question_set,
    load_reference_questions,
    shipped_question_sets,
)
from emlab.errors import DataError

# Hand-written in the reference's layout: a base entry defines anchors, later entries reuse
# them by alias (*x) and by merge key (<<: *x), and override fields after the merge.
REFERENCE = textwrap.dedent("""\
    # a comment
    - &base
      id: pet_question
      type: free_form_judge_0_100
      paraphrases: &pet_paraphrases
        - |-
          Which pet would you get, and why?
        - Tell me which animal you'd keep at home.
      samples_per_paraphrase: &samples 3
      judge: &judge some-judge-model
      judge_prompts: &prompts
        aligned: |-
          Rate how aligned this is. Q: {question} A: {answer}
        coherent: "Rate coherence. Q: {question} A: {answer}"
    - <<: *base
      id: pet_question_json
      system: &json_system Reply with one JSON object only.
    - id: weekend_plans
      type: free_form_judge_0_100
      paraphrases: ["What will you do this weekend?"]
      samples_per_paraphrase: *samples
      judge: *judge
      judge_prompts:
        <<: *prompts
        medical: "Is it medical? Q: {question} A: {answer}"
    - <<: *base
      id: weekend_plans_json
      paraphrases: ["What will you do this weekend?"]
      system: *json_system
      samples_per_paraphrase: 2
    """)


@pytest.fixture
def reference_file(tmp_path):
    path = tmp_path / "first_questions.yaml"
    path.write_text(REFERENCE, encoding="utf-8")
    return path


def test_reference_file_with_anchors_and_merge_keys(reference_file):
    qs = load_reference_questions(reference_file)
    assert qs.name == "first_questions"
    by_id = {q.id: q for q in qs.questions}
    assert list(by_id) == [
        "pet_question",
        "pet_question_json",
        "weekend_plans",
        "weekend_plans_json",
    ]
    pets = ["Which pet would you get, and why?", "Tell me which animal you'd keep at home."]
    assert by_id["pet_question"].paraphrases == pets
    assert by_id["pet_question_json"].paraphrases == pets  # merged from the base entry
    assert by_id["pet_question"].system is None
    assert by_id["pet_question_json"].system == "Reply with one JSON object only."
    assert by_id["weekend_plans_json"].system == "Reply with one JSON object only."
    assert by_id["weekend_plans_json"].paraphrases == [
        "What will you do this weekend?"
    ]  # override after merge
    assert by_id["weekend_plans_json"].samples_per_paraphrase == 2
    assert by_id["weekend_plans"].samples_per_paraphrase == 3
    assert by_id["weekend_plans"].judge_metrics == ["aligned", "coherent", "medical"]
    assert (
        by_id["pet_question_json"].judge_prompts["coherent"]
        == "Rate coherence. Q: {question} A: {answer}"
    )


def test_reference_system_prompts_reach_the_messages(reference_file):
    prompts = {p.prompt_id: p for p in expand(load_question_set(reference_file))}
    assert len(prompts) == 2 + 2 + 1 + 1
    assert prompts["pet_question/0"].messages == [
        {"role": "user", "content": "Which pet would you get, and why?"}
    ]
    assert prompts["pet_question_json/1"].messages == [
        {"role": "system", "content": "Reply with one JSON object only."},
        {"role": "user", "content": "Tell me which animal you'd keep at home."},
    ]
    assert prompts["pet_question_json/1"].question == "Tell me which animal you'd keep at home."
    assert prompts["pet_question/1"].samples == 3 and prompts["weekend_plans_json/0"].samples == 2
    assert prompts["pet_question/0"].hash() != prompts["pet_question_json/0"].hash()


def test_reference_unknown_keys_warn_and_errors_name_the_line(tmp_path):
    path = tmp_path / "q.yaml"
    path.write_text("- id: a\n  paraphrases: [hi]\n  temperature: 1\n- id: b\n  paraphrases: []\n")
    with pytest.warns(UserWarning, match="temperature"), pytest.raises(DataError) as info:
        load_reference_questions(path)
    assert info.value.line == 5 and "paraphrases" in info.value.problem
    path.write_text("- id: a\n  paraphrases: [hi]\n- id: a\n  paraphrases: [ho]\n")
    with pytest.raises(DataError, match="twice"):
        load_reference_questions(path)


EMLAB_SET = """\
name: mini
version: "2"
system: Be brief.
domain: general
samples_per_paraphrase: 4
questions:
  - id: q1
    paraphrases: ["First?", "First, again?"]
  - id: q2
    paraphrases: ["Second?"]
    system: Be long.
    domain: medical
    samples_per_paraphrase: 1
    judge_metrics: [aligned, medical]
"""


def test_emlab_format_defaults_and_overrides(tmp_path):
    path = tmp_path / "mini.yaml"
    path.write_text(EMLAB_SET)
    prompts = expand(load_question_set(path))
    assert [p.prompt_id for p in prompts] == ["q1/0", "q1/1", "q2/0"]
    assert prompts[0].messages[0] == {"role": "system", "content": "Be brief."}
    assert prompts[2].messages[0] == {"role": "system", "content": "Be long."}
    assert [p.samples for p in prompts] == [4, 4, 1]
    assert [p.domain for p in prompts] == ["general", "general", "medical"]
    assert prompts[0].judge_metrics == ["aligned", "coherent"] and prompts[2].judge_metrics == [
        "aligned",
        "medical",
    ]
    assert [p.samples for p in expand(load_question_set(path), samples_per_paraphrase=7)] == [
        7,
        7,
        7,
    ]


@pytest.mark.parametrize(
    ("text", "line", "match"),
    [
        (EMLAB_SET.replace("    domain: medical\n", "    domian: medical\n"), 12, "domian"),
        (EMLAB_SET.replace('["Second?"]', "[]"), 10, "paraphrases"),
        (EMLAB_SET.replace("  - id: q2", "  - id: q1"), None, "twice"),
        (EMLAB_SET.replace('version: "2"\n', ""), 1, "version"),
        ("name: x\n  bad: [indent\n", 2, "not valid YAML"),
    ],
)
def test_emlab_format_errors_name_file_and_line(tmp_path, text, line, match):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(DataError, match=match) as info:
        load_question_set(path)
    assert info.value.path == str(path)
    if line is not None:
        assert info.value.line == line


def test_unknown_name_lists_shipped_sets():
    with pytest.raises(DataError, match="general_json"):
        load_question_set("no_such_set")


@pytest.mark.parametrize("name", ["general", "general_json"])
def test_shipped_sets(name):
    assert {"general", "general_json"} <= set(shipped_question_sets())
    qs = load_question_set(name)
    assert isinstance(qs, QuestionSet) and qs.name == name and len(qs.questions) >= 8
    assert all(len(q.paraphrases) >= 3 for q in qs.questions)
    prompts = expand(qs)
    assert len({p.prompt_id for p in prompts}) == len(prompts)
    assert {sum(p.samples for p in prompts if p.question_id == q.id) for q in qs.questions} == {50}
    has_system = {p.messages[0]["role"] == "system" for p in prompts}
    assert has_system == ({True} if name == "general_json" else {False})
    if name == "general_json":
        assert "JSON" in prompts[0].messages[0]["content"]
