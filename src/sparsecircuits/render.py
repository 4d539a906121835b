"""The one way the project writes markup: autoescaping jinja2 templates shipped with a package.

Every HTML page and SVG is rendered by an environment from `template_environment`, so each page
inherits the same rules:

- every `{{ value }}` is escaped: text from circuit files, corpora, configs and models is shown,
  never run (attributes included: quotes are escaped too);
- characters that XML forbids (control characters, lone surrogates, which JSON can carry but
  UTF-8 cannot encode) become U+FFFD, so a standalone SVG always parses;
- a value meant to be a number goes through the `number` filter, which formats real numbers and
  shows anything else as "?" instead of crashing or printing it;
- the only markup passed into a template unescaped is the output of another of these templates
  (`render` marks it safe), e.g. the circuit SVG inside a page.

Leaf module: imports only the standard library, jinja2 and markupsafe.
"""

from __future__ import annotations

import numbers
import re

import jinja2
from markupsafe import Markup

# Anything outside XML 1.0's `Char` production.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def number(
    value: object, digits: int | None = None, signed: bool = False, grouped: bool = False
) -> str:
    """`value` as a number: `digits` decimals (None: ints whole, floats to 6 significant
    digits), a leading sign if `signed`, thousands separators if `grouped`; "?" for anything
    that is not a real number (a bool is a flag, not a number)."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        return "?"
    spec = ("+" if signed else "") + ("," if grouped else "")
    try:
        if digits is not None:
            return format(float(value), f"{spec}.{int(digits)}f")
        if isinstance(value, numbers.Integral):
            return format(int(value), f"{spec}d")
        return format(float(value), f"{spec}g")
    except (OverflowError, ValueError):  # an int too large for a float
        return "?"


def xml_safe(value: object) -> object:
    """What `{{ value }}` prints, before escaping: its text without characters XML forbids."""
    if isinstance(value, Markup):  # built by one of these templates, already clean
        return value
    return _NOT_XML.sub("\ufffd", str(value))


def template_environment(package: str) -> jinja2.Environment:
    """The templates in `package`'s `templates/` folder, rendered by the rules above."""
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader(package, "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,  # a misspelt field fails the render, not the reader
        finalize=xml_safe,
        keep_trailing_newline=True,
    )
    environment.filters["number"] = number
    return environment


def render(environment: jinja2.Environment, template: str, **context: object) -> Markup:
    """`template` rendered with `context`, marked safe to embed in another template.

    Safe because the environment escapes everything it prints; one from
    `template_environment` is the only kind this accepts.
    """
    if environment.autoescape is not True or environment.finalize is not xml_safe:
        raise ValueError("render needs an environment from template_environment")
    return Markup(environment.get_template(template).render(**context))
