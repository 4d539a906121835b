from sparsecircuits.report import write_run_report


def test_run_report_shows_the_run_and_escapes_model_text(tiny_run, tmp_path):
    prompts = ("x = '<script>alert(1)</script>'\nprint(x", "def f(a, b):\n    return")
    out = write_run_report(tiny_run, tmp_path / "report.html", prompts=prompts)
    html = out.read_text()
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert html.count('<span class="completion">') == 2
    assert html.count("data:image/png;base64,") == 2
    assert "validation loss" in html and "density" in html


def test_demo_command_trains_and_writes_its_report(tmp_path, corpus_dir, tiny_run):
    from cli_runner import run_cli

    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--tokens", "16384", "--data", str(corpus_dir), "--quiet"]
    args += ["--circuit-model", str(tmp_path / "no-model")]
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    assert (out / "report.html").is_file()
    assert "report:" in result.stdout and "skipping the circuit" in result.stdout
    # A second demo reuses the finished run instead of training again; a circuit model that
    # cannot do the task costs the report its circuit, not the whole demo.
    args[-1] = str(tiny_run)
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    assert "resuming" in again.stdout and "no circuit:" in again.stdout
    assert "explaining its nodes and 24 neurons" in again.stdout
    html = (out / "report.html").read_text()
    assert "What the units do" in html and html.count("<td><code>1.mlp.") >= 5
    assert (out / "explanations.sqlite").is_file()
    # It ends with the viewer's static pages of both models, and how to open the live one.
    assert (out / "viewer" / "index.html").is_file() and (out / "viewer" / "units-1.html").is_file()
    assert "sparsecircuits view" in again.stdout


def test_report_puts_the_run_beside_a_reference_model(tiny_run, tmp_path):
    from pathlib import Path

    from sparsecircuits.loading import load_run
    from sparsecircuits.report.run_report import TARGET_LOSS, TASK_PAIRS
    from sparsecircuits.tasks import PAPER_TASKS, TASKS, evaluate_pairs, task_pairs

    reference = Path(__file__).parents[1] / "models" / "reference-sparse"
    prompts = ("x = '<b>bold</b>'\nprint(x", "def f(a, b):\n    return")
    out = write_run_report(tiny_run, tmp_path / "report.html", prompts=prompts, reference=reference)
    html = out.read_text()
    assert "<b>bold" not in html and "&lt;b&gt;bold" in html
    # Two completions per prompt (this run, the reference) in one table, no separate list.
    assert html.count('<span class="completion">') == 2 * len(prompts)
    # What the models can do comes first: every task of the suite, both models.
    assert html.index("the task suite") < html.index("Completions") < html.index("Loss curve")
    rows = [line for line in html.splitlines() if "<td><code>" in line]
    assert [row.split("<code>")[1].split("<")[0] for row in rows] == list(TASKS)
    models = (load_run(tiny_run), load_run(reference))
    done = [0, 0]
    for task, row in zip(TASKS, rows, strict=True):
        cells = [cell.split("<")[0] for cell in row.split('class="num">')[1:]]
        expected = []
        for index, run in enumerate(models):
            pairs = task_pairs(task, "test", TASK_PAIRS)
            result = evaluate_pairs(task, pairs, run.model, run.tokenizer)
            if not result["n"]:  # a context too short for every prompt is said, not invented
                expected += ["n/a", "n/a"]
                continue
            below = result["loss"] <= TARGET_LOSS
            done[index] += below and task in PAPER_TASKS
            expected += [
                f"{result['loss']:.3f}" + (" ✓" if below else ""),
                f"{result['accuracy']:.3f}",
            ]
        assert cells == expected
    assert f"this run\n<strong>{done[0]} of 20</strong>" in html
    assert f"the shipped model\n<strong>{done[1]} of 20</strong>" in html
    assert done[1] >= 5  # the shipped model does several tasks; the tiny run is far behind


def test_completions_are_sampled_the_same_way_every_time(tiny_run):
    from sparsecircuits.loading import load_run
    from sparsecircuits.report import completions

    run = load_run(tiny_run)
    prompts = ("def add(a, b):\n    return", "import os\nimport")
    first, second = completions(run, prompts), completions(run, prompts)
    assert first == second and [c["prompt"] for c in first] == list(prompts)
    assert all(c["completion"] for c in first)
