"""One generator per task of spec section 5: a random.Random in, one TaskPair out.

Each draws a preamble of ordinary code (templates_context), then writes the decisive line in
two minimally different versions. Every prompt ends where a new BPE pre-token begins (after a
letter or digit when the answer starts with punctuation or a space, and so on), so the answer's
first token is the same whether the prompt is tokenised alone or with its answer; `encode_pairs`
checks this and skips the rare exceptions.
"""

from __future__ import annotations

import random

from sparsecircuits.tasks.pairs import TaskPair
from sparsecircuits.tasks.templates_context import (
    ACCUMULATORS,
    BASES,
    CLASSES,
    CONTEXT_MANAGERS,
    DEFAULTS,
    FILE_NAMES,
    INDEX_NAMES,
    SEQUENCES,
    VARIABLES,
    condition,
    distinct,
    docstring,
    function_name,
    module_lines,
    phrase,
    scope,
)


def single_double_quote(rng: random.Random) -> TaskPair:
    # The paper's form: the string opens right after "(", so the opening is the single token
    # (' or (" and the answer the single token ') or "). The preamble holds no other quote
    # (strings=False drops docstrings too): only the opening can tell which quote closes.
    s = scope(rng, strings=False)
    name = rng.choice(VARIABLES)
    call = rng.choice(
        [
            "print(",
            f"raise {rng.choice(['ValueError', 'TypeError', 'KeyError', 'RuntimeError'])}(",
            f"{name}.append(",
            f"logger.{rng.choice(['debug', 'info', 'warning', 'error'])}(",
            f"{name} = {function_name(rng)}(",
            f"sys.{rng.choice(['stdout', 'stderr'])}.write(",
            *[f"{start}{function_name(rng)}(" for start in s.returns],
            *[f"self.{function_name(rng)}("] * s.in_method,
        ]
    )
    text = phrase(rng)
    return TaskPair(
        prompt_a=s.then(f"{call}'{text}"),
        prompt_b=s.then(f'{call}"{text}'),
        answer_a="')\n",
        answer_b='")\n',
    )


def single_double_quote_mixed(rng: random.Random) -> TaskPair:
    # The harder form this suite had first, not the paper's: the string opens after "= ", "(",
    # "== ", "{" or ", " (openings such as ' or {' besides ('), closes with ', ') or ': and
    # may follow docstrings, whose quotes the model must not copy.
    s = scope(rng, strings=False, docstrings=True)
    name, other = distinct(rng, VARIABLES, 2)
    before, after = rng.choice(
        [
            (f"{name} = ", ""),
            ("print(", ")"),
            ("raise ValueError(", ")"),
            (f"{name} = {function_name(rng)}({other}, ", ")"),
            (f"if {name} == ", ":"),
            (f"{name}.append(", ")"),
            (f"{name} = {{", f": {other}}}"),
        ]
    )
    text = phrase(rng)
    return TaskPair(
        prompt_a=s.then(f"{before}'{text}"),
        prompt_b=s.then(f'{before}"{text}'),
        answer_a=f"'{after}\n",
        answer_b=f'"{after}\n',
    )


def final_kwarg(rng: random.Random) -> TaskPair:
    params = distinct(rng, VARIABLES, rng.randint(2, 5))
    first_default = rng.randrange(len(params) - 1)  # A: at least one earlier default
    defaults = [f"{param}={rng.choice(DEFAULTS)}" for param in params[first_default:-1]]
    params_a = [*params[:first_default], *defaults, params[-1]]
    if rng.random() < 0.5:  # a method
        code = f"class {rng.choice(CLASSES)}({rng.choice(BASES)}):\n"
        if rng.random() < 0.5:
            code += f"    {docstring(rng)}\n"
        code += f"\n    def {function_name(rng)}(self, "
    else:
        code = "".join(line + "\n" for line in module_lines(rng, strings=True))
        code += f"def {function_name(rng)}("
    return TaskPair(
        prompt_a=code + ", ".join(params_a),
        prompt_b=code + ", ".join(params),
        answer_a="=None):\n",
        answer_b="):\n",
    )


