"""The exercise as handed out (the reference) and a submission as the grader runs it.

The reference declares its TODOs by cell tags: each TODO is a code cell tagged `todo-<k>`, its
self-check the code cell tagged `check-<k>` (`make exercise` writes both), worth the `points` in that
check cell's metadata (1 when missing). The self-checks call a lab module that the notebook imports
(`import labkit.tuning_checks as check`): which one, and under which names, is read from the
reference's imports, and its code is snapshotted when the grader starts.

A submission is run as its code cells in its own order, with:
- each self-check replaced by the reference's, run where the student's copy of it is (after its TODO
  cell), or right after the TODO cell when the student deleted or moved it above;
- right before each self-check, the check module re-created from the snapshot, so that a TODO cell
  that redefines `check.*`, or edits the module on disk, changes nothing;
- cells tagged `not-graded`, and every cell after the last self-check, left out.
"""

import ast
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

TODO_TAG, CHECK_TAG = re.compile(r"todo-(\d+)"), re.compile(r"check-(\d+)")
NOT_GRADED = "not-graded"
HINT = re.compile(r"#\s*TODO:\s*(.+)")
STUB = re.compile(r"NotImplementedError\(\s*(['\"])(.+?)\1\s*\)")


class NotANotebook(ValueError):
    """A submission that cannot be read as a notebook."""


@dataclass
class Cell:
    source: str
    tags: list[str] = field(default_factory=list)
    metadata: dict = field(default_factory=dict)

    def number(self, pattern: re.Pattern) -> int | None:
        """k of this cell's todo-<k> (or check-<k>) tag, if any."""
        return next((int(m[1]) for tag in self.tags if (m := pattern.fullmatch(tag))), None)


def read_code_cells(path: Path) -> list[Cell]:
    """A notebook's code cells, leniently: a file that is JSON with a list of cells is read even when it
    fails nbformat's schema (a missing field, an odd type), older formats converted first."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8-sig", errors="replace"))
    except (OSError, ValueError) as error:
        raise NotANotebook(f"not JSON ({str(error).splitlines()[0][:100]})") from None
    if isinstance(data, dict) and "worksheets" in data:  # nbformat 3
        data = nbformat.convert(nbformat.from_dict(data), 4)
    if not isinstance(data, dict) or not isinstance(data.get("cells"), list):
        raise NotANotebook("no list of cells")
    cells = []
    for raw in data["cells"]:
        if not isinstance(raw, dict) or raw.get("cell_type") != "code":
            continue
        source = raw.get("source", "")
        source = "".join(map(str, source)) if isinstance(source, list) else str(source)
        metadata = raw.get("metadata") if isinstance(raw.get("metadata"), dict) else {}
        tags = metadata.get("tags") if isinstance(metadata.get("tags"), list) else []
        cells.append(Cell(source, [str(tag) for tag in tags], metadata))
    return cells


@dataclass
class LabCode:
    """The lab packages a notebook imports, as files (path -> bytes) read once."""

    files: dict[str, bytes]

    @classmethod
    def snapshot(cls, root: Path, packages: set[str]) -> "LabCode":
        files = {}
        for name in sorted(packages):
            if (root / name).is_dir():
                for path in sorted((root / name).rglob("*")):
                    if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                        files[str(path.relative_to(root))] = path.read_bytes()
            else:
                files[f"{name}.py"] = (root / f"{name}.py").read_bytes()
        return cls(files)

    def write(self, folder: Path) -> None:
        """A copy in folder, read-only (files 0444, folders 0555) once written."""
        for relative, content in self.files.items():
            path = folder / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
            path.chmod(0o444)
        for path in sorted(folder.rglob("*"), reverse=True):
            if path.is_dir():
                path.chmod(0o555)
        folder.mkdir(exist_ok=True)
        folder.chmod(0o555)

    def module_file(self, module: str) -> str | None:
        base = module.replace(".", "/")
        return next((f for f in (f"{base}.py", f"{base}/__init__.py") if f in self.files), None)


@dataclass
class Todo:
    number: int
    points: int
    hint: str
    check: str  # the reference's self-check code

    @property
    def name(self) -> str:
        return f"todo-{self.number}"


@dataclass
class Step:
    """A piece of code the grader runs: a cell of the submission, or a reference self-check."""

    source: str
    kind: str = "cell"  # "cell", "todo" (a cell tagged todo-<k>) or "check"
    todo: int | None = None


# Run right before each self-check: the check modules made anew from the snapshot, bound again to the
# names the self-checks use. Nothing of the submission's (its modules, files or names) is used.
RELOAD = """\
def _grader_reload(modules, bindings):
    import importlib, importlib.util, linecache, os, sys
    for name, file, source in modules:
        parent, _, leaf = name.rpartition(".")
        if parent and parent not in sys.modules:
            importlib.import_module(parent)
        package = [os.path.dirname(file)] if file.endswith("__init__.py") else None
        spec = importlib.util.spec_from_file_location(name, file, submodule_search_locations=package)
        module = importlib.util.module_from_spec(spec)
        linecache.cache[file] = (len(source), None, source.splitlines(True), file)
        sys.modules[name] = module
        exec(compile(source, file, "exec"), module.__dict__)
        if parent:
            setattr(sys.modules[parent], leaf, module)
    bound = {}
    for alias, (name, attribute) in bindings.items():
        bound[alias] = getattr(sys.modules[name], attribute) if attribute else sys.modules[name]
    return bound


