"""The documentation cannot go stale silently: every `ovdoc VERB --option` it shows exists, every relative
link in the README resolves, and the MkDocs site builds with warnings as errors."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import click
import pytest
from conftest import REPO, need_package

from ovdoc.cli import COMMANDS, cli

DOC_FILES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SHELL_FENCES = {"", "bash", "sh", "shell", "console"}


def shell_blocks(text: str) -> list[str]:
    """The bodies of the Markdown's shell code blocks (a block of another language is skipped)."""
    blocks, body, language = [], None, ""
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            if body is None:
                language, body = line.lstrip()[3:].strip().lower(), []
            else:
                if language in SHELL_FENCES:
                    blocks.append("\n".join(body))
                body = None
        elif body is not None:
            body.append(line)
    return blocks


def shown_commands(text: str) -> list[str]:
    """`ovdoc ...` command lines inside the code blocks of a Markdown file (continuations joined)."""
    found = []
    for block in shell_blocks(text):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.split(" #")[0].strip()
            for part in re.split(r"&&|\|\||;", line):
                words = part.strip().split()
                for i, word in enumerate(words):
                    if word.endswith("ovdoc") and not word.endswith("/ovdoc") or word.endswith("bin/ovdoc"):
                        found.append(" ".join(words[i:]))
                        break
    return found


def option_names(command: click.Command) -> set[str]:
    names = {"--help", "-h"}
    for param in command.params:
        names.update(param.opts)
        names.update(param.secondary_opts)
    return names


def test_every_documented_command_uses_real_options() -> None:
    stale = []
    checked = 0
    for path in DOC_FILES:
        for line in shown_commands(path.read_text(encoding="utf-8")):
            try:
                words = shlex.split(line)
            except ValueError:
                words = line.split()
            if len(words) < 2 or words[1] not in COMMANDS:
                continue
            command = cli.get_command(click.Context(cli), words[1])
            assert command is not None, f"{path.name}: unknown verb in {line!r}"
            known = option_names(command)
            for word in words[2:]:
                option = word.split("=")[0]
                if option.startswith("--") and option not in known:
                    where = path.relative_to(REPO)
                    stale.append(f"{where}: `{line}` uses {option}, which `ovdoc {words[1]}` lacks")
            checked += 1
    assert checked >= 20, f"only {checked} documented ovdoc commands found: is the parser broken?"
    assert not stale, "\n".join(stale)


def test_a_stale_option_is_caught() -> None:
    """The checker itself: an option that does not exist is reported."""
    text = "```bash\novdoc fit --normal good/ --no-such-option 3 --out x\n```\n"
    (line,) = shown_commands(text)
    command = cli.get_command(click.Context(cli), "fit")
    assert "--no-such-option" not in option_names(command)
    assert "--normal" in option_names(command)
    assert line.startswith("ovdoc fit")


def test_readme_links_resolve() -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text)
    local = [t for t in targets if not re.match(r"[a-z]+://", t)]
    assert local, "the README links to no local page"
    broken = [t for t in local if not (REPO / t).exists()]
    assert not broken, f"README links to missing files: {broken}"


def test_readme_stays_short() -> None:
    """The README is for a newcomer; the reference belongs in docs/."""
    assert len((REPO / "README.md").read_bytes()) < 12_000


@pytest.mark.slow
def test_mkdocs_site_builds_strict(tmp_path: Path) -> None:
    need_package("mkdocs", "the documentation site")
    need_package("mkdocs_click", "the generated CLI reference")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    reference = (tmp_path / "site" / "cli" / "index.html").read_text(encoding="utf-8")
    for verb in ("fit", "run", "eval", "convert"):
        assert f'id="ovdoc-{verb}"' in reference, f"generated CLI reference lacks ovdoc {verb}"
    assert "--normal" in reference