def set_or_string(rng: random.Random, name: str | None = None) -> TaskPair:
    s = scope(rng)
    name = name or rng.choice(ACCUMULATORS)
    sequence, element = rng.choice(SEQUENCES)
    empty_string = rng.choice(["''", '""'])
    middle = []  # an unrelated line between the initialisation and the loop, sometimes
    if rng.random() < 0.5:
        middle.append(f"{rng.choice(VARIABLES)} = {rng.choice(['0', 'None', '[]'])}")
    use = f"for {element} in {sequence}:\n    "
    if rng.random() < 0.4:
        use += f"if {condition(rng, element, s.in_method)}:\n        "
    use += name

    def prompt(initial: str) -> str:
        return s.then(f"{name} = {initial}", *middle, use)

    return TaskPair(prompt("set()"), prompt(empty_string), f".add({element})\n", f" += {element}\n")


def set_or_string_fixedvarname(rng: random.Random) -> TaskPair:
    return set_or_string(rng, name="current")


def class_init(rng: random.Random) -> TaskPair:
    params = distinct(rng, VARIABLES, rng.randint(2, 5))
    n_assigned = rng.randrange(len(params) - 1)
    target_a, target_b = rng.sample(params[n_assigned:], 2)
    n_plain = rng.randint(1, len(params))  # later parameters get defaults
    signature = [*params[:n_plain], *(f"{param}=None" for param in params[n_plain:])]
    lines = module_lines(rng, strings=True)
    lines += [f"class {rng.choice(CLASSES)}({rng.choice(BASES)}):"]
    if rng.random() < 0.5:
        lines += [f"    {docstring(rng)}", ""]
    lines += [f"    def __init__(self, {', '.join(signature)}):"]
    if rng.random() < 0.3:
        lines += ["        super().__init__()"]
    lines += [f"        self.{param} = {param}" for param in params[:n_assigned]]
    code = "".join(line + "\n" for line in lines)
    return TaskPair(
        prompt_a=f"{code}        self.{target_a} =",
        prompt_b=f"{code}        self.{target_b} =",
        answer_a=f" {target_a}\n",
        answer_b=f" {target_b}\n",
    )


def with_as(rng: random.Random) -> TaskPair:
    s = scope(rng)
    manager, bound = rng.choice(CONTEXT_MANAGERS)
    manager = manager.format(rng.choice(VARIABLES))
    use = f"{rng.choice(VARIABLES)} = {bound}.{rng.choice(['read', 'close', 'getvalue'])}()"
    return TaskPair(
        prompt_a=s.then(f"with {manager}"),
        prompt_b=s.then(f"{bound} = {manager}"),
        answer_a=f" as {bound}:\n{s.indent}    {use}\n",
        answer_b=f"\n{s.indent}{use}\n",
    )


def bracket_brace(rng: random.Random) -> TaskPair:
    s = scope(rng, brackets=False)
    opener = rng.choice([f"{rng.choice(VARIABLES)} = ", f"{function_name(rng)}(", *s.returns])
    # The first element is a name, a number or a constant, never a string: a closing quote
    # would merge with the answer (': and ', are single tokens), and the answer must be : or ,
    # alone, not a quote decision as well.
    kind = rng.randrange(3)
    if kind == 0:
        first, second = (word.upper() for word in distinct(rng, VARIABLES, 2))
    elif kind == 1:
        first, second = str(rng.randint(0, 99)), str(rng.randint(0, 99))
    else:
        first, second = distinct(rng, VARIABLES, 2)
    newline = "\n    " if rng.random() < 0.3 else ""  # one element per line
    value = rng.choice([*VARIABLES[:10], "None", "0", "True"])
    return TaskPair(
        prompt_a=s.then(f"{opener}{{{newline}{first}"),
        prompt_b=s.then(f"{opener}[{newline}{first}"),
        answer_a=f": {value},\n",
        answer_b=f", {second},\n",
    )


def with_open(rng: random.Random) -> TaskPair:
    s = scope(rng)
    reading, writing = rng.choice(FILE_NAMES)
    opener = rng.choice(["open", "open", "io.open", "codecs.open"])
    quote = rng.choice(["'", '"'])
    mode_key = rng.choice(["", "", "mode="])
    binary = rng.choice(["", "b"])
    start = rng.choice(["with ", "with ", f"{rng.choice(['f', 'fp', 'stream'])} = "])

    def prompt(file_name: str) -> str:
        return s.then(f"{start}{opener}({file_name}, {mode_key}{quote}")

    return TaskPair(
        prompt_a=prompt(reading),
        prompt_b=prompt(writing),
        answer_a=f"r{binary}{quote})",
        answer_b=f"w{binary}{quote})",
    )


def list_element(rng: random.Random, kind: int) -> str:
    """An int, a float or a name: list elements that end in a letter or digit, so the closing
    bracket starts a new pre-token (a closing quote would merge with it)."""
    if kind == 0:
        return str(rng.randint(0, 999))
    if kind == 1:
        return f"{rng.randint(0, 9)}.{rng.randint(0, 99)}"
    return rng.choice(VARIABLES)


