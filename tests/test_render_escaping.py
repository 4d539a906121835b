"""No markup injection: text from a circuit file, a run or a model reaches a page only as text.

Every string field of a circuit record (and, in place of numbers, its numeric fields) holds
markup; the drawing must still parse as XML, show the markup as text, show the non-numbers as
"?", and a real browser must build no element from it.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import jinja2
import pytest

from sparsecircuits.circuits.draw import circuit_html, circuit_svg, write_drawing
from sparsecircuits.render import number, render

INJECTIONS = ("<script>alert(1)</script>", '"><img src=x onerror=alert(1)>', "</svg>", "&")
MIXED = "".join(INJECTIONS)  # breaks out of text and attribute contexts at once
SVG = "{http://www.w3.org/2000/svg}"
METRICS = (
    "nodes",
    "edges",
    "test_pairs",
    "circuit_loss",
    "circuit_accuracy",
    "full_model_loss",
    "full_model_accuracy",
    "ablated_circuit_loss",
    "random_circuit_loss",
    "seconds",
)


def hostile_record(payload: str) -> dict:
    """A circuit record (docs/circuits.md) with `payload` in every string field and in place of
    numbers, beside well-formed nodes so the drawing has real rows, edges and labels."""
    ids = [f"0.attn_in.3{payload}", f"0.q.5{payload}", f"1.mlp_neuron.7{payload}"]
    nodes = [
        {"id": ids[0], "layer": 0, "kind": "attn_in", "index": 3, "mean": 0.1, "score": 0.9},
        {"id": ids[1], "layer": 0, "kind": "q", "index": 5, "mean": -0.2, "score": 0.8},
        {"id": ids[2], "layer": 1, "kind": "mlp_neuron", "index": 7, "mean": 0.3, "score": 0.7},
        {key: payload for key in ("id", "layer", "kind", "index", "mean", "score", "explanation")},
    ]
    edges = [
        {"source": ids[0], "target": ids[1], "weight": 0.5},
        {"source": ids[1], "target": ids[2], "weight": payload},
        {"source": ids[2], "target": payload, "weight": -0.25},
    ]
    metrics = {name: payload for name in METRICS} | {payload: {payload: payload}}
    metrics["trim"] = {"dropped": payload, "nodes_before": payload}
    metrics["verification"] = {key: payload for key in ("pairs", "nodes_added", "loss")}
    metrics["verification"]["loss_stderr"] = payload
    model = {key: payload for key in ("path", "sha256", "n_layer", "d_model", "d_mlp", "d_head")}
    return {
        "format": "sparsecircuits.circuit/1",
        "task": payload,
        "target_loss": payload,
        "ablation": payload,
        "model": model,
        "nodes": nodes,
        "edges": edges,
        "calibration": {"scale": payload, "shift": {payload: payload}},
        "metrics": metrics,
        "prune_config": {payload: payload},
        "sweep": [payload],
    }


def hostile_activations(record: dict, payload: str) -> dict[str, list]:
    return {node["id"]: [0.5, payload] for node in record["nodes"]}


class Elements(HTMLParser):
    """The start tags of a page, with their attributes, and its text."""

    def __init__(self, page: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(page)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def injected(self) -> list[tuple[str, dict]]:
        """Elements no page of ours has: scripts, frames, event handlers, images other than
        the report's inlined plots."""
        return [
            (tag, attrs)
            for tag, attrs in self.tags
            if tag in ("script", "iframe", "object", "embed")
            or (tag == "img" and not (attrs.get("src") or "").startswith("data:image/png;"))
            or any(name.startswith("on") for name in attrs)
        ]

    def count(self, tag: str, css_class: str | None = None) -> int:
        return sum(
            1
            for name, attrs in self.tags
            if name == tag and (css_class is None or attrs.get("class") == css_class)
        )


@pytest.mark.parametrize("payload", INJECTIONS)
def test_the_svg_parses_and_shows_injected_markup_only_as_text(payload: str) -> None:
    record = hostile_record(payload)
    svg = circuit_svg(record, hostile_activations(record, payload))
    root = ET.fromstring(svg)  # an unescaped `&`, `<` or `</svg>` would not parse
    tags = {element.tag.removeprefix(SVG) for element in root.iter()}
    assert tags == {"svg", "line", "text", "title", "g", "circle"}
    assert not [name for e in root.iter() for name in e.attrib if name.startswith("on")]
    assert "<script" not in svg and "<img" not in svg and svg.count("</svg>") == 1
    # The ids come back exactly, so escaping lost nothing; the fields that should be numbers
    # show as "?".
    groups = {group.get("data-id"): group for group in root.iter(f"{SVG}g")}
    assert set(groups) == {node["id"] for node in record["nodes"]}
    tip = groups[payload].find(f"{SVG}circle/{SVG}title").text
    expected = f"{payload} ({payload})\nmean ?\nmask score ?\nexplanation: {payload}"
    assert tip == expected + "\non task prompts: +0.500, ?"
    edge_tips = [line.find(f"{SVG}title").text for line in root.iter(f"{SVG}line")]
    assert f"0.q.5{payload} → 1.mlp_neuron.7{payload}: ?" in edge_tips


