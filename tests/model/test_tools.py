"""The sandboxed expression tool and the sampler hook that runs it."""

import time

import pytest

from components.io.chat import TOOL_CALL, TOOL_CALL_END, TOOL_RESULT, TOOL_RESULT_END
from components.model.tools import ToolLimits, ToolRunner, evaluate_expression
from components.tokenizer.bpe import TokenizerConfig, encode_batch, train_tokenizer
from components.tokenizer.chat import ChatTokens, render, tool_result_ids


@pytest.mark.parametrize(
    "source, expected",
    [
        ("23 + 48", "71"),
        ("23+48", "71"),
        ("95 - 37", "58"),
        ("47 * 6", "282"),
        ("-3 * -4", "12"),
        ("+5", "5"),
        ("7 / 2", "3.5"),
        ("7 // 2", "3"),
        ("-7 // 2", "-4"),
        ("7 % 3", "1"),
        ("2 ** 10", "1024"),
        ("2 ** -1", "0.5"),
        ("(1 + 2) * (3 + 4)", "21"),
        ("'strawberry'.count('r')", "3"),
        ("'Mississippi'.lower().count('s')", "4"),
        ("'abc'.upper()", "'ABC'"),
        ("len('banana')", "6"),
        ("len('ab' + 'cd')", "4"),
        ("'banana'[0]", "'b'"),
        ("'banana'[-1]", "'a'"),
        ("'banana'[1:4]", "'ana'"),
        ("'banana'[::2]", "'bnn'"),
        ("'ab' * 3", "'ababab'"),
        ("3 * 'ab'", "'ababab'"),
        ("'banana'.count('an')", "2"),
        ("  12 + 1  ", "13"),
    ],
)
def test_allowed_expressions_give_pythons_value(source, expected):
    assert evaluate_expression(source) == expected


@pytest.mark.parametrize(
    "source, message",
    [
        # names, attributes and calls beyond the whitelist
        ("().__class__.__bases__[0].__subclasses__()", "error: "),
        ("'a'.__class__", "error: Attribute is not allowed"),
        ("__import__('os').system('echo hi')", "error: system is not an allowed function"),
        ("__import__('os')", "error: __import__ is not an allowed function"),
        ("open('/etc/passwd')", "error: open is not an allowed function"),
        ("eval('1+1')", "error: eval is not an allowed function"),
        ("exec('x=1')", "error: exec is not an allowed function"),
        ("'abc'.format(1)", "error: format is not an allowed function"),
        ("'a'.join('bc')", "error: join is not an allowed function"),
        ("x + 1", "error: Name is not allowed"),
        ("len", "error: Name is not allowed"),
        ("len('a', 'b')", "error: len takes one argument"),
        ("len(s='a')", "error: keyword and * arguments are not allowed"),
        ("len(*'a')", "error: keyword and * arguments are not allowed"),
        ("len(5)", "error: len needs a string, got int"),
        ("'abc'.count(1)", "error: .count needs a string, got int"),
        # other syntax
        ("lambda: 1", "error: Lambda is not allowed"),
        ("[c for c in 'abc']", "error: ListComp is not allowed"),
        ("(x := 5)", "error: NamedExpr is not allowed"),
        ("1 if 1 else 2", "error: IfExp is not allowed"),
        ("1 < 2", "error: Compare is not allowed"),
        ("[1, 2]", "error: List is not allowed"),
        ("f'{1}'", "error: JoinedStr is not allowed"),
        ("True + 1", "error: bool values are not allowed"),
        ("None", "error: NoneType values are not allowed"),
        ("b'abc'", "error: bytes values are not allowed"),
        ("1j", "error: complex values are not allowed"),
        ("1.5 + 1", "error: float literals are not allowed (write a division)"),
        ("~5", "error: UnaryOp is not allowed"),
        ("not 1", "error: UnaryOp is not allowed"),
        ("1 << 100", "error: BinOp is not allowed"),
        ("x = 1", "error: not an expression (invalid syntax)"),
        ("import os", "error: not an expression (invalid syntax)"),
        ("", "error: not an expression (invalid syntax)"),
        ("1 +", "error: not an expression (invalid syntax)"),
        ("1\x00", "error: not an expression (source code string cannot contain null bytes)"),
        # arithmetic that fails
        ("1 / 0", "error: division by zero"),
        ("5 % 0", "error: division by zero"),
        ("(-8) ** (1 // 3 + 1 / 3)", "error: result is not a real number"),
        ("'ab' - 'a'", "error: - is not defined for these operands"),
        ("'ab' * 'a'", "error: * is not defined for these operands"),
        ("-'a'", "error: unary minus needs a number, got a string"),
        ("'abc'[5]", "error: index 5 is out of range for a string of length 3"),
        ("'abc'['a']", "error: an index needs an integer, got str"),
        ("'abc'[::0]", "error: slice step cannot be zero"),
        ("5[0]", "error: indexing needs a string, got int"),
    ],
)
def test_refused_calls_are_error_texts_not_exceptions(source, message):
    assert evaluate_expression(source).startswith(message)