def bracket_counting(rng: random.Random) -> TaskPair:
    s = scope(rng, brackets=False)
    kind = rng.randrange(3)
    groups = [
        [list_element(rng, kind) for _ in range(rng.randint(1, 4))]
        for _ in range(rng.randint(1, 4))
    ]
    # A is a list of lists with its last inner list still open; B has the same elements flat.
    # One line only: a list written one element per line closes with "],\n]", not "]]", so
    # there the depth would not decide the answer.
    nested = ", ".join(f"[{', '.join(group)}]" for group in groups)[:-1]
    flat = ", ".join(", ".join(group) for group in groups)
    target = rng.choice(VARIABLES)
    return TaskPair(
        prompt_a=s.then(f"{target} = [{nested}"),
        prompt_b=s.then(f"{target} = [{flat}"),
        answer_a="]]\n",
        answer_b="]\n",
    )


def for_while(rng: random.Random) -> TaskPair:
    s = scope(rng)
    sequence, element = rng.choice(SEQUENCES)
    body = f"{s.indent}    {function_name(rng)}({element})\n"
    return TaskPair(
        prompt_a=s.then(f"for {element}"),
        prompt_b=s.then(f"while {element}"),
        answer_a=f" in {sequence}:\n{body}",
        answer_b=f":\n{body}",
    )


def else_elif(rng: random.Random) -> TaskPair:
    s = scope(rng)
    first, second = distinct(rng, VARIABLES, 2)
    branches = [
        f"if {condition(rng, first, s.in_method)}:",
        f"    {first} = {rng.choice(VARIABLES)}",
    ]
    if rng.random() < 0.4:
        branches += [f"elif {condition(rng, first, s.in_method)}:", f"    {first} = None"]
    test = condition(rng, second, s.in_method)
    body = f"{s.indent}    {second} = {function_name(rng)}({first})\n"
    return TaskPair(
        prompt_a=s.then(*branches, "else"),
        prompt_b=s.then(*branches, "elif"),
        answer_a=f":\n{body}",
        answer_b=f" {test}:\n{body}",
    )


def fstring_brace(rng: random.Random) -> TaskPair:
    s = scope(rng)
    name = rng.choice(VARIABLES)
    call, close = rng.choice(
        [
            ("print(", ")"),
            ("logger.info(", ")"),
            ("raise ValueError(", ")"),
            (f"{rng.choice(VARIABLES)} = ", ""),
            ("sys.stdout.write(", ")"),
            *[(start, "") for start in s.returns],
            *[("self.fail(", ")")] * s.in_method,
        ]
    )
    quote = rng.choice(["'", '"'])
    text = phrase(rng, 4) + rng.choice([": ", " ", "=", " = "])
    return TaskPair(
        prompt_a=s.then(f"{call}f{quote}{text}{{"),
        prompt_b=s.then(f"{call}{quote}{text}{{"),
        answer_a=f"{name}}}{quote}{close}\n",
        answer_b=f"0}}{quote}.format({name}){close}\n",
    )


def if_ternary(rng: random.Random) -> TaskPair:
    s = scope(rng)
    name, target, other = distinct(rng, VARIABLES, 3)
    test = condition(rng, name, s.in_method)
    value = rng.choice([name, other, "None", "0", "True"])
    start = rng.choice([f"{target} = ", *s.returns])
    return TaskPair(
        prompt_a=s.then(f"if {test}"),
        prompt_b=s.then(f"{start}{value} if {test}"),
        answer_a=f":\n{s.indent}    {target} = {value}\n",
        answer_b=f" else {rng.choice(['None', other, '0'])}\n",
    )


def var_swap(rng: random.Random) -> TaskPair:
    s = scope(rng)
    first, second = distinct(rng, VARIABLES, 2)
    owner = "self." if s.in_method and rng.random() < 0.3 else ""
    guard = f"if {owner}{first} > {owner}{second}:\n    " if rng.random() < 0.4 else ""

    # The prompt ends at the comma, before the space that starts the answer's first token,
    # or, with `self.`, at the dot.
    last_owner, space = (" self.", "") if owner else ("", " ")

    def swap(x: str, y: str) -> str:
        return s.then(f"{guard}{owner}{x}, {owner}{y} = {owner}{y},{last_owner}")

    return TaskPair(
        prompt_a=swap(first, second),
        prompt_b=swap(second, first),
        answer_a=f"{space}{first}\n",
        answer_b=f"{space}{second}\n",
    )