@pytest.mark.parametrize("payload", INJECTIONS)
def test_the_page_shows_injected_markup_only_as_text(payload: str) -> None:
    record = hostile_record(payload)
    page = circuit_html(record, hostile_activations(record, payload), [payload])
    assert "<script" not in page and "<img" not in page
    elements = Elements(page)
    assert not elements.injected()
    assert elements.count("svg") == 1 and elements.count("g", "node") == len(record["nodes"])
    text = "".join(elements.text)
    assert f"Circuit for {payload}" in text and f"target loss\n?, {payload} ablation" in text


def test_a_browser_builds_no_element_from_a_hostile_circuit_file(tmp_path: Path) -> None:
    """(An injected alert() that runs blocks headless chromium: that failure is a timeout.)"""
    from browser import rendered_dom

    record = hostile_record(MIXED)
    page = tmp_path / "circuit.html"
    page.write_text(circuit_html(record, hostile_activations(record, MIXED), [MIXED]))
    dom = Elements(rendered_dom(page))
    assert not dom.injected()
    assert dom.count("svg") == 1 and dom.count("g", "node") == len(record["nodes"])
    assert f"Circuit for {MIXED}" in "".join(dom.text)


def test_drawing_files_are_written_for_a_hostile_or_malformed_record(tmp_path: Path) -> None:
    record = hostile_record(MIXED)
    # Characters XML forbids (JSON can carry a lone surrogate, which UTF-8 cannot even encode)
    # are replaced, so the file is written and still parses.
    record["nodes"][0]["id"] = "bell\x07surrogate\ud800"
    record["edges"][0]["source"] = record["nodes"][0]["id"]
    svg = ET.parse(write_drawing(record, tmp_path / "circuit.svg", None, []))
    ids = {group.get("data-id") for group in svg.getroot().iter(f"{SVG}g")}
    assert "bell\ufffdsurrogate\ufffd" in ids
    html = write_drawing(record, tmp_path / "circuit.html", None, []).read_text()
    assert "<script" not in html and "<img" not in html
    # A record of the wrong shape altogether still draws (empty), with its text escaped.
    shapeless = {"task": MIXED, "nodes": MIXED, "edges": 3, "model": MIXED, "metrics": [MIXED]}
    ET.fromstring(circuit_svg(shapeless))
    html = circuit_html(shapeless, None, [])
    assert "<script" not in html and "<img" not in html and not Elements(html).injected()


def test_numbers_are_formatted_and_anything_else_is_a_question_mark() -> None:
    assert number(0.5, 4, signed=True) == "+0.5000" and number(-0.25, 3) == "-0.250"
    assert number(1234567, grouped=True) == "1,234,567" and number(0.15) == "0.15"
    assert number(7) == "7" and number(2.5, 0) == "2" and number(float("nan"), 2) == "nan"
    for not_a_number in ("<script>", "0.5", None, True, [1], {"a": 1}, 10**400):
        assert number(not_a_number, 2) == "?"


def test_only_an_escaping_environment_may_mark_its_output_safe() -> None:
    plain = jinja2.Environment(loader=jinja2.DictLoader({"page": "{{ text }}"}))
    with pytest.raises(ValueError, match="template_environment"):
        render(plain, "page", text="<b>")


def test_the_run_report_escapes_run_config_completions_and_circuit_text(
    tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from browser import rendered_dom
    from sparsecircuits.report import run_report

    real_summary = run_report.summarize_run

    def hostile_summary(run: object) -> dict:
        summary = real_summary(run)
        summary["path"] = MIXED
        summary["val_loss"] = MIXED
        summary["density_by_kind"][MIXED] = MIXED
        summary["config"]["data"] = {"description": MIXED}
        summary["config"]["model"]["afrac"] = MIXED
        summary["config"]["train"]["batch_size"] = MIXED
        return summary

    monkeypatch.setattr(run_report, "summarize_run", hostile_summary)
    record = hostile_record(MIXED)
    circuit = {"record": record, "svg": circuit_svg(record), "page": MIXED, "total_nodes": MIXED}
    extra = {MIXED: MIXED, "demo wall time": "12 s"}
    explained = [{"unit": MIXED, "explanation": MIXED, "score_top_and_random": 0.5,
                  "score_random_only": None, "ablation_score": MIXED}]  # fmt: skip
    out = run_report.write_run_report(
        tiny_run,
        tmp_path / "report.html",
        prompts=(MIXED,),
        circuit=circuit,
        explanations=explained,
        **extra,
    )
    html = out.read_text()
    assert "<script" not in html and "<img src=x" not in html and html.count("</svg>") == 1
    page = Elements(html)
    assert not page.injected() and page.count("g", "node") == len(record["nodes"])
    assert f"Weight-sparse GPT on {MIXED}" in "".join(page.text)
    dom = Elements(rendered_dom(out))
    assert not dom.injected()
    assert dom.count("svg") == 1 and dom.count("g", "node") == len(record["nodes"])

    # A drawing that is a plain string, not the circuit template's output, is shown as text.
    circuit["svg"] = str(circuit["svg"])
    html = run_report.write_run_report(tiny_run, tmp_path / "plain.html", circuit=circuit)
    assert Elements(html.read_text()).count("svg") == 0