def test_sizes_exponents_and_nesting_are_bounded_before_the_work():
    lim = ToolLimits()
    started = time.perf_counter()
    assert evaluate_expression("9 ** 9 ** 9") == f"error: exponent larger than {lim.max_exponent}"
    assert evaluate_expression("10 ** 100") == f"error: integer larger than 2**{lim.max_int_bits}"
    assert evaluate_expression("2 ** 255").isdigit()  # the largest power of two that fits
    assert evaluate_expression("2 ** 256") == f"error: integer larger than 2**{lim.max_int_bits}"
    big = "9" * 70
    assert evaluate_expression(f"{big} * {big}") == f"error: integer larger than 2**{lim.max_int_bits}"
    assert evaluate_expression("9" * 100) == f"error: integer larger than 2**{lim.max_int_bits}"
    assert evaluate_expression("(10 ** 70 / 3) ** 200").startswith("error: ")  # float overflow
    assert (
        evaluate_expression("'a' * 10 ** 9") == f"error: string longer than {lim.max_string_chars} characters"
    )
    assert evaluate_expression("'a' * 200 + 'b' * 100").startswith("error: string longer than")
    assert (
        evaluate_expression("'" + "a" * 300 + "'")
        == f"error: expression longer than {lim.max_expression_chars} characters"
    )
    assert evaluate_expression("-" * 20 + "1") == f"error: expression nested deeper than {lim.max_depth}"
    assert evaluate_expression("(" * 100 + "1" + ")" * 100) == "1"  # parentheses make no nodes
    assert evaluate_expression("(" * 1000 + "1" + ")" * 1000).startswith("error: expression longer than")
    assert evaluate_expression("+".join(["1"] * 40)) == "error: expression has 119 parts, more than 64"
    assert time.perf_counter() - started < 5  # nothing above did the huge work (a generous bound)
    # A long but allowed result is cut for the context.
    assert evaluate_expression("'ab' * 100", ToolLimits(max_result_chars=10)) == "'ababababa..."


def test_the_time_budget_is_enforced():
    assert evaluate_expression("1 + 1", ToolLimits(max_seconds=-1.0)) == "error: took longer than -1.0 s"


# --- the hook --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tok():
    texts = ["Let me count the letters in strawberry and banana. 23 + 48 = 71, the answer is 71."] * 20
    return train_tokenizer(texts, TokenizerConfig(vocab_size=300))


def test_the_hook_runs_the_call_and_returns_the_templates_result_ids(tok):
    special = ChatTokens.of(tok)
    runner = ToolRunner(tok)
    call = encode_batch(tok, ["'strawberry'.count('r')"], append_eot=False)[0]
    prefix = encode_batch(tok, ["Let me count. "], append_eot=False)[0]
    tokens = [*prefix, special.tool_call, *call]
    assert runner.after_token(tokens) is None  # the call is not closed yet
    injected = runner.after_token([*tokens, special.tool_call_end])
    assert injected == tool_result_ids(tok, "3")
    assert injected[0] == special.tool_result and injected[-1] == special.tool_result_end
    assert runner.calls == 1
    # The same ids the template renders for a conversation that contains this call and result.
    content = (
        f"Let me count. {TOOL_CALL}'strawberry'.count('r'){TOOL_CALL_END}{TOOL_RESULT}3{TOOL_RESULT_END}"
    )
    rendered = render(tok, [{"role": "user", "content": "q"}, {"role": "assistant", "content": content}])
    ids = rendered.ids
    end = ids.index(special.tool_call_end)
    assert ids[end + 1 : end + 1 + len(injected)] == injected
    # A bad call yields an error result, a close without an open too; never an exception.
    bad = runner.after_token(
        [
            special.tool_call,
            *encode_batch(tok, ["__import__('os')"], append_eot=False)[0],
            special.tool_call_end,
        ]
    )
    assert bad == tool_result_ids(
        tok, "error: __import__ is not an allowed function (allowed: len, .count, .lower, .upper)"
    )
    assert runner.after_token([special.tool_call_end]) == tool_result_ids(
        tok, "error: no tool call was opened"
    )


def test_a_tokenizer_without_tool_tokens_is_refused_clearly():
    old = train_tokenizer(
        ["hello world"] * 5,
        TokenizerConfig(
            vocab_size=270, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_sep|>", "<|im_end|>"]
        ),
    )
    with pytest.raises(ValueError, match="tokenizer lacks the tool tokens"):
        ToolRunner(old)
