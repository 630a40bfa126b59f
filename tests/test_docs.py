"""The README and the guides in docs/ name only configs that exist and commands that parse."""

import re
import shlex
from pathlib import Path

import pytest

from lit_grok.runs import parse_config
from lit_grok.sweep import main as sweep_main

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _text(page: Path) -> str:
    return page.read_text()


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_config_path_named_exists(page):
    paths = set(re.findall(r"configs/[\w/.-]+\.yaml", _text(page)))
    missing = sorted(p for p in paths if not (ROOT / p).is_file())
    assert not missing, f"{page.name} names configs that do not exist: {missing}"


def _commands(text: str) -> list[list[str]]:
    """Every `python -m lit_grok ...` command in code spans and blocks, as argument lists."""
    found = []
    for match in re.finditer(r"python -m lit_grok ((?:fit|sweep)[^`\n]*)", text):
        line = match.group(1).split("#")[0].strip().rstrip("\\").strip()
        if "<" in line or "..." in line or "|" in line:  # a pattern (--config <config>, fit|test), not a command
            continue
        found.append(shlex.split(line))
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_command_written_parses(page, monkeypatch):
    monkeypatch.chdir(ROOT)  # the commands are written to run from the repository root
    for args in _commands(_text(page)):
        if args[0] == "sweep":
            config = args[args.index("--config") + 1]
            assert (ROOT / config).is_file(), args
            with pytest.raises(SystemExit) as exit_:  # parses the sweep file, runs nothing
                sweep_main([*args[1:], "--print_config"])
            assert exit_.value.code in (0, None), args
        else:
            rest = list(args[1:])
            if "--ckpt_path" in rest:  # a checkpoint of a run the reader made: not the config's business
                del rest[rest.index("--ckpt_path"):rest.index("--ckpt_path") + 2]
            config = parse_config(rest)
            assert config["trainer"] is not None, args


def test_config_comments_point_to_readme_sections_that_exist():
    readme = _text(ROOT / "README.md")
    sections = set(re.findall(r"^#+ (.+)$", readme, re.M)) | set(re.findall(r"^\*\*([^*]+)\.\*\*", readme, re.M))
    for config in sorted((ROOT / "configs").rglob("*.yaml")):
        for name in re.findall(r'README, "([^"]+)"', config.read_text()):
            assert name in sections, f"{config.relative_to(ROOT)} points to README section {name!r}, which does not exist"