globals().update(_grader_reload(%r, %r))
del _grader_reload
"""


class Exercise:
    """The reference: its TODOs, what its self-checks import from the lab, the lab code's snapshot."""

    def __init__(self, path: Path, lab_root: Path):
        self.path = Path(path)
        cells = read_code_cells(self.path)
        checks = {number: cell for cell in cells if (number := cell.number(CHECK_TAG)) is not None}
        todos = {number: cell for cell in cells if (number := cell.number(TODO_TAG)) is not None}
        self.todos = [self._todo(k, todos[k], checks.get(k)) for k in sorted(todos)]
        self.lab_root = Path(lab_root)
        imports = {alias: target for cell in cells for alias, target in imports_in(cell.source).items()}
        self.uses_mlflow = any(module.split(".")[0] == "mlflow" for module, _ in imports.values())
        lab_imports = {alias: target for alias, target in imports.items() if self._is_lab(target[0])}
        self.lab = LabCode.snapshot(
            self.lab_root, {target[0].split(".")[0] for target in lab_imports.values()}
        )
        used = {name for k in checks for name in names_used(checks[k].source)}
        self.bindings = {}  # a name the self-checks use -> (module, attribute or None)
        modules = set()  # the modules behind those names, made anew before each self-check
        for alias, (module, attribute) in lab_imports.items():
            if alias not in used:
                continue
            if attribute and self.lab.module_file(f"{module}.{attribute}"):  # from package import module
                module, attribute = f"{module}.{attribute}", None
            self.bindings[alias] = (
                module.split(".")[0] if alias == module.split(".")[0] else module,
                attribute,
            )
            modules.add(module)
        self.check_modules = sorted(m for m in modules if self.lab.module_file(m))

    def _todo(self, k: int, todo: Cell, check: Cell | None) -> Todo:
        if check is None:
            raise ValueError(f"{self.path.name}: todo-{k} has no cell tagged check-{k}")
        hint = HINT.search(todo.source) or STUB.search(todo.source)
        points = int(check.metadata.get("points", 1))
        return Todo(k, points, (hint[hint.lastindex] if hint else "").strip(), check.source)

    def _is_lab(self, module: str) -> bool:
        top = module.split(".")[0]
        return (self.lab_root / top / "__init__.py").is_file() or (self.lab_root / f"{top}.py").is_file()

    @property
    def max_points(self) -> int:
        return sum(todo.points for todo in self.todos)

    def reload_code(self, lab_folder: Path) -> str:
        """The code run before each self-check (empty when the checks use no lab module)."""
        if not self.check_modules:
            return ""
        modules = []
        for module in self.check_modules:
            file = self.lab.module_file(module)
            modules.append((module, str(lab_folder / file), self.lab.files[file].decode()))
        bindings = {alias: list(target) for alias, target in self.bindings.items()}
        return RELOAD % (modules, bindings)

    def plan(self, cells: list[Cell]) -> tuple[list[Step], dict[int, str]]:
        """What to run for a submission, in order, and per TODO what is wrong with its cells."""
        numbers = {todo.number: todo for todo in self.todos}
        placed, problems = {}, {}  # k -> (cell index, "at" or "after")
        for k in numbers:
            todo_cells = [i for i, cell in enumerate(cells) if cell.number(TODO_TAG) == k]
            if not todo_cells:
                problems[k] = f"the TODO cell (tag todo-{k}) was deleted"
                continue
            later = [i for i, cell in enumerate(cells) if cell.number(CHECK_TAG) == k and i > todo_cells[-1]]
            placed[k] = (later[0], "at") if later else (todo_cells[-1], "after")
        steps = []
        for i, cell in enumerate(cells):
            check, todo = cell.number(CHECK_TAG), cell.number(TODO_TAG)
            if check in numbers:
                if placed.get(check) == (i, "at"):
                    steps.append(Step(numbers[check].check, "check", check))
                continue  # a copy elsewhere, or the student's own version: the reference's runs instead
            if todo in numbers:
                steps.append(Step(cell.source, "todo", todo))
            elif NOT_GRADED not in cell.tags:
                steps.append(Step(cell.source))
            steps += [
                Step(numbers[k].check, "check", k) for k, spot in placed.items() if spot == (i, "after")
            ]
        last_check = max((i for i, step in enumerate(steps) if step.kind == "check"), default=-1)
        return steps[: last_check + 1], problems


def imports_in(source: str) -> dict[str, tuple[str, str | None]]:
    """The names a cell's imports bind: name -> (module, attribute or None)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:  # IPython magics: such a cell imports nothing the grader needs to know of
        return {}
    bound = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:  # `import a.b` binds a, and loads a.b
                bound[alias.asname or alias.name.split(".")[0]] = (alias.name, None)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                bound[alias.asname or alias.name] = (node.module, alias.name)
    return bound


def names_used(source: str) -> set[str]:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    return {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
