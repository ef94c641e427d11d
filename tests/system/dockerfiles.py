"""The Dockerfile read as BuildKit reads it (a port of BuildKit's parser) and the build context as
`.dockerignore` filters it (a port of moby's pattern matcher), from e2b-dockerfile-utils, for the
container tests."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from e2b_dockerfile_utils import DockerfileInstruction, PatternMatcher, ShellLex, parse_dockerfile_ast

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO_ROOT / "Dockerfile"
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
# The image built for real: the CPU variant, its default (runtime) target.
BUILD_ARGS = {"VARIANT": "cpu"}
TARGET = "runtime"


# ---- the Dockerfile, read as BuildKit reads it ---------------------------------------------------------


@dataclass
class Stage:
    """One `FROM ... AS name` and the instructions under it."""

    name: str
    base: str
    instructions: list[DockerfileInstruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[DockerfileInstruction]:
        return [i for i in self.instructions if i.name == keyword]


@dataclass
class Dockerfile:
    stages: dict[str, Stage]
    escape_token: str

    def chain(self, target: str) -> list[Stage]:
        """The stages `target` is built on, the first one FROM an image, `target` last."""
        chain = [self.stages[target]]
        while chain[0].base in self.stages:
            chain.insert(0, self.stages[chain[0].base])
        return chain

    def images(self) -> list[str]:
        """Every image pulled FROM (not our own stages)."""
        return [s.base for s in self.stages.values() if s.base not in self.stages]


def read_dockerfile(build_args: dict[str, str]) -> Dockerfile:
    ast = parse_dockerfile_ast(DOCKERFILE.read_text())
    meta_args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for instruction in ast.instructions:
        if instruction.name == "ARG" and current is None:
            for declaration in instruction.args:
                name, _, default = declaration.partition("=")
                meta_args[name] = build_args.get(name, default)
        elif instruction.name == "FROM":
            lexer = ShellLex(ast.escape_token, env=meta_args)
            words = [lexer.process_word(word) for word in instruction.args]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else f"stage-{len(stages)}"
            current = stages[name] = Stage(name=name, base=words[0])
        elif current is not None:
            current.instructions.append(instruction)
    return Dockerfile(stages=stages, escape_token=ast.escape_token)


# ---- the build context, filtered as .dockerignore filters it -------------------------------------------


def context_files(root: Path, matcher: PatternMatcher) -> Iterator[Path]:
    """The files and symlinks Docker would send, relative to `root`."""
    for directory, dirnames, filenames in os.walk(root):
        relative_dir = Path(directory).relative_to(root)
        kept = []
        for name in dirnames:
            path = (relative_dir / name).as_posix()
            if not matcher.matches(path) or matcher.may_match_under(path):
                kept.append(name)
        dirnames[:] = kept
        for name in filenames:
            relative = relative_dir / name
            if not matcher.matches(relative.as_posix()):
                yield relative


def copy_context(destination: Path) -> Path:
    """The build context Docker would send, copied into `destination`."""
    matcher = PatternMatcher((REPO_ROOT / ".dockerignore").read_text().splitlines())
    for relative in context_files(REPO_ROOT, matcher):
        target = destination / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / relative, target, follow_symlinks=False)
    return destination