def indent_for(rng: random.Random) -> TaskPair:
    s = scope(rng)
    sequence, element = rng.choice(SEQUENCES)
    # The for line is at most three blocks deep, so every indentation is a common BPE token.
    max_depth = min(2, 3 - len(s.indent) // 4)
    depth_a = rng.randint(0, max_depth - 1)
    depth_b = depth_a + 1
    if rng.random() < 0.5:
        depth_a, depth_b = depth_b, depth_a
    openers = [
        rng.choice(
            [f"if {condition(rng, name, s.in_method)}:", "try:", f"with {name}:", f"while {name}:"]
        )
        for name in rng.sample(VARIABLES, max_depth)
    ]
    body = f"{function_name(rng)}({element})"

    def prompt(depth: int) -> str:
        lines = [" " * 4 * level + opener for level, opener in enumerate(openers[:depth])]
        return s.then(*lines, f"{' ' * 4 * depth}for {element} in {sequence}:")

    def answer(depth: int) -> str:
        return f"\n{s.indent}{' ' * 4 * (depth + 1)}{body}\n"

    return TaskPair(prompt(depth_a), prompt(depth_b), answer(depth_a), answer(depth_b))


def lambda_func(rng: random.Random) -> TaskPair:
    s = scope(rng)
    sequence, element = rng.choice(SEQUENCES)
    target = rng.choice(VARIABLES)
    start, close = rng.choice(
        [
            (f"{target} = lambda ", ""),
            *[(f"{start}lambda ", "") for start in s.returns],
            (f"{sequence}.sort(key=lambda ", ")"),
            (f"{target} = sorted({sequence}, key=lambda ", ")"),
            (f"{target} = map(lambda ", f", {sequence})"),
        ]
    )
    return TaskPair(
        prompt_a=s.then(f"{start}{element}"),
        prompt_b=s.then(f"def {function_name(rng)}"),
        answer_a=f": {element}.{rng.choice(VARIABLES)}{close}\n",
        answer_b=f"({element}):\n",
    )


def if_equals(rng: random.Random) -> TaskPair:
    s = scope(rng)
    name = rng.choice(VARIABLES)
    if s.in_method and rng.random() < 0.4:
        name = f"self.{name}"
    value = rng.choice(["None", "0", "1", "True", "False", "''", "-1", rng.choice(VARIABLES)])
    return TaskPair(
        prompt_a=s.then(f"if {name}"),
        prompt_b=s.then(name),
        answer_a=f" == {value}:\n",
        answer_b=f" = {value}\n",
    )


def enumerate_range(rng: random.Random) -> TaskPair:
    s = scope(rng)
    sequence, element = rng.choice(SEQUENCES)
    index = rng.choice(INDEX_NAMES)
    return TaskPair(
        prompt_a=s.then(f"for {index}, {element} in"),
        prompt_b=s.then(f"for {index} in"),
        answer_a=f" enumerate({sequence}):\n",
        answer_b=f" range(len({sequence})):\n",
    )


def var_if(rng: random.Random) -> TaskPair:
    s = scope(rng)
    name, other = distinct(rng, VARIABLES, 2)
    value = rng.choice(["True", "True", "False", "None", "0", "1"])
    after = f"{other} = {function_name(rng)}({name})"
    return TaskPair(
        prompt_a=s.then(f"if {name} == {value}"),
        prompt_b=s.then(f"{name} = {value}"),
        answer_a=f":\n{s.indent}    {after}\n",
        answer_b=f"\n{s.indent}{after}\n",
    )


def while_return_true(rng: random.Random) -> TaskPair:
    s = scope(rng, module_level=False)
    sequence, element = rng.choice(SEQUENCES)
    # Inside a block, so the line after `return True` is real code at a known indentation.
    opener, after = rng.choice(
        [
            (f"if {condition(rng, element, s.in_method)}:", "return False"),
            (f"for {element} in {sequence}:", "return False"),
            (f"with {rng.choice(VARIABLES)}:", f"{element} = None"),
            ("try:", "except Exception:"),
        ]
    )

    def prompt(keyword: str) -> str:
        return s.then(f"{opener}\n    {keyword} True")

    return TaskPair(
        prompt_a=prompt("while"),
        prompt_b=prompt("return"),
        answer_a=f":\n{s.indent}        {element} = {function_name(rng)}({element})\n",
        answer_b=f"\n{s.indent}{after}\n",
    )
