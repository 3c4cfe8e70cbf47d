"""The assistant's tool: a sandboxed expression evaluator, and the hook that runs it during sampling.

**The evaluator** (`evaluate_expression`) answers what tokens cannot do reliably: exact arithmetic and
counting letters. It parses the call with `ast` and walks the tree itself; nothing is ever handed to
Python's `eval`, `exec` or `compile`. Only these are accepted:

- literals: integers and strings (no floats, bools, bytes, containers);
- arithmetic: ``+ - * / // % **`` and unary ``-``/``+`` on numbers; ``+`` and ``* int`` on strings;
- ``len(s)`` of a string; ``s.count(sub)``, ``s.lower()``, ``s.upper()`` on strings;
- indexing and slicing of strings with integers (``s[0]``, ``s[1:-1:2]``).

Every name, attribute, call, comprehension, lambda, comparison and so on is refused. Limits (`ToolLimits`)
are checked *before* each operation, so no single step can be slow or big: the call's length, the number
and nesting of its nodes, the length of every string, the size of every integer (in bits, which bounds
``*`` and ``**`` before they run), the exponent, and a wall-clock budget checked at every node.

A refused or failing call is not an exception: the result is a text starting with ``error:`` that the
model reads in place of an answer, so the sampler never stops on a bad call.

**The hook** (`ToolRunner.after_token`) is what a sampler calls after each token it appends to a sequence:
when the token closes a call (`<|/tool_call|>`), it returns the ids to put into the context next --
`<|tool_result|>` result `<|/tool_result|>`, the ids the chat template renders -- and the sampler feeds
them to the model before it samples again. `components.model.generate` does this for evaluation and RL;
the serving engine calls the same hook per sequence.
"""

from __future__ import annotations

import ast
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

from tokenizers import Tokenizer

from components.tokenizer.bpe import decode
from components.tokenizer.chat import ChatTokens, tool_result_ids


@dataclass(frozen=True)
class ToolLimits:
    """Bounds on one call; each is checked before the work it bounds."""

    max_expression_chars: int = 256  # the call's source text
    max_nodes: int = 64  # AST nodes in the call
    max_depth: int = 16  # nesting of AST nodes
    max_string_chars: int = 256  # every string, literal or computed
    max_int_bits: int = 256  # every integer (about 77 decimal digits), operands and results
    max_exponent: int = 256  # |b| in a ** b
    max_seconds: float = 1.0  # wall-clock budget of the whole evaluation (generous: a loaded CPU)
    max_result_chars: int = 128  # longer result texts are cut (with "...")


class ToolError(Exception):
    """A call the tool refuses or cannot evaluate; its message is what the model sees after "error: "."""


_BINARY = {
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.Div: "/",
    ast.FloorDiv: "//",
    ast.Mod: "%",
    ast.Pow: "**",
}
_STRING_METHODS = {"count": 1, "lower": 0, "upper": 0}  # name -> number of arguments


