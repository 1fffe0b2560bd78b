"""d1's format rewards and the shared answer extractors (d1.tasks.formatting)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from d1.tasks.formatting import (
    all_boxed,
    count_xml,
    extract_answer_tag,
    extract_xml_answer,
    find_numbers,
    last_boxed,
    last_number,
    soft_format_ok,
    soft_format_reward,
    strict_format_ok,
    strict_format_reward,
    strip_special_tokens,
)

GOOD = "<reasoning>\nStep one.\nStep two: 3 + 4 = 7.\n</reasoning>\n<answer>\n7\n</answer>\n"
ONE_LINE = "<reasoning>\nThree plus four.\n</reasoning>\n<answer>\n7\n</answer>\n"

# Arbitrary text plus the tag pieces, so that hypothesis also builds near-miss completions.
PIECES = st.sampled_from(
    ["<reasoning>", "</reasoning>", "<answer>", "</answer>", "\n", " ", "7", "x", "\\boxed{", "}"]
)
TEXTS = st.one_of(st.text(), st.lists(st.one_of(PIECES, st.text(max_size=5))).map("".join))


# -- xml count ---------------------------------------------------------------------------------
def test_count_xml_hand_values() -> None:
    assert count_xml(GOOD) == pytest.approx(0.5)
    # no trailing newline: one newline after the tag is free, so the same 0.5
    assert count_xml(GOOD.rstrip("\n")) == pytest.approx(0.5)
    # 5 characters after "\n</answer>\n" cost 0.005 (d1's rule stated in docs/method.md §5)
    assert count_xml(GOOD + "extra") == pytest.approx(0.5 - 0.005)
    # a tag present twice earns nothing for that tag
    assert count_xml("<reasoning>\n<reasoning>\n") == 0.0
    assert count_xml("<reasoning>\nabc\n</reasoning>\n") == pytest.approx(0.25)
    assert count_xml("") == 0.0


def test_count_xml_d1_compat_reproduces_d1_arithmetic() -> None:
    # d1 subtracts len(text after "\n</answer>\n") in the <answer> term and
    # (len(text after "\n</answer>") - 1) in the </answer> term.
    assert count_xml(GOOD, d1_compat=True) == pytest.approx(0.5)
    no_nl = GOOD.rstrip("\n")
    # without a newline after the closing tag, d1's first split keeps the whole text: penalty
    # len(no_nl) * 0.001 there, and -1 * 0.001 (a bonus) in the second term.
    expected = 0.5 - len(no_nl) * 0.001 + 0.001
    assert count_xml(no_nl, d1_compat=True) == pytest.approx(expected)
    assert count_xml(GOOD + "extra", d1_compat=True) == pytest.approx(0.5 - 2 * 0.005)


# -- soft / strict format: the DOTALL regression ----------------------------------------------
def test_multiline_reasoning_earns_format_rewards_dotall_fix() -> None:
    # Regression: d1's regexes lack re.DOTALL, so multi-line reasoning never matched.
    assert soft_format_ok(GOOD) and strict_format_ok(GOOD)
    assert soft_format_reward(GOOD) == 0.5 and strict_format_reward(GOOD) == 0.5
    assert not soft_format_ok(GOOD, d1_compat=True)
    assert not strict_format_ok(GOOD, d1_compat=True)
    # a one-line reasoning matched even in d1
    assert strict_format_ok(ONE_LINE, d1_compat=True)


def test_format_hand_cases() -> None:
    assert soft_format_ok("<reasoning>a</reasoning> <answer>7</answer> trailing")
    assert not soft_format_ok("Sure! <reasoning>a</reasoning><answer>7</answer>")  # not at start
    assert not soft_format_ok("<answer>7</answer><reasoning>a</reasoning>")
    assert not strict_format_ok(GOOD.rstrip("\n"))  # the final newline of the layout is required
    assert not strict_format_ok("<reasoning>a</reasoning>\n<answer>\n7\n</answer>\n")
    assert not strict_format_ok(GOOD + "junk")
    assert strict_format_reward("nothing") == 0.0


@settings(max_examples=100, deadline=None)
@given(text=TEXTS, compat=st.booleans())
def test_format_rewards_never_raise_and_stay_in_range(text: str, compat: bool) -> None:
    xml = count_xml(text, d1_compat=compat)
    assert xml <= 0.5 + 1e-12
    # d1's compat arithmetic can subtract the text length twice (+0.001 bonus)
    floor = -0.001 * len(text) * (2 if compat else 1) - (0.001 if compat else 0.0)
    assert xml >= floor - 1e-12
    assert soft_format_reward(text, d1_compat=compat) in (0.0, 0.5)
    assert strict_format_reward(text, d1_compat=compat) in (0.0, 0.5)


# -- extraction -------------------------------------------------------------------------------
def test_extract_xml_answer_is_d1s() -> None:
    assert extract_xml_answer(GOOD) == "7"
    assert extract_xml_answer("no tags 42 ") == "no tags 42"  # d1: the whole text
    assert extract_xml_answer("<answer> a </answer><answer> b </answer>") == "b"


def test_extract_answer_tag() -> None:
    assert extract_answer_tag(GOOD) == "7"
    assert extract_answer_tag("nothing") is None
    assert extract_answer_tag("<answer>\n12 apples") == "12 apples"  # unclosed: to the end
    assert extract_answer_tag("<answer>\n12", require_close=True) is None
    assert extract_answer_tag("<answer>1</answer> then <answer>2</answer>") == "2"


def test_last_boxed_handles_nesting_space_form_fbox_and_truncation() -> None:
    assert last_boxed(r"so \boxed{\frac{1}{2}} done") == r"\frac{1}{2}"
    assert last_boxed(r"\boxed{1} and \boxed{2}") == "2"
    assert last_boxed(r"\boxed{a{b{c}}d}") == "a{b{c}}d"
    assert last_boxed(r"\boxed 5$ rest") == "5"
    assert last_boxed(r"\fbox{7}") == "7"
    assert last_boxed(r"\boxed {12}") == "12"
    # a box cut off by the generation length: the last *complete* box counts
    assert last_boxed(r"\boxed{3} then \boxed{4") == "3"
    assert last_boxed(r"\boxed{4") is None
    assert last_boxed(r"\boxeds{3}") is None  # another command, not a box
    assert last_boxed("no box") is None
    assert all_boxed(r"\boxed{1}\boxed{}\boxed{x}") == ["1", "", "x"]


def test_last_number_negative_decimal_thousands() -> None:
    assert last_number("temperature is -3 degrees") == "-3"
    assert last_number("5-3") == "3"  # a minus between numbers is subtraction
    assert last_number("costs $1,234.50 total") == "1234.50"
    assert last_number("1,000 apples") == "1000"
    assert last_number("pi is about 3.14.") == "3.14"
    assert last_number("values 3,5,7") == "7"
    assert last_number("x = \u22122") == "-2"  # unicode minus
    assert last_number("no digits") is None
    assert find_numbers("a 1 b -2.5 c 1,000,000") == ["1", "-2.5", "1000000"]


def test_strip_special_tokens_cuts_at_eos() -> None:
    text = "<answer>\n\\boxed{20}\n</answer><|eot_id|>\n\\boxed{0}<|eot_id|><|endoftext|>"
    assert strip_special_tokens(text) == "<answer>\n\\boxed{20}\n</answer>"
    assert strip_special_tokens("a<|start_header_id|>b") == "ab"
    assert strip_special_tokens("plain") == "plain"


@settings(max_examples=100, deadline=None)
@given(text=TEXTS)
def test_extractors_never_raise(text: str) -> None:
    assert isinstance(extract_xml_answer(text), str)
    tag = extract_answer_tag(text)
    assert tag is None or isinstance(tag, str)
    box = last_boxed(text)
    assert box is None or box in text
    num = last_number(text)
    assert num is None or float(num) == float(num)
    assert isinstance(strip_special_tokens(text), str)


# -- the linear-time parsers decide exactly what the reference definitions decide ---------------
MORE_PIECES = st.sampled_from(
    [
        "<reasoning>",
        "</reasoning>",
        "<answer>",
        "</answer>",
        "<reasoning>\n",
        "\n</reasoning>\n<answer>\n",
        "\n</answer>\n",
        "\n</answer>",
        "\\boxed{",
        "\\boxed ",
        "\\fbox{",
        "{",
        "}",
        "\n",
        " ",
        "\t",
        "7",
        "x",
        "$",
    ]
)
TAGGY = st.lists(st.one_of(MORE_PIECES, st.text(max_size=3)), max_size=14).map("".join)


def _all_boxed_reference(text: str) -> list[str]:
    """The former implementation: from each box command, count braces forward (quadratic)."""
    import re

    out = []
    for m in re.finditer(r"\\(?:boxed|fbox)(?![A-Za-z])", text):
        i = m.end()
        while i < len(text) and text[i] in " \t":
            i += 1
        if i < len(text) and text[i] == "{":
            depth = 0
            for j in range(i, len(text)):
                if text[j] == "{":
                    depth += 1
                elif text[j] == "}":
                    depth -= 1
                    if depth == 0:
                        out.append(text[i + 1 : j])
                        break
        elif i > m.end():
            arg = re.match(r"[^\s$]+", text[i:])
            if arg:
                out.append(arg.group(0))
    return out


@settings(max_examples=1000, deadline=None)
@given(text=TAGGY)
def test_linear_parsers_match_their_reference_definitions(text: str) -> None:
    import re

    from d1.tasks.formatting import (
        MAX_BOXES,
        SOFT_FORMAT_PATTERN,
        STRICT_FORMAT_PATTERN,
        first_answer_block,
    )

    for dotall in (True, False):
        flags = re.DOTALL if dotall else 0
        want_soft = re.match(SOFT_FORMAT_PATTERN, text, flags) is not None
        want_strict = re.match(STRICT_FORMAT_PATTERN, text, flags) is not None
        assert soft_format_ok(text, d1_compat=not dotall) == want_soft
        assert strict_format_ok(text, d1_compat=not dotall) == want_strict
    assert all_boxed(text) == _all_boxed_reference(text)[-MAX_BOXES:]
    m = re.search(r"<answer>(.*?)</answer>", text, re.DOTALL)
    assert first_answer_block(text) == (m.group(1) if m else None)


def test_all_boxed_keeps_the_last_boxes_and_is_linear() -> None:
    import time

    text = "".join(f"\\boxed{{{i}}}" for i in range(100))
    assert all_boxed(text) == [str(i) for i in range(36, 100)]  # the last MAX_BOXES = 64
    assert last_boxed("\\boxed{" * 100_000 + "7" + "}" * 100_000) == "7"
    t0 = time.process_time()
    assert all_boxed("\\boxed{" * 100_000) == []  # never closed: the old scan was quadratic
    assert time.process_time() - t0 < 1.0


def test_tail_keeps_the_end() -> None:
    from d1.tasks.formatting import MAX_PARSE_CHARS, tail

    assert tail("abc") == "abc"
    long = "x" * MAX_PARSE_CHARS + "<answer>7</answer>"
    assert tail(long).endswith("<answer>7</answer>") and len(tail(long)) == MAX_PARSE_CHARS
