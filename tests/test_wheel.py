"""The package works installed from a wheel: every config file ships, and the commands that read the
shipped configs (``reproduce``, ``main-job``) find them from any folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE_CONFIGS = REPO / "src" / "implicit_slots" / "configs"

pytestmark = pytest.mark.slow


def _run(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{command} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the built wheel, the folder it is installed into with ``pip install --target``)."""
    root = tmp_path_factory.mktemp("wheel")
    # Build from a copy of the sources, so the build leaves nothing (build/, *.egg-info) in the checkout.
    source = root / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    dist = root / "dist"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    build = ["wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(dist), str(source)]
    _run([*pip, *build], root)
    (wheel,) = dist.glob("implicit_slots-*.whl")
    target = root / "site"
    # The dependencies (torch, ...) come from the running environment; only the package is installed.
    _run([*pip, "install", "--no-deps", "--no-index", "--target", str(target), str(wheel)], root)
    return wheel, target


def _installed_env(target: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(PYTHONPATH=str(target), OMP_NUM_THREADS="1")
    return env


def test_wheel_ships_every_config_file(installed: tuple[Path, Path]) -> None:
    wheel, _ = installed
    with zipfile.ZipFile(wheel) as archive:
        shipped = {name for name in archive.namelist() if name.startswith("implicit_slots/configs/")}
    expected = {
        f"implicit_slots/configs/{path.relative_to(PACKAGE_CONFIGS).as_posix()}"
        for path in PACKAGE_CONFIGS.rglob("*.yaml")
    }
    assert len(expected) > 70  # the main job's configs and both scales of the paper's
    assert shipped == expected


def test_installed_package_is_the_wheel_not_the_checkout(
    installed: tuple[Path, Path], tmp_path: Path
) -> None:
    _, target = installed
    code = "import implicit_slots.config as c; print(c.__file__); print(c.CONFIGS_DIR)"
    lines = _run([sys.executable, "-c", code], tmp_path, _installed_env(target)).stdout.split()
    assert all(Path(line).is_relative_to(target) for line in lines), lines


def test_reproduce_dry_run_works_from_another_folder(installed: tuple[Path, Path], tmp_path: Path) -> None:
    _, target = installed
    command = [str(target / "bin" / "implicit-slots"), "reproduce", "fig8", "--scale", "cpu", "--dry-run"]
    output = _run(command, tmp_path, _installed_env(target)).stdout
    assert "fig8_implicit" in output and "fig8_vanilla" in output, output
    assert str(target) in output, output  # the configs it plans are the installed ones


def test_main_job_help_and_default_config_from_another_folder(
    installed: tuple[Path, Path], tmp_path: Path
) -> None:
    _, target = installed
    executable = str(target / "bin" / "implicit-slots")
    help_text = _run([executable, "main-job", "--help"], tmp_path, _installed_env(target)).stdout
    assert "--config" in help_text
    # The default config is found in the installed package: the command gets as far as applying the
    # overrides to it, and a bad one stops it there, before any training.
    result = subprocess.run(
        [executable, "main-job", "--run-dir", str(tmp_path / "run"), "training.max_step=1"],
        cwd=tmp_path,
        env=_installed_env(target),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    assert "does not exist" not in result.stderr, result.stderr
    assert "key 'training.max_step'" in result.stderr, result.stderr
    assert not (tmp_path / "run").exists()