class _Evaluator:
    def __init__(self, limits: ToolLimits):
        self.limits = limits
        self.deadline = time.perf_counter() + limits.max_seconds

    def run(self, source: str) -> int | float | str:
        lim = self.limits
        if len(source) > lim.max_expression_chars:
            raise ToolError(f"expression longer than {lim.max_expression_chars} characters")
        try:
            tree = ast.parse(source.strip(), mode="eval")
        except SyntaxError as e:
            raise ToolError(f"not an expression ({e.msg})") from None
        except (RecursionError, MemoryError, ValueError):  # pathological nesting; NUL bytes
            raise ToolError("expression cannot be parsed") from None
        nodes = sum(1 for _ in ast.walk(tree))
        if nodes > lim.max_nodes:
            raise ToolError(f"expression has {nodes} parts, more than {lim.max_nodes}")
        return self.value(tree.body, 1)

    def value(self, node: ast.AST, depth: int) -> int | float | str:
        lim = self.limits
        if depth > lim.max_depth:
            raise ToolError(f"expression nested deeper than {lim.max_depth}")
        if time.perf_counter() > self.deadline:
            raise ToolError(f"took longer than {lim.max_seconds} s")
        if isinstance(node, ast.Constant):
            if isinstance(node.value, float):
                raise ToolError("float literals are not allowed (write a division)")
            return self.checked(node.value)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            operand = self.number(self.value(node.operand, depth + 1), "unary minus")
            return self.checked(-operand if isinstance(node.op, ast.USub) else operand)
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            left = self.value(node.left, depth + 1)
            right = self.value(node.right, depth + 1)
            return self.checked(self.binary(_BINARY[type(node.op)], left, right))
        if isinstance(node, ast.Call):
            return self.call(node, depth)
        if isinstance(node, ast.Subscript):
            return self.subscript(node, depth)
        raise ToolError(f"{type(node).__name__} is not allowed")

    def checked(self, value: object) -> int | float | str:
        """A value the tool works with, within the limits; anything else is refused."""
        lim = self.limits
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ToolError(f"{type(value).__name__} values are not allowed")
        if isinstance(value, str) and len(value) > lim.max_string_chars:
            raise ToolError(f"string longer than {lim.max_string_chars} characters")
        if isinstance(value, int) and value.bit_length() > lim.max_int_bits:
            raise ToolError(f"integer larger than 2**{lim.max_int_bits}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ToolError("result is not a finite number")
        return value

    @staticmethod
    def number(value: int | float | str, what: str) -> int | float:
        if isinstance(value, str):
            raise ToolError(f"{what} needs a number, got a string")
        return value

    def binary(self, op: str, a: int | float | str, b: int | float | str) -> int | float | str:
        lim = self.limits
        if isinstance(a, str) or isinstance(b, str):
            if op == "+" and isinstance(a, str) and isinstance(b, str):
                if len(a) + len(b) > lim.max_string_chars:
                    raise ToolError(f"string longer than {lim.max_string_chars} characters")
                return a + b
            if op == "*" and (isinstance(a, int) or isinstance(b, int)):
                text, times = (a, b) if isinstance(a, str) else (b, a)
                if not isinstance(text, str) or not isinstance(times, int):
                    raise ToolError("* needs a string and an integer")
                if len(text) * max(times, 0) > lim.max_string_chars:
                    raise ToolError(f"string longer than {lim.max_string_chars} characters")
                return text * times
            raise ToolError(f"{op} is not defined for these operands")
        if op == "**":
            if abs(b) > lim.max_exponent:
                raise ToolError(f"exponent larger than {lim.max_exponent}")
            # |a| ** b has at least (bits(a) - 1) * b + 1 bits: refuse before computing it. (Products
            # need no such check: operands are within max_int_bits, so one costs nothing to compute.)
            if (
                isinstance(a, int)
                and isinstance(b, int)
                and (abs(a).bit_length() - 1) * b >= lim.max_int_bits
            ):
                raise ToolError(f"integer larger than 2**{lim.max_int_bits}")
        if op in ("/", "//", "%") and b == 0:
            raise ToolError("division by zero")
        try:
            if op == "+":
                return a + b
            if op == "-":
                return a - b
            if op == "*":
                return a * b
            if op == "/":
                return a / b
            if op == "//":
                return a // b
            if op == "%":
                return a % b
            result = a**b
        except (OverflowError, ZeroDivisionError) as e:
            raise ToolError(str(e)) from None
        if isinstance(result, complex):  # a negative number to a fractional power
            raise ToolError("result is not a real number")
        return result

    def call(self, node: ast.Call, depth: int) -> int | float | str:
        if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
            raise ToolError("keyword and * arguments are not allowed")
        func = node.func
        if isinstance(func, ast.Name) and func.id == "len":
            if len(node.args) != 1:
                raise ToolError("len takes one argument")
            return len(self.string(self.value(node.args[0], depth + 1), "len"))
        if isinstance(func, ast.Attribute) and func.attr in _STRING_METHODS:
            if len(node.args) != _STRING_METHODS[func.attr]:
                raise ToolError(f".{func.attr} takes {_STRING_METHODS[func.attr]} argument(s)")
            text = self.string(self.value(func.value, depth + 1), f".{func.attr}")
            if func.attr == "count":
                return text.count(self.string(self.value(node.args[0], depth + 1), ".count"))
            return self.checked(text.lower() if func.attr == "lower" else text.upper())
        name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", type(func).__name__)
        raise ToolError(f"{name} is not an allowed function (allowed: len, .count, .lower, .upper)")

    def subscript(self, node: ast.Subscript, depth: int) -> str:
        text = self.string(self.value(node.value, depth + 1), "indexing")
        index = node.slice
        if isinstance(index, ast.Slice):
            parts = [
                None if part is None else self.integer(self.value(part, depth + 1), "a slice")
                for part in (index.lower, index.upper, index.step)
            ]
            if parts[2] == 0:
                raise ToolError("slice step cannot be zero")
            return text[parts[0] : parts[1] : parts[2]]
        position = self.integer(self.value(index, depth + 1), "an index")
        if not -len(text) <= position < len(text):
            raise ToolError(f"index {position} is out of range for a string of length {len(text)}")
        return text[position]

    @staticmethod
    def string(value: int | float | str, what: str) -> str:
        if not isinstance(value, str):
            raise ToolError(f"{what} needs a string, got {type(value).__name__}")
        return value

    @staticmethod
    def integer(value: int | float | str, what: str) -> int:
        if not isinstance(value, int):
            raise ToolError(f"{what} needs an integer, got {type(value).__name__}")
        return value


def format_result(value: int | float | str) -> str:
    """How a value reads in the context: numbers as Python writes them, strings quoted (repr)."""
    return repr(value) if isinstance(value, str) else str(value)


def evaluate_expression(source: str, limits: ToolLimits | None = None) -> str:
    """The tool's answer to `source`: the value as text, or ``"error: ..."`` -- never an exception."""
    limits = limits or ToolLimits()
    try:
        text = format_result(_Evaluator(limits).run(source))
    except ToolError as e:
        text = f"error: {e}"
    except Exception as e:  # a bug or a case not foreseen must still not stop the sampler
        text = f"error: {type(e).__name__}"
    if len(text) > limits.max_result_chars:
        text = text[: limits.max_result_chars] + "..."
    return text


class ToolRunner:
    """The per-sequence hook a sampler calls: `after_token(tokens)` after appending each token.

    Returns None, or -- when the last token is `<|/tool_call|>` -- the ids to feed next: the result of
    the call (the text since the last `<|tool_call|>`) between `<|tool_result|>` and `<|/tool_result|>`.
    A `<|/tool_call|>` without an opening `<|tool_call|>` gets an error result, like any bad call.
    """

    def __init__(self, tok: Tokenizer, limits: ToolLimits | None = None):
        special = ChatTokens.of(tok)
        special.require_tools()
        self.tok = tok
        self.limits = limits or ToolLimits()
        self.call_start: int = special.tool_call  # type: ignore[assignment]
        self.call_end: int = special.tool_call_end  # type: ignore[assignment]
        self.calls = 0  # calls run so far (a statistic)

    def run(self, expression: str) -> str:
        self.calls += 1
        return evaluate_expression(expression, self.limits)

    def after_token(self, tokens: Sequence[int]) -> list[int] | None:
        if not tokens or tokens[-1] != self.call_end:
            return None
        start = len(tokens) - 2
        while start >= 0 and tokens[start] != self.call_start:
            start -= 1
        if start < 0:
            result = "error: no tool call was opened"
        else:
            result = self.run(decode(self.tok, list(tokens[start + 1 : -1])))
        return tool_result_ids(self.tok, result)


__all__ = ["ToolError", "ToolLimits", "ToolRunner", "evaluate_expression", "format_result"]
