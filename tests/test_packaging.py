"""A built wheel puts only ``gradcalc`` at the top level, with cli/ and grammar/ inside."""

import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis", "*.so"
)


def test_wheel_maps_cli_and_grammar_into_the_package(tmp_path: Path) -> None:
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE)
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(source),
        ],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = (tmp_path / "dist").glob("gradcalc-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names if ".dist-info/" not in name}
    assert top_level == {"gradcalc"}
    for required in (
        "gradcalc/cli/main.py",
        "gradcalc/grammar/gradcalc.lark",
        "gradcalc/grammar/_tables.py",
        "gradcalc/grammar/_standalone.py",
        "gradcalc/autograd/__init__.py",
        "gradcalc/autograd/functional.py",
    ):
        assert required in names
    native = [name for name in names if name.startswith("gradcalc/_native.")]
    headers = Path(sysconfig.get_paths()["include"], "Python.h").is_file()
    if headers and (shutil.which("cc") or shutil.which("gcc")):  # built here, not copied
        assert len(native) == 1 and native[0].endswith(".so"), native
    assert "gradcalc/_native.c" not in names
