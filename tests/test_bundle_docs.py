"""The bundle READMEs' commands run as written: each names the Python to use once at the top; every
``python -m monai.bundle run`` / ``torchrun`` line names config files that exist and overrides keys the
merged config has; the short ones (``verify_metadata``, ``verify_net_in_out``) are run verbatim with the
environment's Python. (The ``torchrun`` evaluation lines' case counts are checked in ``test_bundle.py``.)"""

from __future__ import annotations

import ast
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BUNDLES = [REPO / "bundles" / "m2f_ct_organs", REPO / "bundles" / "m2f_ct_lesions"]
# options of `monai.bundle run` itself, not config keys
RUN_OPTIONS = {"config_file", "bundle_root", "meta_file", "logging_file", "args_file", "run_id", "init_id",
               "final_id", "tracking"}


def _commands(readme: Path) -> list[str]:
    """Shell commands of the README's ```bash blocks: continued lines joined, ``NAME="..."`` assignments
    of the block substituted, comments dropped."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", readme.read_text(), flags=re.S):
        env: dict[str, str] = {}
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].split(" # ")[0].strip()
            if not line or line.startswith("#"):
                continue
            m = re.fullmatch(r'([A-Z_]+)="(.*)"', line)
            if m:
                env[m.group(1)] = m.group(2)
                continue
            for name, value in env.items():
                line = line.replace(f"${name}", value)
            out.append(line)
    return out


def _bundle_runs(commands: list[str]) -> list[list[str]]:
    runs = []
    for c in commands:
        c = re.sub(r"^(CUDA_VISIBLE_DEVICES=\S*\s+)", "", c)
        if re.match(r"^(python -m monai\.bundle run|torchrun .*-m monai\.bundle run)\b", c):
            runs.append(shlex.split(c))
    return runs


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda b: b.name)
def test_readme_says_which_python_once_at_the_top(bundle):
    text = (bundle / "docs" / "README.md").read_text()
    head = text[: text.index("\n## ")]
    assert "**Which python.**" in head and ".venv/bin/activate" in head and "../../.venv/bin/python" in head
    assert text.count("**Which python.**") == 1


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda b: b.name)
def test_readme_bundle_runs_name_existing_configs_and_keys(bundle):
    from monai.bundle import ConfigParser

    runs = _bundle_runs(_commands(bundle / "docs" / "README.md"))
    assert len(runs) >= 2
    for argv in runs:
        args = argv[argv.index("run") + 1:]
        if args and not args[0].startswith("--"):
            args = args[1:]  # `run export ...`: the runner id
        opts: dict[str, str] = {}
        i = 0
        while i < len(args):
            assert args[i].startswith("--"), (argv, args[i])
            key = args[i][2:]
            value = args[i + 1] if i + 1 < len(args) and not args[i + 1].startswith("--") else "True"
            opts[key] = value
            i += 2 if value is not None and i + 1 < len(args) and not args[i + 1].startswith("--") else 1
        files = opts["config_file"]
        files = ast.literal_eval(files) if files.startswith("[") else [files]
        for f in files:
            assert (bundle / f).is_file(), (" ".join(argv), f)
        parser = ConfigParser()
        parser.read_config([str(bundle / f) for f in files])
        for key in opts:
            if key in RUN_OPTIONS:
                continue
            assert key in parser, (" ".join(argv), key)


def _short(bundle: Path) -> list[str]:
    return [c for c in _commands(bundle / "docs" / "README.md")
            if c.startswith("python -m monai.bundle verify_")]


def test_short_readme_commands_run_as_written():
    """``verify_metadata`` (offline, against the schema copy it names) and ``verify_net_in_out``, verbatim,
    from the bundle folder, with ``python`` being this environment's (as the README's activate gives)."""
    bundle = BUNDLES[0]
    commands = _short(bundle)
    assert any("verify_metadata" in c for c in commands) and any("verify_net_in_out" in c for c in commands)
    schema = re.search(r"--filepath (\S+)", next(c for c in commands if "verify_metadata" in c)).group(1)
    if not (bundle / schema).is_file():
        msg = f"the MONAI metadata schema copy {schema} is not beside the checkout (no download in tests)"
        if os.environ.get("CI"):  # CI has shared/ beside the clone: a missing copy is a failure there
            pytest.fail(msg)
        pytest.skip(msg)
    bindir = Path(sys.executable).parent  # first on PATH, as `source .venv/bin/activate` puts it
    assert (bindir / "python").exists()
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    for command in commands:
        done = subprocess.run(["bash", "-c", command], cwd=bundle, env=env, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, (command, done.stderr[-2000:])
