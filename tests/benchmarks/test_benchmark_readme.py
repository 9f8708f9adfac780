"""benchmarks/README.md: short, and every figure of its table is the value in the results file it names."""
import json
import pathlib
import re

import pytest

BENCHMARKS = pathlib.Path(__file__).resolve().parents[2] / "benchmarks"
README = BENCHMARKS / "README.md"
RESULTS = BENCHMARKS / "results"
HEADER = "| benchmark | command | latest figure | target | date | machine load | source |"
SOURCE = re.compile(r"^`(?P<file>[\w.-]+\.json)` `(?P<key>[^`]+)`$")
NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def table_rows(text: str) -> list[dict[str, str]]:
    """The rows of the figures table, as column name → cell text."""
    lines = text.splitlines()
    start = lines.index(HEADER)
    columns = [cell.strip() for cell in HEADER.strip("|").split("|")]
    rows = []
    for line in lines[start + 2:]:  # past the header and its --- line
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        assert len(cells) == len(columns), f"a table row needs {len(columns)} cells: {line}"
        rows.append(dict(zip(columns, cells)))
    return rows


def value_at(document, key: str):
    """``document``'s value at a dotted key (``a.b.0.c``; integers index lists)."""
    for part in key.split("."):
        document = document[int(part)] if isinstance(document, list) else document[part]
    return document


def printed_as(value: float, printed: str) -> bool:
    """Whether ``printed`` (a number as written in the table) is ``value`` at that number's precision."""
    decimals = len(printed.split(".")[1]) if "." in printed else 0
    return f"{value:.{decimals}f}" == printed


ROWS = table_rows(README.read_text(encoding="utf-8"))


def test_the_readme_is_short_and_has_a_table():
    assert len(README.read_text(encoding="utf-8").splitlines()) < 200
    assert len(ROWS) >= 10


@pytest.mark.parametrize("row", ROWS, ids=[row["benchmark"] for row in ROWS])
def test_each_figure_date_and_load_come_from_its_results_file(row):
    source = SOURCE.match(row["source"])
    assert source, f"source must be `<file>.json` `<key>`: {row['source']}"
    path = RESULTS / source["file"]
    assert path.is_file(), f"{path} is named in the table but does not exist"
    result = json.loads(path.read_text(encoding="utf-8"))
    figures = NUMBER.findall(row["latest figure"])
    assert len(figures) == 1, f"one figure per cell: {row['latest figure']}"
    assert printed_as(value_at(result, source["key"]), figures[0]), (
        f"{source['file']} {source['key']} = {value_at(result, source['key'])}, printed {figures[0]}")
    assert row["date"] == result["date"][:10]
    assert printed_as(result["machine"]["load_average_1_5_15"][0], row["machine load"])


def test_every_results_file_the_readme_names_exists():
    named = set(re.findall(r"[\w{},-]+\.json", README.read_text(encoding="utf-8")))
    files = set()
    for name in named:  # `a_{1,2}.json` names a_1.json and a_2.json
        brace = re.search(r"\{([\w,]+)\}", name)
        files |= ({name[:brace.start()] + part + name[brace.end():] for part in brace[1].split(",")}
                  if brace else {name})
    assert files and all((RESULTS / name).is_file() for name in files), sorted(
        name for name in files if not (RESULTS / name).is_file())


def test_every_benchmark_script_has_a_line_on_how_to_run_it():
    text = README.read_text(encoding="utf-8")
    scripts = [path.name for path in BENCHMARKS.glob("*.py")
               if path.name.startswith("bench_") or path.name == "tune_genre_head.py"]
    assert scripts and [name for name in scripts if f"- `{name}" not in text] == []
